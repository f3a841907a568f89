"""``mars-sta demo --task detection``: ``run``'s detection stages on untrimmed synthetic data, with the four rows of
Table VI: S-CNN, STA-S-CNN, R-C3D and STA-R-C3D.

The demo is ``mars-sta run configs/detection-demo.toml`` with the seed set in every table, the store at
``OUT/store`` and, unless the config says otherwise, all four rows and R-C3D heads-only on the S-CNN rows'
localization networks. It is cached and resumable as ``run`` is. Beyond ``run``'s report it records the seed, the
time taken and mAP at tIoU 0.3-0.7 (``tiou_high``, ``mAP_high``), and writes ``detection/report.md`` / ``.html``.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flow.atomic import write_json_atomic
from pipelines.core.config import read_toml
from pipelines.data.annotations import read_annotations
from pipelines.scoring.detection_map import evaluate_result_sets
from pipelines.detection.pipeline import MODELS
from pipelines.report.detection_pages import write_detection_report
from pipelines.report.detection_summary import combine_seeds
from pipelines.report.detection_section import cells, over_seeds, read_summary
from pipelines.stages.demo import packaged_config
from pipelines.stages.run import load_plan, run

DEMO_CONFIG = "detection-demo.toml"
HIGH_TIOU = (0.3, 0.4, 0.5, 0.6, 0.7)  # the later papers' range (ActionFormer, AFSD), reported beside Table VI's
SEEDED = ("synth", "train", "rc3d")  # the [detection.*] tables whose seed the demo sets


def detection_demo_config() -> Path:
    """``configs/detection-demo.toml`` of a source checkout, or the copy installed with the package's data files."""
    return packaged_config(DEMO_CONFIG)


def demo_tables(config_path: Path, seed: int) -> dict[str, Any]:
    """The demo config with the demo's settings filled in where the file leaves them open."""
    tables = copy.deepcopy(read_toml(config_path))
    detection = tables.setdefault("detection", {})
    detection.setdefault("models", list(MODELS))
    detection.setdefault("store", "store")
    detection.setdefault("rc3d", {}).setdefault("mode", "heads")
    detection.setdefault("detect", {}).setdefault("tiou", list(HIGH_TIOU))  # S-CNN's per-tIoU sets, when asked for
    for name in SEEDED:
        detection.setdefault(name, {})["seed"] = seed
    return tables


def run_detection_demo(out: Path, seed: int = 0, config_path: Path | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the detection stages into ``out``; returns the report written to ``out/detection/report.json``.

    Args:
        out: the demo folder.
        seed: seed of the synthetic data and of training.
        config_path: another demo TOML (default ``configs/detection-demo.toml``).
        log: where progress lines go.
    """
    started = time.perf_counter()
    out = Path(out)
    config_path = Path(config_path) if config_path else detection_demo_config()
    plan = load_plan(config_path, out, base=out, tables=demo_tables(config_path, seed))
    run(plan, force=("eval-detection",), log=log, progress=False)  # report.json anew: a summary over seeds may
    report = read_summary(out)                                      # have replaced this seed's
    test = read_annotations(plan.detection.annotations, plan.detection.config.test_subset)
    for row in report["rows"]:
        row["mAP_high"] = [float(v) for v in evaluate_result_sets(  # unrounded, as "mAP": seeds' means round once
            plan.detection.out / row["model"] / "detections.json", test, HIGH_TIOU,
            plan.detection.config.protocol).mAP]
    report.update(seed=seed, seconds=round(time.perf_counter() - started, 1), tiou_high=list(HIGH_TIOU))
    write_json_atomic(plan.detection.out / "report.json", report)
    pages = write_detection_report(out)
    log(format_rows(report))
    log(f"report: {', '.join(map(str, pages))}" + ("" if len(pages) > 1 else " (no matplotlib: no HTML figures)"))
    return report


def run_detection_demos(out: Path, seeds: Sequence[int], config_path: Path | None = None,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """The demo for each seed; with several, each runs in ``out/seed-S`` and ``out/detection/report.json`` holds
    Table VI as mean ± sd over them (``pipelines.report.detection_summary.combine_seeds``), drawn in
    ``report.md``/``.html``.

    Args:
        out: the demo folder.
        seeds: distinct seeds; one seed writes the single demo into ``out`` itself.
        config_path: another demo TOML (default ``configs/detection-demo.toml``).
        log: where progress lines go.
    """
    if len(seeds) == 1:
        return run_detection_demo(out, seeds[0], config_path, log)
    reports = [run_detection_demo(Path(out) / f"seed-{seed}", seed, config_path, log) for seed in seeds]
    summary = combine_seeds(reports)
    write_json_atomic(Path(out) / "detection" / "report.json", summary)
    pages = write_detection_report(out)
    log(format_rows(summary))
    log(f"report: {', '.join(map(str, pages))}")
    return summary


def format_rows(report: dict[str, Any]) -> str:
    """The Table VI-style summary: mAP (%) per model and tIoU (mean ± sd when over several seeds)."""
    width = 13 if "seeds" in report else 5
    header = "model       " + "  ".join(f"{t:>{width}.1f}" for t in report["tiou"])
    lines = [f"{row['model']:<11} " + "  ".join(f"{cell:>{width}}" for cell in cells(row, "mAP"))
             for row in report["rows"]]
    return "\n".join([f"mAP (%) at tIoU{over_seeds(report)}", header, *lines, f"({report['seconds']:.0f} s)"])

