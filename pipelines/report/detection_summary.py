"""``detection/report.json``: everything the report's detection section draws, computed once from the detectors'
results so that the report reads one file and never re-evaluates.

``{"tiou", "protocol", "classes", "pr_tiou", "rows": [{"model", "stream", "mAP", "per_class", "pr"}],
"timelines": [{"video", "duration", "truth", "detections", "sta"}]}``: ``pr`` holds each class's precision-recall
points at ``pr_tiou``; a timeline holds a test video's ground truth, each model's detections (score at least
``TIMELINE_SCORE``) and, for detectors with STA, the temporal weight per grid frame (Fig. 6 of the STA paper).
Rows are whatever detector folders are given, so any detector that writes ``detections.json`` has its row.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flow.store import FlowStore
from pipelines.core.stream_specs import StreamName
from pipelines.data.annotations import Annotations, fps_of
from pipelines.scoring.detection_map import evaluate_result_sets

PR_TIOU = 0.5
TIMELINE_SCORE = 0.3  # detections below this score are left off the timelines


def summarize(folders: dict[str, Path], truth: Annotations, store: Path, tiou: Sequence[float], protocol: str,
              timeline_videos: int = 3) -> dict[str, Any]:
    """mAP, per-class AP and precision-recall of each detector folder (``detections.json``, or at each tIoU the
    result set it names for that tIoU: ``evaluate_result_sets``), and timelines (``detections.json``)."""
    thresholds = [float(t) for t in tiou]
    extra = [] if PR_TIOU in thresholds else [PR_TIOU]
    rows = []
    for model, folder in folders.items():
        result = evaluate_result_sets(folder / "detections.json", truth, thresholds + extra, protocol)
        at = result.tiou.index(PR_TIOU)
        rows.append({"model": model, "stream": _stream(folder), "mAP": result.mAP[:len(thresholds)],
                     "per_class": {label: aps[:len(thresholds)] for label, aps in result.per_class.items()},
                     "pr": {label: [_rounded(points) for points in curves[at]]
                            for label, curves in result.curves.items()}})
    with FlowStore(store) as opened:
        timelines = [_timeline(video, folders, truth, opened) for video in _busiest(truth, timeline_videos)]
    return {"tiou": thresholds, "protocol": protocol, "classes": truth.classes, "pr_tiou": PR_TIOU, "rows": rows,
            "timelines": timelines}


def _stream(folder: Path) -> str | None:
    """The stream a detector read (``manifest.json`` of train-detector), when it says."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    config = json.loads(manifest.read_text()).get("config", {})
    stream = config.get("stream")
    return str(StreamName(stream, sta=bool(config.get("sta")))) if stream else None


def _busiest(truth: Annotations, count: int) -> list[str]:
    """The test videos with most instances (ties by name): where a timeline shows most."""
    return sorted(truth.videos, key=lambda v: (-len(truth.videos[v].segments), v))[:count]


def _timeline(video: str, folders: dict[str, Path], truth: Annotations, store: FlowStore) -> dict[str, Any]:
    fps = fps_of(store, video)
    detections, sta = {}, {}
    for model, folder in folders.items():
        found = json.loads((folder / "detections.json").read_text())["results"].get(video, [])
        detections[model] = [[*d["segment"], d["label"], d["score"]] for d in found if d["score"] >= TIMELINE_SCORE]
        weights = folder / "sta_timelines.npz"
        if weights.is_file():
            with np.load(weights, allow_pickle=False) as loaded:
                if video in loaded:
                    sta[model] = [None if math.isnan(w) else round(float(w), 4) for w in loaded[video]]
    return {"video": video, "fps": fps, "duration": store.num_frames(video) / fps,
            "truth": [[s.start, s.end, s.label] for s in truth.videos[video].segments],
            "detections": detections, "sta": sta}


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def combine_seeds(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary of the same detectors run with several seeds: per row and tIoU the mean, the sample standard
    deviation (``mAP_sd``, ``mAP_high_sd``) and every seed's value (``per_seed``); ``seeds`` lists them. Per-class
    AP, precision-recall and timelines stay in each seed's own report."""
    first = reports[0]
    rows = []
    for index, row in enumerate(first["rows"]):
        runs = [report["rows"][index] for report in reports]
        combined = {"model": row["model"], "stream": row.get("stream"),
                    "per_seed": {str(report["seed"]): run["mAP"] for report, run in zip(reports, runs)}}
        for key in ("mAP", "mAP_high"):
            if key in row:
                values = np.array([run[key] for run in runs], float)
                combined[key] = _rounded(values.mean(axis=0))
                combined[f"{key}_sd"] = _rounded(values.std(axis=0, ddof=1) if len(runs) > 1 else 0 * values[0])
        rows.append(combined)
    return {key: first[key] for key in ("tiou", "tiou_high", "protocol", "classes", "pr_tiou") if key in first} | {
        "seeds": [report["seed"] for report in reports], "rows": rows,
        "seconds": round(sum(report["seconds"] for report in reports), 1)}
