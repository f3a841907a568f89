"""The fusion report on disk (``report.json``, ``report.md``, per-split CSVs) and as a terminal table.

Every file is written under a temporary name and renamed into place; ``report.json`` is written last, so its
presence means the whole report is there.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from flow.atomic import write_json_atomic, write_text_atomic
from pipelines.report.fused_report import MEAN, FusedReport

_METHODS = {"equal": "equal average", "fixed": "fixed-weight average", "learned": "learned-weight average"}


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def confusion_csv(classes: list[str], confusion: list[list[int]]) -> str:
    """Rows are true classes, columns predicted classes, both labelled with class names."""
    return _csv([["true \\ predicted", *classes]] + [[name, *counts] for name, counts in zip(classes, confusion)])


def per_class_csv(classes: list[str], confusion: list[list[int]], accuracy: dict[str, float | None]) -> str:
    rows: list[list[Any]] = [["class", "videos", "correct", "top1"]]
    for i, name in enumerate(classes):
        value = accuracy[name]
        rows.append([name, sum(confusion[i]), confusion[i][i], "" if value is None else f"{value:.2f}"])
    return _csv(rows)


def describe_fusion(report: FusedReport) -> str:
    fusion = report.fusion
    what = "softmax probabilities" if fusion.scores == "softmax" else "raw logits"
    text = f"{_METHODS[fusion.method]} of {what}"
    if fusion.learned_on is not None:
        on = sorted(set(fusion.learned_on.values()))
        text += f" ({fusion.learner}, fitted on {' / '.join(on)} scores)"
    return text


def _splits(report: FusedReport) -> list[int | str]:
    splits: list[int | str] = list(report.split_numbers)
    return splits + [MEAN] if len(splits) > 1 else splits


def top1_grid(report: FusedReport) -> tuple[list[str], list[int | str], dict[tuple[str, int | str], float]]:
    """Models in report order, split columns (then ``mean``), and top-1 per (model, split)."""
    models = list(dict.fromkeys(row.model for row in report.rows))
    cells = {(row.model, row.split): row.top1 for row in report.rows}
    return models, _splits(report), cells


def best_model(report: FusedReport) -> str:
    """The model with the highest mean top-1 over splits (ties: mean class, top-5, then the earlier model)."""
    return max(report.mean_rows(), key=lambda row: (row.top1, row.mean_class, row.top5)).model


def format_top1_table(report: FusedReport) -> str:
    """A compact aligned top-1 table for the terminal; ``*`` marks the best model."""
    models, splits, cells = top1_grid(report)
    best = best_model(report)
    headers = ["model"] + [f"split {s}" if s != "mean" else "mean" for s in splits]
    body = [[model] + [f"{cells[(model, s)]:.2f}" if (model, s) in cells else "-" for s in splits] for model in models]
    width = [max(len(line[i]) for line in [headers] + body) for i in range(len(headers))]

    def line(cols: list[str], mark: str = " ") -> str:
        first = cols[0].ljust(width[0])
        rest = "  ".join(col.rjust(w) for col, w in zip(cols[1:], width[1:]))
        return f"{mark} {first}  {rest}"

    lines = [f"top-1 (%) - {describe_fusion(report)}", line(headers)]
    lines += [line(cols, "*" if cols[0] == best else " ") for cols in body]
    lines.append(f"* best: {best}")
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def format_markdown(report: FusedReport) -> str:
    """``report.md``: the same numbers as ``report.json``, for reading."""
    models, splits, cells = top1_grid(report)
    best = best_model(report)
    out = [
        "# Fusion report",
        "",
        f"- dataset: {report.dataset or 'not named'}",
        f"- test protocol: `{report.protocol}`",
        f"- fusion: {describe_fusion(report)}",
        f"- best model (mean top-1 over splits): **{best}**",
        "",
        "## Top-1 accuracy (%)",
        "",
    ]
    out += _md_table(
        ["model"] + [f"split {s}" if s != "mean" else "mean" for s in splits],
        [[f"**{m}**" if m == best else m] + [f"{cells[(m, s)]:.2f}" if (m, s) in cells else "-" for s in splits]
         for m in models],
    )
    out += ["", "## All measures (%)", ""]
    out += _md_table(
        ["model", "split", "top-1", "top-5", "mean class", "videos"],
        [[r.model, r.split, f"{r.top1:.2f}", f"{r.top5:.2f}", f"{r.mean_class:.2f}", r.videos] for r in report.rows],
    )
    if report.fusion.method != "equal":
        out += ["", "## Weights", ""]
        weight_rows = [[split, model, ", ".join(f"{s} {w:.3f}" for s, w in weights.items())]
                       for split, per_model in report.fusion.weights.items()
                       for model, weights in per_model.items() if len(weights) > 1]
        out += _md_table(["split", "model", "weights (sum 1)"], weight_rows)
    for split, entry in report.best.items():
        out += ["", f"## Best model of split {split}: {entry.model} ({entry.top1:.2f}% top-1)", "",
                f"Confusion matrix: `{entry.confusion_csv}` (rows true, columns predicted).", ""]
        out += _md_table(
            ["class", "videos", "top-1"],
            [[name, sum(entry.confusion[i]), "-" if acc is None else f"{acc:.2f}"]
             for i, (name, acc) in enumerate(entry.per_class.items())],
        )
    out += ["", "## Inputs", ""]
    out += _md_table(
        ["file", "stream", "split", "subset", "videos", "role", "sha256"],
        [[f"`{f.path}`", f.stream, f.split, f.subset, f.videos, f.role, f.sha256[:12]] for f in report.score_files],
    )
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(out) + "\n"


def write_report(out_dir: str | Path, report: FusedReport) -> None:
    """Write the per-split CSVs, ``report.md``, then ``report.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in report.best.values():
        write_text_atomic(out_dir / entry.confusion_csv, confusion_csv(report.classes, entry.confusion))
        write_text_atomic(out_dir / entry.per_class_csv,
                          per_class_csv(report.classes, entry.confusion, entry.per_class))
    write_text_atomic(out_dir / "report.md", format_markdown(report))
    write_json_atomic(out_dir / "report.json", report.to_json())
