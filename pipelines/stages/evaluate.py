"""The evaluation stage: per-video scores of one checkpoint under a named test protocol, cached to a score file.

``mars`` (the default) is the MARS protocol: every non-overlapping clip of the model's ``sample_duration`` frames,
laid on the flow-frame grid so RGB, Flow and MARS scores of a video cover the same frames, centre crop, raw logits
averaged over the clips. ``views:KxM`` takes K clips spread evenly over the video and M spatial crops instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flow.errors import InputError
from flow.progress import progress_bar
from pipelines.core import checkpoint as ckpt
from pipelines.core.config import config_to_dict
from pipelines.data.dataset import open_stage_data
from pipelines.core.device import autocast, check_amp, resolve_device
from pipelines.core.distributed import gather_objects, init_distributed, rank_device
from pipelines.core.manifest import config_hash, library_versions
from pipelines.scoring.metrics import summarize
from pipelines.scoring.scores import save_scores

SUBSETS = ("test", "val", "train")


@dataclass
class EvaluateConfig:
    """Options of ``mars-sta evaluate``."""

    split: int = 1
    subset: str = "test"  # test | val (the training run's validation subset) | train
    protocol: str = "mars"  # mars | views:KxM
    batch_size: int = 32  # clips per forward pass (keep small on small GPUs; independent of training)
    features: bool = False  # also store the pooled features that feed fc
    device: str = "auto"
    amp: str = "off"


def parse_protocol(protocol: str) -> tuple[str, int, int]:
    """``mars`` -> ("mars", 0, 1); ``views:10x3`` -> ("views", 10, 3)."""
    if protocol == "mars":
        return "mars", 0, 1
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
    """
    if config.subset not in SUBSETS:
        raise InputError(None, f"--subset {config.subset!r}: expected one of {', '.join(SUBSETS)}")
    kind, n_clips, n_crops = parse_protocol(config.protocol)
    model, payload = ckpt.model_from_checkpoint(checkpoint)
    kwargs = payload["model_kwargs"]
    train_config = payload.get("train_config", {})
    data = open_stage_data(store, splits, config.split, train_config.get("val_fraction", 0.1),
                           train_config.get("seed", 1))
    if list(payload.get("classes", [])) != data.classes:
        raise InputError(checkpoint, f"was trained on {len(payload.get('classes', []))} classes, the split has "
                                     f"{len(data.classes)} (or other names): scores would be meaningless")
    if payload.get("preprocessing_hash") not in (None, data.preprocessing_hash):
        raise InputError(store, "was extracted with other preprocessing than the checkpoint was trained on")
    if Path(out).parent.is_file():  # an unusable --out fails now, not after scoring
        raise InputError(out, f"cannot be written: {Path(out).parent} is a file, not a folder")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    items = {"test": data.test, "val": data.val, "train": data.train}[config.subset]
    if not items:
        raise InputError(None, f"subset {config.subset!r} of split {config.split} is empty")

    device = resolve_device(config.device)
    context = init_distributed(device)
    device = rank_device(device, context)
    amp = check_amp(config.amp, device)
    model.to(device)
    mode = "flow" if kwargs.get("in_channels") == 2 else "rgb"
    videos = data.video_dataset(items, mode, kwargs["sample_duration"], kwargs["sample_size"],
                                train_config.get("normalization", "mars"),
                                clips=n_clips if kind == "views" else None, crops=n_crops)
    mine = range(context.rank, len(videos), context.world_size)  # every video exactly once over the ranks
    scored: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    iterator = progress_bar(mine, desc=f"evaluate {payload.get('stream', '')}", unit="video",
                    disable=not progress or not context.is_main, leave=False)
    with torch.no_grad():
        for index in iterator:
            clips, _ = videos[index]
            video_logits, video_features = [], []
            for chunk in torch.split(clips, config.batch_size):
                with autocast(device, amp):
                    feats = model.forward_features(chunk.to(device))
                    video_logits.append(model.forward_head(feats).float().cpu())
                video_features.append(feats.float().cpu())
            scored[index] = (torch.cat(video_logits).mean(0),
                             torch.cat(video_features).mean(0) if config.features else None)
    for part in gather_objects(scored, context):
        scored.update(part)
    if not context.is_main:
        return {}
    ordered = [scored[i] for i in range(len(videos))]
    logits = torch.stack([logit for logit, _ in ordered]).numpy().astype(np.float32)
    labels = np.array([label for _, label in items], dtype=np.int64)
    protocol = f"{config.protocol}:{kwargs['sample_duration']}f"
    save_scores(out, video_ids=[vid for vid, _ in items], labels=labels, logits=logits,
                features=torch.stack([f for _, f in ordered]).numpy() if config.features else None,
                classes=data.classes, split=config.split, subset=config.subset,
                stream=payload.get("stream", "unknown"), protocol=protocol)
    summary = summarize(logits, labels)
    summary.update(stream=payload.get("stream"), split=config.split, subset=config.subset, protocol=protocol,
                   videos=len(items), scores=str(out), checkpoint=str(checkpoint),
                   config=config_to_dict(config), config_key=config_hash(config_to_dict(config)),
                   versions=library_versions())
    if log:
        log(f"{summary['stream']} split {config.split} {config.subset}: top-1 {summary['top1']:.1f}%  "
            f"top-5 {summary['top5']:.1f}%  mean class {summary['mean_class']:.1f}%  ({len(items)} videos)")
    return summary
