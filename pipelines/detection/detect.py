"""S-CNN's test: windows -> proposal filter -> localization scores -> per-class NMS -> ActivityNet results JSON."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flow.errors import InputError
from flow.store import FlowStore
from pipelines.checkpoint import model_from_checkpoint
from pipelines.config import config_to_dict
from pipelines.detection.clips import WindowClips, fps_of
from pipelines.detection.scnn import detector_config_of
from pipelines.detection.windows import sliding_windows, temporal_nms
from pipelines.device import resolve_device
from pipelines.manifest import stage_manifest, write_json_atomic


@dataclass(frozen=True)
class DetectConfig:
    """Settings of ``detect`` (TOML table ``[detection.detect]``)."""

    proposal_threshold: float = 0.5  # windows the proposal network calls action with at least this probability
    nms_threshold: float = 0.4  # per-class NMS; S-CNN uses 0.1 below the evaluation tIoU
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.proposal_threshold <= 1 or not 0 <= self.nms_threshold <= 1:
            raise InputError(None, "proposal_threshold and nms_threshold must be in [0, 1]")


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
    proposal, payload = model_from_checkpoint(model_dir / "proposal.pth")
    localization, loc_payload = model_from_checkpoint(model_dir / "localization.pth")
    trained = detector_config_of(loc_payload)
    store = FlowStore(store_path)
    missing = [v for v in videos if v not in store]
    if missing:
        raise InputError(store_path, f"{len(missing)} video(s) to detect in are not in the store, e.g. {missing[0]!r}")
    clips = WindowClips(store, trained.stream, trained.frames, trained.size, trained.normalization, False)
    classes = loc_payload["classes"]
    started = time.perf_counter()
    results = {}
    for video in tqdm(videos, disable=not progress, desc="detect", leave=False):
        results[video] = _detect_video(video, store, clips, proposal.to(device), localization.to(device), classes,
                                       trained, config, device)
    manifest = stage_manifest("detect", config_to_dict(config), {"model_proposal": model_dir / "proposal.pth",
                                                                 "model_localization": model_dir / "localization.pth",
                                                                 "store": store_path})
    write_json_atomic(out, {"version": "VERSION 1.3", "results": results,
                            "external_data": {"used": False, "details": "mars-sta S-CNN", "manifest": manifest}})
    count = sum(map(len, results.values()))
    log(f"{count} detections in {len(videos)} videos in {time.perf_counter() - started:.1f} s -> {out}")
    return {"detections": count, "videos": len(videos), "stream": payload.get("stream")}


@torch.no_grad()
def window_scores(clips: WindowClips, video: str, windows: np.ndarray, model: torch.nn.Module, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """Softmax scores (n, classes) of ``model`` for each window of ``video``."""
    model.eval()
    scores = []
    for first in range(0, len(windows), batch_size):
        batch = torch.stack([clips.clip(video, *span) for span in windows[first:first + batch_size]]).to(device)
        scores.append(model(batch).float().softmax(dim=1).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros((0, 2))


def _detect_video(video: str, store: FlowStore, clips: WindowClips, proposal: torch.nn.Module,
                  localization: torch.nn.Module, classes: list[str], trained, config: DetectConfig,
                  device: torch.device) -> list[dict[str, Any]]:
    """Scored, NMS-filtered segments of one video, in seconds, best first."""
    windows = sliding_windows(store.num_frames(video) - 1, trained.window_lengths, trained.window_overlap)
    action = window_scores(clips, video, windows, proposal, config.batch_size, device)[:, 1]
    kept = windows[action >= config.proposal_threshold]
    if not len(kept):
        return []
    scores = window_scores(clips, video, kept, localization, config.batch_size, device)[:, 1:]
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
