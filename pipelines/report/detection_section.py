"""The report's detection section, drawn from ``detection/report.json`` alone (``pipelines.report.detection_summary``):
the Table VI-style mAP table, per-class AP, precision-recall curves, and Fig. 6-style timelines of ground truth
against each detector's detections with STA's temporal weight along the video.

Rows are whatever detectors the summary holds (S-CNN, STA-S-CNN, or any other that wrote a row), so a new
detector needs no change here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipelines.report import figures, html_page
from pipelines.report.run_folder import read_json

SUMMARY = Path("detection") / "report.json"
Embed = Callable[[Any, str, str], str]  # (figure, file name, caption) -> html


def read_summary(root: Path) -> dict[str, Any] | None:
    """``ROOT/detection/report.json`` when the run or demo detected actions, else None."""
    path = Path(root) / SUMMARY
    return read_json(path) if path.is_file() else None


def _label(row: dict[str, Any]) -> str:
    return f"{row['model']} ({row['stream']})" if row.get("stream") else row["model"]


def markdown_tables(summary: dict[str, Any]) -> str:
    """mAP (%) per detector and tIoU as in Table VI (mean ± sd over seeds when several ran), then per-class AP (%)
    of every detector, or each seed's mAP."""
    def table(first: str, rows: dict[str, list[str]], tiou: list[float] = summary["tiou"]) -> list[str]:
        return ([f"| {first} | " + " | ".join(f"{t:g}" for t in tiou) + " |", "|---|" + "---|" * len(tiou)] +
                [f"| {name} | " + " | ".join(values) + " |" for name, values in rows.items()])

    lines = [f"## Detection mAP (%){over_seeds(summary)}", "",
             *table("model", {row["model"]: cells(row, "mAP") for row in summary["rows"]})]
    if "tiou_high" in summary:  # the demo's second table, tIoU 0.3-0.7 (later papers' range)
        lines += ["", "## Detection mAP (%) at tIoU 0.3-0.7", "",
                  *table("model", {row["model"]: cells(row, "mAP_high") for row in summary["rows"]
                                   if "mAP_high" in row}, summary["tiou_high"])]
    for row in summary["rows"]:
        if "per_seed" in row:
            lines += ["", f"### mAP (%) per seed, {row['model']}", "",
                      *table("seed", {seed: cells({"mAP": v}, "mAP") for seed, v in row["per_seed"].items()})]
        else:
            lines += ["", f"### Per-class AP (%), {row['model']}", "",
                      *table("class", {k: cells({"ap": v}, "ap") for k, v in row["per_class"].items()})]
    return "\n".join(lines) + "\n"


def cells(row: dict[str, Any], key: str) -> list[str]:
    """A row's values in percent, each with its standard deviation over seeds when the row has one."""
    spread = row.get(f"{key}_sd")
    return [f"{100 * v:.1f}" + (f" ± {100 * spread[i]:.1f}" if spread else "") for i, v in enumerate(row[key])]


def over_seeds(summary: dict[str, Any]) -> str:
    """", mean ± sd over seeds 0, 1, 2" for a summary over seeds, else nothing."""
    seeds = summary.get("seeds")
    return f", mean ± sd over seeds {', '.join(map(str, seeds))}" if seeds else ""


def detection_section(summary: dict[str, Any], embed: Embed) -> str:
    """The HTML of the section: tables, then the precision-recall and timeline figures through ``embed``."""
    tiou, classes = summary["tiou"], summary["classes"]
    headers = ["model", *(f"{t:g}" for t in tiou)]
    best = max(range(len(summary["rows"])), key=lambda i: summary["rows"][i]["mAP"][-1], default=None)
    parts = [html_page.paragraph(f"{summary['protocol']} protocol on the test videos; mAP (%) at each tIoU, as "
                                 f"Table VI of the STA paper{over_seeds(summary)} (best at the highest tIoU "
                                 "highlighted)."),
             html_page.table(headers, [[_label(row), *cells(row, "mAP")] for row in summary["rows"]],
                             [i == best for i in range(len(summary["rows"]))])]
    if "tiou_high" in summary:
        parts += [html_page.paragraph("mAP (%) at tIoU 0.3-0.7, the range later papers report."),
                  html_page.table(["model", *(f"{t:g}" for t in summary["tiou_high"])],
                                  [[_label(row), *cells(row, "mAP_high")] for row in summary["rows"]
                                   if "mAP_high" in row])]
    if "seeds" in summary:  # each seed's folder has its own per-class AP, curves and timelines
        return "\n".join(parts + [html_page.table(["model", "seed", *headers[1:]], [
            [row["model"], seed, *cells({"mAP": values}, "mAP")] for row in summary["rows"]
            for seed, values in row["per_seed"].items()])])
    parts.append("<details><summary>Per-class AP (%)</summary>")
    parts += [html_page.table(["model", "class", *headers[1:]],
                              [[row["model"], label, *(f"{100 * ap:.1f}" for ap in row["per_class"].get(label, []))]
                               for row in summary["rows"] for label in classes if label in row["per_class"]])]
    parts.append("</details>")
    if summary["rows"]:
        parts.append(embed(pr_figure(summary), "detection_pr.png",
                           f"Precision against recall per class at tIoU {summary['pr_tiou']:g}, one line per "
                           "detector."))
    if summary.get("timelines"):
        parts.append(embed(timeline_figure(summary), "detection_timelines.png",
                           "Test videos with most instances: ground truth, each detector's detections (shade = "
                           "score, class by colour) and, in black, STA's temporal weight per frame."))
    return "\n".join(parts)


def pr_figure(summary: dict[str, Any]) -> Any:
    """One panel per class: each detector's precision-recall steps at ``pr_tiou``."""
    classes = summary["classes"]
    figure = figures.new_figure(2.6 * len(classes), 2.6)
    axes = np.atleast_1d(figure.subplots(1, len(classes)))
    for axis, label in zip(axes, classes):
        for row in summary["rows"]:
            if label in row["pr"]:
                recall, precision = row["pr"][label]
                axis.step([0, *recall], [1, *precision], where="post", label=row["model"])
        axis.set(title=label, xlabel="recall", xlim=(0, 1), ylim=(0, 1.05))
    axes[0].set_ylabel("precision")
    axes[0].legend(fontsize=7)
    return figure


def timeline_figure(summary: dict[str, Any]) -> Any:
    """Fig. 6: per video a row of ground truth and one per detector, STA's temporal weight on a second axis."""
    timelines, classes = summary["timelines"], summary["classes"]
    figure = figures.new_figure(10, 1.7 * len(timelines))
    for axis, timeline in zip(np.atleast_1d(figure.subplots(len(timelines), 1)), timelines):
        rows = [("ground truth", [(*t, 1.0) for t in timeline["truth"]])]
        rows += [(model, found) for model, found in timeline["detections"].items()]
        for height, (_, bars) in enumerate(reversed(rows)):
            for start, end, label, score in bars:
                colour = f"C{classes.index(label) % 10}" if label in classes else "grey"
                axis.barh(height, end - start, left=start, height=0.6, alpha=max(0.2, score), color=colour)
                axis.text(start, height, label, fontsize=6, va="center")
        axis.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)], fontsize=7)
        axis.set(xlim=(0, timeline["duration"]))
        axis.set_title(timeline["video"], fontsize=8)
        _sta_curves(axis, timeline)
    figure.supxlabel("seconds", fontsize=8)
    return figure


def _sta_curves(axis: Any, timeline: dict[str, Any]) -> None:
    """Each STA detector's temporal weight per grid frame (frame k at k / fps seconds), on a twin axis."""
    if not timeline["sta"]:
        return
    twin = axis.twinx()
    for number, (model, weights) in enumerate(timeline["sta"].items()):
        values = np.array([np.nan if w is None else w for w in weights], float)
        twin.plot(np.arange(len(values)) / timeline["fps"], values, color="k", linewidth=0.8,
                  linestyle=("-", "--", ":")[number % 3], label=f"STA weight, {model}")
    twin.set_ylabel("STA weight", fontsize=7)
    twin.legend(fontsize=6, loc="upper right")
