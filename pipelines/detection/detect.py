"""S-CNN's test: windows -> proposal filter -> localization scores -> per-class NMS -> ActivityNet results JSON."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow.atomic import atomic_output, write_json_atomic
from flow.errors import InputError
from flow.progress import progress_bar
from flow.store import FlowStore
from pipelines.core.checkpoint import load_checkpoint
from pipelines.core.config import check_at_least, config_to_dict
from pipelines.core.stream_specs import stream_spec
from pipelines.data.annotations import fps_of
from pipelines.detection.clips import WindowClips
from pipelines.detection.scnn import detector_config_of
from pipelines.detection.windows import (check_parent_classes, check_parent_classes_known, clip_indices,
                                        sliding_windows, temporal_nms, with_parent_classes)
from pipelines.core.device import resolve_device
from pipelines.core.manifest import stage_manifest


@dataclass(frozen=True)
class DetectConfig:
    """Settings of ``detect`` (TOML table ``[detection.detect]``)."""

    proposal_threshold: float = 0.5  # windows the proposal network calls action with at least this probability
    nms_threshold: float = 0.4  # per-class NMS; S-CNN uses 0.1 below the evaluation tIoU
    batch_size: int = 64
    device: str = "auto"
    parent_classes: dict[str, str] = field(default_factory=dict)  # each detection of a key class also as its value

    def __post_init__(self) -> None:
        if not 0 <= self.proposal_threshold <= 1 or not 0 <= self.nms_threshold <= 1:
            raise InputError(None, "proposal_threshold and nms_threshold must be in [0, 1]")
        check_at_least(batch_size=(self.batch_size, 1))
        check_parent_classes(self.parent_classes)


def detect(model_dir: Path, store_path: Path, videos: list[str], out: Path, config: DetectConfig = DetectConfig(),
           log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Detect actions in ``videos`` with the detector in ``model_dir``; writes ``out`` (ActivityNet results).

    Args:
        model_dir: folder with ``proposal.pth`` and ``localization.pth`` from ``train-detector``.
        store_path: flow store holding the videos.
        videos: store ids to detect in.
        out: results JSON to write.
        config: thresholds and batch size.
        log: where the summary line goes.
        progress: show a progress bar.
    """
    device = resolve_device(config.device)
    proposal_checkpoint = load_checkpoint(model_dir / "proposal.pth")
    localization_checkpoint = load_checkpoint(model_dir / "localization.pth")
    proposal, localization = proposal_checkpoint.build_model(), localization_checkpoint.build_model()
    trained = detector_config_of(localization_checkpoint)
    store = FlowStore(store_path)
    missing = [v for v in videos if v not in store]
    if missing:
        raise InputError(store_path, f"{len(missing)} video(s) to detect in are not in the store, e.g. {missing[0]!r}")
    for video in videos:  # each file opens and is whole before the first is scored
        store.num_frames(video)
    reading = localization_checkpoint.reading(store.preprocessing)
    for loaded in (proposal_checkpoint, localization_checkpoint):  # both networks read the same window clips
        loaded.check_input(replace(reading, stream=loaded.stream), store_path)
    clips = WindowClips(store, stream_spec(trained.stream).test_clips, reading.frames, reading.size,
                        reading.normalization)
    classes = localization_checkpoint.classes
    check_parent_classes_known(config.parent_classes, classes, localization_checkpoint.path)
    started = time.perf_counter()
    results, timelines = {}, {}
    for video in progress_bar(videos, disable=not progress, desc="detect", unit="video", leave=False):
        timelines[video] = TemporalWeights(store.num_frames(video) - 1)
        results[video] = with_parent_classes(_detect_video(
            video, store, clips, proposal.to(device), localization.to(device), classes, trained, config, device,
            timelines[video]), config.parent_classes)
    if trained.sta:  # STA's temporal weights along each video, for the report's timelines
        with atomic_output(out.with_name("sta_timelines.npz")) as handle:
            np.savez_compressed(handle, **{v: t.values() for v, t in timelines.items()})
    manifest = stage_manifest("detect", config_to_dict(config), {"model_proposal": model_dir / "proposal.pth",
                                                                 "model_localization": model_dir / "localization.pth",
                                                                 "store": store_path})
    write_json_atomic(out, {"version": "VERSION 1.3", "results": results,
                            "external_data": {"used": False, "details": "mars-sta S-CNN", "manifest": manifest}})
    count = sum(map(len, results.values()))
    log(f"{count} detections in {len(videos)} videos in {time.perf_counter() - started:.1f} s -> {out}")
    return {"detections": count, "videos": len(videos), "stream": proposal_checkpoint.stream}


@torch.no_grad()
def window_scores(clips: WindowClips, video: str, windows: np.ndarray, model: torch.nn.Module, batch_size: int,
                  device: torch.device, timeline: TemporalWeights | None = None) -> np.ndarray:
    """Softmax scores (n, classes) of ``model`` for each window of ``video``; STA's weights go to ``timeline``."""
    model.eval()
    scores = []
    for first in range(0, len(windows), batch_size):
        spans = windows[first:first + batch_size]
        batch = torch.stack([clips.clip(video, *span) for span in spans]).to(device)
        scores.append(model(batch).float().softmax(dim=1).cpu().numpy())
        if timeline is not None:
            timeline.add(model, spans, clips.frames)
    return np.concatenate(scores) if scores else np.zeros((0, 2))


class TemporalWeights:
    """STA's temporal weight along a video (Fig. 6): per grid frame, the mean over the windows that sampled it of
    the last STA module's gate averaged over channels (interpolated from the feature map's L onto the clip)."""

    def __init__(self, length: int) -> None:
        self.total = np.zeros(length)
        self.count = np.zeros(length)

    def add(self, model: torch.nn.Module, spans: np.ndarray, frames: int) -> None:
        from mars_sta import attention_modules

        modules = [module for _, module in attention_modules(model) if module.last_weights is not None]
        if not modules:
            return
        gate = modules[-1].last_weights.float().cpu().numpy()
        per_frame = gate.reshape(gate.shape[0], gate.shape[1], gate.shape[2]).mean(axis=1)  # (windows, L)
        centres = (np.arange(frames) + 0.5) / frames * per_frame.shape[1] - 0.5
        for (start, stop), weights in zip(spans, per_frame):
            indices = clip_indices(int(start), int(stop), frames)
            np.add.at(self.total, indices, np.interp(centres, np.arange(per_frame.shape[1]), weights))
            np.add.at(self.count, indices, 1)

    def values(self) -> np.ndarray:
        """Mean weight per grid frame; NaN where no scored window looked."""
        with np.errstate(invalid="ignore"):
            return self.total / self.count


def _detect_video(video: str, store: FlowStore, clips: WindowClips, proposal: torch.nn.Module,
                  localization: torch.nn.Module, classes: list[str], trained, config: DetectConfig,
                  device: torch.device, timeline: TemporalWeights) -> list[dict[str, Any]]:
    """Scored, NMS-filtered segments of one video, in seconds, best first."""
    windows = sliding_windows(store.num_frames(video) - 1, trained.window_lengths, trained.window_overlap)
    action = window_scores(clips, video, windows, proposal, config.batch_size, device)[:, 1]
    kept = windows[action >= config.proposal_threshold]
    if not len(kept):
        return []
    scores = window_scores(clips, video, kept, localization, config.batch_size, device, timeline)[:, 1:]
    best = scores.argmax(axis=1)
    fps = fps_of(store, video)
    found = []
    for label in np.unique(best):
        mine = np.flatnonzero(best == label)
        segments, score = kept[mine].astype(np.float64), scores[mine, label]
        for index in temporal_nms(segments, score, config.nms_threshold):
            found.append({"label": classes[label], "score": round(float(score[index]), 6),
                          "segment": [round(segments[index, 0] / fps, 3), round(segments[index, 1] / fps, 3)]})
    return sorted(found, key=lambda d: -d["score"])
