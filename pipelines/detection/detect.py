"""S-CNN's test: windows -> proposal filter -> localization scores (background dropped, length prior) -> per-class
NMS -> ActivityNet results JSON, and with ``nms_below_tiou`` one more result set per evaluated tIoU
(``eval_scnn_thumos14.m`` runs NMS at tIoU - 0.1 for each threshold it evaluates)."""
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
from pipelines.core.checkpoint import Checkpoint, SCNNExtras, load_checkpoint
from pipelines.core.config import check_at_least, config_to_dict
from pipelines.core.stream_specs import stream_spec
from pipelines.data.annotations import fps_of
from pipelines.detection.clips import WindowClips
from pipelines.detection.scnn import DetectorConfig, detector_config_of
from pipelines.detection.windows import (check_parent_classes, check_parent_classes_known, clip_indices,
                                        prior_columns, sliding_windows, temporal_nms, with_parent_classes)
from pipelines.scoring.detection_map import DEFAULT_TIOU, TIOU_RESULTS, tiou_results_path
from pipelines.core.device import resolve_device
from pipelines.core.manifest import stage_manifest


@dataclass(frozen=True)
class DetectConfig:
    """Settings of ``detect`` (TOML table ``[detection.detect]``). S-CNN's own post-processing
    (``eval_scnn_thumos14.m``): proposal_threshold 0.7, drop_background, length_prior, nms_below_tiou 0.1."""

    proposal_threshold: float = 0.5  # windows the proposal network calls action with at least this probability
    drop_background: bool = False  # drop windows whose localization argmax is background; else take the best action
    length_prior: bool = False  # multiply each score by its class's window-length prior (learned in training)
    nms_threshold: float = 0.4  # per-class NMS tIoU of the results file
    nms_below_tiou: float | None = None  # also a result set per tIoU t of `tiou`, NMS at max(t - this, 0) (S-CNN: 0.1)
    tiou: tuple[float, ...] = ()  # the tIoUs of those sets; () is 0.1-0.5 (`run` adds [detection] tiou)
    batch_size: int = 64
    device: str = "auto"
    parent_classes: dict[str, str] = field(default_factory=dict)  # each detection of a key class also as its value

    def __post_init__(self) -> None:
        fractions = [self.proposal_threshold, self.nms_threshold, self.nms_below_tiou or 0]
        if not all(0 <= value <= 1 for value in fractions):
            raise InputError(None, "proposal_threshold, nms_threshold and nms_below_tiou must be in [0, 1]")
        if not all(0 < t <= 1 for t in self.tiou):
            raise InputError(None, f"tiou {list(self.tiou)}: thresholds must lie in (0, 1]")
        check_at_least(batch_size=(self.batch_size, 1))
        check_parent_classes(self.parent_classes)

    def nms_sets(self) -> dict[float, float]:
        """tIoU -> the NMS threshold of its own result set (none without ``nms_below_tiou``)."""
        if self.nms_below_tiou is None:
            return {}
        return {t: max(round(t - self.nms_below_tiou, 6), 0.0) for t in self.tiou or DEFAULT_TIOU}


@dataclass
class Candidates:
    """One video's windows that passed the proposal network and were scored, before NMS: grid frames, class
    index, score."""

    segments: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    fps: float

    def suppressed(self, threshold: float, classes: list[str]) -> list[dict[str, Any]]:
        """Per-class NMS at ``threshold``: segments in seconds, best first."""
        found = []
        for label in np.unique(self.labels):
            mine = np.flatnonzero(self.labels == label)
            for index in mine[temporal_nms(self.segments[mine], self.scores[mine], threshold)]:
                found.append({"label": classes[label], "score": round(float(self.scores[index]), 6),
                              "segment": [round(self.segments[index, 0] / self.fps, 3),
                                          round(self.segments[index, 1] / self.fps, 3)]})
        return sorted(found, key=lambda d: -d["score"])


def detect(model_dir: Path, store_path: Path, videos: list[str], out: Path, config: DetectConfig = DetectConfig(),
           log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Detect actions in ``videos`` with the detector in ``model_dir``; writes ``out`` (ActivityNet results) and,
    with ``nms_below_tiou``, one result set per tIoU beside it, which ``out`` names (``tiou_result_sets``).

    Args:
        model_dir: folder with ``proposal.pth`` and ``localization.pth`` from ``train-detector`` (S-CNN tests
            with these two; its classification network only started the localization network).
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
    prior = _length_prior(localization_checkpoint, config)
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
    candidates, timelines = {}, {}
    for video in progress_bar(videos, disable=not progress, desc="detect", unit="video", leave=False):
        timelines[video] = TemporalWeights(store.num_frames(video) - 1)
        candidates[video] = _score_video(video, store, clips, proposal.to(device), localization.to(device), trained,
                                         config, device, timelines[video], prior)
    if trained.sta:  # STA's temporal weights along each video, for the report's timelines
        with atomic_output(out.with_name("sta_timelines.npz")) as handle:
            np.savez_compressed(handle, **{v: t.values() for v, t in timelines.items()})
    manifest = stage_manifest("detect", config_to_dict(config), {"model_proposal": model_dir / "proposal.pth",
                                                                 "model_localization": model_dir / "localization.pth",
                                                                 "store": store_path})
    sets = config.nms_sets()
    for tiou, threshold in sets.items():  # written before the file that names them
        _write_results(tiou_results_path(out, tiou), candidates, classes, threshold, config, manifest,
                       f"NMS at {threshold:g} for evaluation at tIoU {tiou:g}")
    named = {TIOU_RESULTS: {f"{t:g}": tiou_results_path(out, t).name for t in sets}} if sets else {}
    count = _write_results(out, candidates, classes, config.nms_threshold, config, manifest,
                           f"NMS at {config.nms_threshold:g}", named)
    per_tiou = f" (and a result set for each tIoU {', '.join(f'{t:g}' for t in sets)})" if sets else ""
    log(f"{count} detections in {len(videos)} videos in {time.perf_counter() - started:.1f} s -> {out}{per_tiou}")
    return {"detections": count, "videos": len(videos), "stream": proposal_checkpoint.stream}


def _length_prior(checkpoint: Checkpoint, config: DetectConfig) -> np.ndarray | None:
    """The localization checkpoint's window-length prior (classes, lengths) when ``length_prior`` asks for it."""
    if not config.length_prior:
        return None
    prior = checkpoint.detector.length_prior if isinstance(checkpoint.detector, SCNNExtras) else None
    if prior is None:
        raise InputError(checkpoint.path, "holds no window-length prior (trained before S-CNN's prior was kept): set "
                                          "length_prior = false in [detection.detect], or train it again")
    return np.asarray(prior, np.float64)


def _write_results(path: Path, candidates: dict[str, Candidates], classes: list[str], threshold: float,
                   config: DetectConfig, manifest: dict[str, Any], details: str,
                   extra: dict[str, Any] | None = None) -> int:
    """One ActivityNet results file of the candidates after NMS at ``threshold``; returns its detection count."""
    results = {video: with_parent_classes(found.suppressed(threshold, classes), config.parent_classes)
               for video, found in candidates.items()}
    write_json_atomic(path, {"version": "VERSION 1.3", "results": results, "external_data": {
        "used": False, "details": f"mars-sta S-CNN, {details}", "manifest": manifest, **(extra or {})}})
    return sum(map(len, results.values()))


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


def _score_video(video: str, store: FlowStore, clips: WindowClips, proposal: torch.nn.Module,
                 localization: torch.nn.Module, trained: DetectorConfig, config: DetectConfig, device: torch.device,
                 timeline: TemporalWeights, prior: np.ndarray | None) -> Candidates:
    """One video's windows kept by the proposal network, each with its class and score from the localization
    network: its argmax over K + 1 classes, background dropped (``drop_background``), or its best action class;
    the score that class's probability, times the class's prior for the window's length (``prior``)."""
    windows = sliding_windows(store.num_frames(video) - 1, trained.window_lengths, trained.window_overlap)
    action = window_scores(clips, video, windows, proposal, config.batch_size, device)[:, 1]
    kept = windows[action >= config.proposal_threshold]
    fps = fps_of(store, video)
    if not len(kept):
        return Candidates(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0), fps)
    probabilities = window_scores(clips, video, kept, localization, config.batch_size, device, timeline)
    labels = probabilities.argmax(axis=1) if config.drop_background else probabilities[:, 1:].argmax(axis=1) + 1
    kept, probabilities, labels = kept[labels > 0], probabilities[labels > 0], labels[labels > 0]
    scores = probabilities[np.arange(len(labels)), labels]
    if prior is not None:
        scores = scores * prior[labels - 1, prior_columns(kept, trained.window_lengths)]
    return Candidates(kept.astype(np.float64), labels - 1, scores, fps)
