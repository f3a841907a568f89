"""The detection section of the report: Table VI-style mAP, per-class AP, precision-recall curves and Fig. 6-style
timelines (ground truth against detections, with STA's temporal weight along the video).

Written from a detection demo folder (``detection/report.json``, each model's ``detections.json``, the test ground
truth in ``data/annotations.json`` and STA-S-CNN's ``sta_timelines.npz``) to ``detection/report.md`` and, when
matplotlib is installed, ``detection/report.html`` with its figures embedded.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from flow.atomic import atomic_output
from pipelines.detection.annotations import Annotations, read_annotations
from pipelines.detection.evaluation import DetectionResult, evaluate_detections, read_detections

TIMELINE_VIDEOS = 3
PR_TIOU = 0.5


def write_detection_report(demo_dir: Path) -> list[Path]:
    """Write ``report.md`` (and ``report.html`` with figures when matplotlib is there); returns the files written."""
    folder = Path(demo_dir) / "detection"
    summary = json.loads((folder / "report.json").read_text())
    truth = read_annotations(Path(demo_dir) / "data" / "annotations.json", "test")
    results = {row["model"]: evaluate_detections(read_detections(folder / row["model"] / "detections.json"), truth,
                                                 [*summary["tiou"], PR_TIOU] if PR_TIOU not in summary["tiou"]
                                                 else summary["tiou"]) for row in summary["rows"]}
    tables = markdown_tables(summary, results)
    written = [folder / "report.md"]
    with atomic_output(written[0], "w") as handle:
        handle.write(tables)
    try:
        import matplotlib
    except ImportError:
        return written
    matplotlib.use("Agg")
    figures = {"Precision-recall at tIoU 0.5": _pr_figure(results, truth.classes),
               "Ground truth, detections and STA's temporal weight": _timeline_figure(folder, truth, results)}
    written.append(folder / "report.html")
    with atomic_output(written[1], "w") as handle:
        handle.write(_html(tables, figures))
    return written


def markdown_tables(summary: dict[str, Any], results: dict[str, DetectionResult]) -> str:
    """mAP (%) per model and tIoU as in Table VI, then per-class AP (%) at each tIoU for every model."""
    tiou = summary["tiou"]
    lines = ["## Detection mAP (%)", "", "| model | " + " | ".join(f"{t:g}" for t in tiou) + " |",
             "|---|" + "---|" * len(tiou)]
    lines += [f"| {row['model']} | " + " | ".join(f"{100 * v:.1f}" for v in row["mAP"]) + " |"
              for row in summary["rows"]]
    if "tiou_high" in summary:
        high = summary["tiou_high"]
        lines += ["", "## Detection mAP (%) at tIoU 0.3-0.7", "", "| model | " + " | ".join(f"{t:g}" for t in high)
                  + " |", "|---|" + "---|" * len(high)]
        lines += [f"| {row['model']} | " + " | ".join(f"{100 * v:.1f}" for v in row["mAP_high"]) + " |"
                  for row in summary["rows"]]
    for model, result in results.items():
        lines += ["", f"### Per-class AP (%), {model}", "", "| class | " + " | ".join(f"{t:g}" for t in tiou) + " |",
                  "|---|" + "---|" * len(tiou)]
        lines += [f"| {label} | " + " | ".join(f"{100 * ap:.1f}" for ap in aps[:len(tiou)]) + " |"
                  for label, aps in result.per_class.items()]
    return "\n".join(lines) + "\n"


def _pr_figure(results: dict[str, DetectionResult], classes: list[str]):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(classes), figsize=(3 * len(classes), 3), squeeze=False)
    for axis, label in zip(axes[0], classes):
        for model, result in results.items():
            if label in result.curves:
                recall, precision = result.curves[label][result.tiou.index(PR_TIOU)]
                axis.step([0, *recall], [1, *precision], where="post", label=model)
        axis.set(title=label, xlabel="recall", xlim=(0, 1), ylim=(0, 1.05))
    axes[0][0].set_ylabel("precision")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _timeline_figure(folder: Path, truth: Annotations, results: dict[str, DetectionResult]):
    """For the test videos with most instances: ground truth, each model's detections (shade = score), STA weight."""
    import matplotlib.pyplot as plt

    videos = sorted(truth.videos, key=lambda v: (-len(truth.videos[v].segments), v))[:TIMELINE_VIDEOS]
    weights_path = folder / "sta-s-cnn" / "sta_timelines.npz"
    weights = dict(np.load(weights_path)) if weights_path.exists() else {}
    figure, axes = plt.subplots(len(videos), 1, figsize=(10, 1.6 * len(videos)), squeeze=False)
    for axis, video in zip(axes[:, 0], videos):
        rows = [("ground truth", [(s.start, s.end, s.label, 1.0) for s in truth.videos[video].segments])]
        for model in results:
            found = json.loads((folder / model / "detections.json").read_text())["results"].get(video, [])
            rows.append((model, [(*d["segment"], d["label"], d["score"]) for d in found if d["score"] >= 0.3]))
        for height, (name, bars) in enumerate(reversed(rows)):
            for start, end, label, score in bars:
                colour = f"C{truth.classes.index(label) % 10}"
                axis.barh(height, end - start, left=start, height=0.6, alpha=max(0.2, score), color=colour)
                axis.text(start, height, label, fontsize=6, va="center")
        axis.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)], fontsize=7)
        axis.set_title(video, fontsize=8)
        if video in weights:
            twin = axis.twinx()
            fps = 25.0 if truth.videos[video].duration is None else len(weights[video]) / truth.videos[video].duration
            twin.plot(np.arange(len(weights[video])) / fps, weights[video], color="k", linewidth=0.8)
            twin.set_ylabel("STA weight", fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    return figure


def _html(tables: str, figures: dict[str, Any]) -> str:
    """One self-contained page: the tables as preformatted Markdown, the figures as embedded PNGs."""
    import matplotlib.pyplot as plt

    parts = ["<!doctype html><meta charset='utf-8'><title>Detection</title><h1>Temporal action detection</h1>",
             f"<pre>{tables}</pre>"]
    for title, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        parts.append(f"<h2>{title}</h2><img src='data:image/png;base64,{encoded}'>")
    return "\n".join(parts) + "\n"
