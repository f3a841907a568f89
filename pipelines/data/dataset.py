"""What a stage needs to know about its data: the store, the split, the validation subset and the clip datasets.

Splits come from ``--splits`` or, when omitted, from the ``splits/`` folder beside the videos folder the store
was extracted from (the layout ``mars-sta synth`` writes). Every video of the split must be in the store.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from flow.errors import InputError
from flow.store import FlowStore
from pipelines.core.manifest import config_hash
from pipelines.data.clips import SCALES, ClipDataset, Normalization, VideoClips
from pipelines.data.frame_cache import FrameCache
from pipelines.data.splits import hold_out_validation, load_split
from pipelines.data.synth import mirror_maps

Items = list[tuple[str, int]]


@dataclass
class StageData:
    """A store opened against one split, with the seeded validation subset already held out."""

    store: FlowStore
    classes: list[str]
    train: Items
    val: Items
    test: Items
    splits_path: Path
    preprocessing_hash: str
    val_method: str = "none"  # how the validation part was held out (splits.ValidationSplit.method)
    hflip_map: dict[int, int] | None = None
    vflip_map: dict[int, int] | None = None

    def normalization(self, name: str) -> Normalization:
        try:
            return Normalization.named(name, self.store.bound)
        except ValueError as exc:
            raise InputError(None, str(exc)) from None

    def clip_dataset(self, items: Items, mode: str, train: bool, config: Any,
                     cache: FrameCache | None = None) -> ClipDataset:
        """One clip per video: random and augmented for training, the centred clip for validation; frames go
        through ``cache`` (one per process, shared by its datasets) when given."""
        mirrors = config.label_aware_flips and self.hflip_map is not None
        return ClipDataset(self.store, items, mode, sample_duration=config.frames, sample_size=config.size,
                           train=train, normalization=self.normalization(config.normalization), flip=config.flip,
                           hflip_map=self.hflip_map if mirrors else None,
                           vflip_map=self.vflip_map if mirrors else None, seed=config.seed,
                           scales=tuple(config.crop_scales) if config.crop_scales else SCALES,
                           cache=cache)

    def video_dataset(self, items: Items, mode: str, sample_duration: int, sample_size: int,
                      normalization: str = "mars", clips: int | None = None, crops: int = 1) -> VideoClips:
        """All test clips of each video (the MARS protocol), or ``clips`` × ``crops`` views."""
        return VideoClips(self.store, items, mode, sample_duration, sample_size, self.normalization(normalization),
                          clips=clips, crops=crops)


def default_splits(store: FlowStore) -> Path:
    return store.source_root.parent / "splits"


def open_stage_data(store_path: Path, splits: Path | None, split: int, val_fraction: float, seed: int) -> StageData:
    """Open the store and the split; refuse a split whose videos are not all in the store."""
    store = FlowStore(store_path)
    if splits is None:
        splits = default_splits(store)
        if not splits.exists():
            raise InputError(splits, "no --splits given and no splits/ folder beside the store's videos folder "
                                     f"({store.source_root})")
    chosen = load_split(splits, split)
    present = set(store.video_ids())
    missing = [vid for vid, _ in chosen.train + chosen.test if vid not in present]
    if missing:
        raise InputError(store_path, f"{len(missing)} video(s) of split {split} are not in the store, e.g. "
                                     f"'{missing[0]}' (extract them, or check --splits)")
    held_out = hold_out_validation(chosen.train, val_fraction, seed)
    hflip, vflip = _mirror_maps(store, chosen.classes)
    return StageData(store=store, classes=list(chosen.classes), train=held_out.train, val=held_out.val,
                     test=list(chosen.test), val_method=held_out.method,
                     splits_path=Path(splits), preprocessing_hash=config_hash(store.preprocessing),
                     hflip_map=hflip, vflip_map=vflip)


def _mirror_maps(store: FlowStore, classes: Sequence[str]) -> tuple[dict[int, int] | None, dict[int, int] | None]:
    """Label maps for mirror flips, known only for the synthetic dataset (its ``synth.json``)."""
    info_path = store.source_root.parent / "synth.json"
    if not info_path.exists():
        return None, None
    info = json.loads(info_path.read_text())
    if not {"hflip", "vflip"} <= set(info):
        return None, None
    images = {info[key].get(name, name) for key in ("hflip", "vflip") for name in classes}
    if not images <= set(classes):  # a mirror would turn a clip into a class this split does not have
        return None, None
    return mirror_maps(list(classes), info)
