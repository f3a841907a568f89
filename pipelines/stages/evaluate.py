"""The evaluation stage: per-video scores of one checkpoint under a named test protocol, cached to a score file.

``mars`` (the default) is the MARS protocol: every non-overlapping clip of the model's ``sample_duration`` frames,
laid on the flow-frame grid so RGB, Flow and MARS scores of a video cover the same frames, centre crop, raw logits
averaged over the clips. ``views:KxM`` takes K clips spread evenly over the video and M spatial crops instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from flow.errors import InputError
from flow.progress import progress_bar
from pipelines.core import checkpoint as ckpt
from pipelines.core.config import check_at_least, check_choices, config_to_dict
from pipelines.data.dataset import StageData, open_stage_data
from pipelines.core.device import check_amp, resolve_device
from pipelines.core.distributed import DistContext, gather_objects, init_distributed, rank_device
from pipelines.core.manifest import config_hash, library_versions
from pipelines.scoring.metrics import summarize
from pipelines.data.clips import VideoClips
from pipelines.inference.engine import Engine
from pipelines.scoring.scores import save_scores

@dataclass
class EvaluateConfig:
    """Options of ``mars-sta evaluate``; checked when made, so the stage trusts them."""

    split: int = 1
    subset: Literal["test", "val", "train"] = "test"  # val: the training run's validation subset
    protocol: str = "mars"  # mars | views:KxM
    batch_size: int = 32  # clips per forward pass (keep small on small GPUs; independent of training)
    features: bool = False  # also store the pooled features that feed fc
    device: str = "auto"
    amp: Literal["off", "fp16", "bf16"] = "off"

    def __post_init__(self) -> None:
        check_choices(self)
        parse_protocol(self.protocol)
        check_at_least(batch_size=(self.batch_size, 1), split=(self.split, 1))


def parse_protocol(protocol: str) -> tuple[str, int | None, int]:
    """``mars`` -> ("mars", None, 1); ``views:10x3`` -> ("views", 10, 3): the clips and crops per video."""
    if protocol == "mars":
        return "mars", None, 1
    if protocol.startswith("views:"):
        try:
            clips, crops = (int(v) for v in protocol[len("views:"):].lower().split("x"))
        except ValueError:
            clips = crops = 0
        if clips >= 1 and crops in (1, 3):
            return "views", clips, crops
    raise InputError(None, f"--protocol {protocol!r}: expected 'mars' or 'views:KxM' (K clips >= 1, M crops 1 or 3)")


def evaluate(
    config: EvaluateConfig,
    checkpoint: Path,
    store: Path,
    out: Path,
    splits: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score every video of the chosen subset and write the score file ``out``; returns the accuracy summary.

    Under torchrun each rank scores every world_size-th video and rank 0 gathers and writes them in split order
    (an empty dict is returned on the other ranks).

    Args:
        config: the validated options (subset, protocol, batch size, device, amp).
        checkpoint: a checkpoint written by ``train``; its classes must be the split's.
        store: the flow store, extracted with the checkpoint's preprocessing.
        out: the score file to write (``.npz``).
        splits: split files; by default the ``splits/`` folder beside the store's videos.
        progress: show a progress bar.
        log: receives the one-line summary.
    """
    loaded = ckpt.load_checkpoint(checkpoint)
    data, items = _checked_inputs(config, loaded, store, out, splits)
    device = resolve_device(config.device)
    context = init_distributed(device)
    device = rank_device(device, context)
    engine = Engine(loaded, device, config.batch_size, check_amp(config.amp, device))
    _, clips, crops = parse_protocol(config.protocol)
    logits, features = _score_videos(engine, engine.video_clips(data.store, items, clips, crops), context,
                                     progress and context.is_main)
    if not context.is_main:
        return {}
    protocol = f"{config.protocol}:{loaded.sample_duration}f"
    labels = np.array([label for _, label in items], dtype=np.int64)
    save_scores(out, video_ids=[vid for vid, _ in items], labels=labels, logits=logits,
                features=features if config.features else None, classes=data.classes, split=config.split,
                subset=config.subset, stream=loaded.stream, protocol=protocol)
    summary = summarize(logits, labels)
    summary.update(stream=loaded.stream, split=config.split, subset=config.subset, protocol=protocol,
                   videos=len(items), scores=str(out), checkpoint=str(checkpoint),
                   config=config_to_dict(config), config_key=config_hash(config_to_dict(config)),
                   versions=library_versions())
    if log:
        log(f"{summary['stream']} split {config.split} {config.subset}: top-1 {summary['top1']:.1f}%  "
            f"top-5 {summary['top5']:.1f}%  mean class {summary['mean_class']:.1f}%  ({len(items)} videos)")
    return summary


def _checked_inputs(config: EvaluateConfig, loaded: ckpt.Checkpoint, store: Path, out: Path,
                    splits: Path | None) -> tuple[StageData, list[tuple[str, int]]]:
    """The split and the videos to score, once the checkpoint, the store and ``out`` are known to fit."""
    train_config = loaded.train_config
    data = open_stage_data(store, splits, config.split, train_config.get("val_fraction", 0.1),
                           train_config.get("seed", 1))
    if loaded.classes != data.classes:
        raise InputError(loaded.path, f"was trained on {len(loaded.classes)} classes, the split has "
                                      f"{len(data.classes)} (or other names): scores would be meaningless")
    loaded.check_input(loaded.reading(data.store.preprocessing), store)
    if Path(out).parent.is_file():  # an unusable --out fails now, not after scoring
        raise InputError(out, f"cannot be written: {Path(out).parent} is a file, not a folder")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    items = {"test": data.test, "val": data.val, "train": data.train}[config.subset]
    if not items:
        raise InputError(None, f"subset {config.subset!r} of split {config.split} is empty")
    return data, items


def _score_videos(engine: Engine, videos: VideoClips, context: DistContext, progress: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Logits (videos, classes) and features (videos, D) of every video in order; each rank scores every
    world_size-th video and rank 0 gathers them (the other ranks get empty arrays)."""
    mine = range(context.rank, len(videos), context.world_size)  # every video exactly once over the ranks
    scored: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for index in progress_bar(mine, desc=f"evaluate {engine.checkpoint.stream}", unit="video", disable=not progress,
                              leave=False):
        scored[index] = engine.video_scores(videos[index][0])
    for part in gather_objects(scored, context):
        scored.update(part)
    if not context.is_main:
        return np.empty(0), np.empty(0)
    ordered = [scored[i] for i in range(len(videos))]
    return (torch.stack([logit for logit, _ in ordered]).numpy().astype(np.float32),
            torch.stack([feature for _, feature in ordered]).numpy())
