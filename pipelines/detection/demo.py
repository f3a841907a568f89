"""``mars-sta demo --task detection``: untrimmed synthetic data -> extract -> S-CNN, STA-S-CNN, R-C3D and STA-R-C3D
-> detect -> mAP.

Layout under ``--out``: ``data/`` (videos, the THUMOS'14 folder ``data/annotations/`` and ``data/annotations.json``),
``store/``, ``features/<model>/`` (R-C3D's cached backbone maps), ``detection/<model>/`` (checkpoints,
``detections.json``), ``detection/report.json`` (the summary of ``pipelines.detection.summary`` with the seed, the
time taken and, under ``tiou_high`` / ``mAP_high``, mAP at tIoU 0.3-0.7), and ``detection/report.md`` / ``.html``.
STA-S-CNN reuses S-CNN's proposal network (the paper inserts STA into the localization network only), so the two
differ only where STA is. R-C3D trains its heads on features cached from S-CNN's localization network, STA-R-C3D
on STA-S-CNN's, so those two differ only by STA in the shared backbone.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flow.extract import ExtractConfig, extract_flow
from pipelines.core.checkpoint import load_checkpoint
from pipelines.core.config import build_config, read_toml
from pipelines.detection.annotations import Annotations, read_annotations
from pipelines.detection.detect import DetectConfig, detect
from pipelines.detection.evaluation import DEFAULT_TIOU, evaluate_detections, format_table, read_detections
from pipelines.detection.rc3d import RC3DConfig, train_rc3d
from pipelines.detection.rc3d_detect import RC3DDetectConfig, detect_rc3d
from pipelines.detection.pipeline import share_proposal
from pipelines.detection.report import write_detection_report
from pipelines.detection.scnn import DetectorConfig, train_detector
from pipelines.detection.summary import summarize
from pipelines.detection.synth import UntrimmedConfig, generate_untrimmed
from flow.atomic import write_json_atomic
from pipelines.inference.features import FeaturesConfig, build_features
from flow.errors import InputError

DEMO_CONFIG = "detection-demo.toml"
MODELS = ("s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d")
HIGH_TIOU = (0.3, 0.4, 0.5, 0.6, 0.7)  # the later papers' range (ActionFormer, AFSD), reported beside Table VI's


def detection_demo_config() -> Path:
    """``configs/detection-demo.toml`` of a source checkout, or the copy installed with the package's data files."""
    for candidate in (Path(__file__).resolve().parents[2] / "configs" / DEMO_CONFIG,
                      Path(sys.prefix) / "share" / "mars-sta" / "configs" / DEMO_CONFIG):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{DEMO_CONFIG} not found beside the package; pass --config")


def run_detection_demo(out: Path, seed: int = 0, config_path: Path | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole detection pipeline into ``out``; returns the report written to ``out/detection/report.json``.

    Args:
        out: the demo folder.
        seed: seed of the synthetic data and of training.
        config_path: another demo TOML (default ``configs/detection-demo.toml``).
        log: where progress lines go.
    """
    started = time.perf_counter()
    out = Path(out)
    config_path = Path(config_path) if config_path else detection_demo_config()
    tables = read_toml(config_path)
    if "synth" in tables:
        raise InputError(config_path, "[synth] writes trimmed clips; the detection demo's videos come from "
                                      "[detection.synth]")
    detection = tables.get("detection", {})
    synth = build_config(UntrimmedConfig, detection.get("synth", {}), {"seed": seed}, source=config_path)
    extract = build_config(ExtractConfig, tables.get("extract", {}), source=config_path)
    train = build_config(DetectorConfig, detection.get("train", {}), {"seed": seed}, source=config_path)
    test = build_config(DetectConfig, detection.get("detect", {}), source=config_path)
    rc3d = build_config(RC3DConfig, detection.get("rc3d", {}), {"seed": seed}, source=config_path)
    rc3d_test = build_config(RC3DDetectConfig, detection.get("rc3d_detect", {}), source=config_path)

    if not (out / "data" / "synth.json").exists():
        generate_untrimmed(out / "data", synth)
    summary = extract_flow(extract, out / "data" / "videos", out / "store", progress=False)
    log(f"data: {summary.extracted + summary.skipped} untrimmed videos in {out / 'store'} "
        f"({time.perf_counter() - started:.0f} s)")
    truth = {subset: read_annotations(out / "data" / "annotations.json", subset) for subset in ("val", "test")}
    high: dict[str, list[float]] = {}
    for model in MODELS:
        folder = out / "detection" / model
        if model in ("s-cnn", "sta-s-cnn"):
            config = train if model == "sta-s-cnn" else dataclasses.replace(train, sta=None)
            share_proposal(out / "detection" / MODELS[0], folder)
            train_detector(config, out / "store", truth["val"], folder, log=log, progress=False)
            detect(folder, out / "store", sorted(truth["test"].videos), folder / "detections.json", test, log=log,
                   progress=False)
        else:
            _rc3d_on_scnn(out, model, rc3d, rc3d_test, train, truth, log)
        result = evaluate_detections(read_detections(folder / "detections.json"), truth["test"],
                                     [*DEFAULT_TIOU, *HIGH_TIOU[3:]])
        high[model] = result.mAP[2:]
        log(f"{model}:\n{format_table(result)}")
    folders = {model: out / "detection" / model for model in MODELS}
    report = {**summarize(folders, truth["test"], out / "store", DEFAULT_TIOU, "activitynet"), "seed": seed,
              "seconds": round(time.perf_counter() - started, 1), "tiou_high": list(HIGH_TIOU)}
    for row in report["rows"]:
        row["mAP_high"] = high[row["model"]]
    write_json_atomic(out / "detection" / "report.json", report)
    pages = write_detection_report(out)
    log(format_rows(report))
    log(f"report: {', '.join(map(str, pages))}" + ("" if len(pages) > 1 else " (no matplotlib: no HTML figures)"))
    return report


def format_rows(report: dict[str, Any]) -> str:
    """The Table VI-style summary: mAP (%) per model and tIoU."""
    header = "model       " + "  ".join(f"{t:>5.1f}" for t in report["tiou"])
    lines = [f"{row['model']:<11} " + "  ".join(f"{100 * v:5.1f}" for v in row["mAP"]) for row in report["rows"]]
    return "\n".join(["mAP (%) at tIoU", header, *lines, f"({report['seconds']:.0f} s)"])


def _rc3d_on_scnn(out: Path, model: str, config: RC3DConfig, test: RC3DDetectConfig, scnn_config: DetectorConfig,
                  truth: dict[str, Annotations], log: Callable[[str], None]) -> None:
    """R-C3D's heads on features cached from the matching S-CNN's localization network (its STA included): the
    backbone is pretrained on the same videos, as R-C3D's is on Sports-1M, and only the heads train here."""
    scnn = out / "detection" / model.replace("r-c3d", "s-cnn") / "localization.pth"
    features = out / "features" / model
    config = dataclasses.replace(config, mode="heads", pretrained=str(scnn), arch=scnn_config.arch,
                                 stream=scnn_config.stream, size=scnn_config.size,
                                 normalization=scnn_config.normalization,
                                 sta=scnn_config.sta if model.startswith("sta-") else None)
    layer = config.layer or load_checkpoint(scnn).build_model().stage_names[-1]
    reads = FeaturesConfig(stride=config.stride, layer=layer, buffer=config.buffer, device=config.device)
    build_features(reads, scnn, out / "store", features, log=log)
    folder = out / "detection" / model
    train_rc3d(config, out / "store", truth["val"], folder, features, log=log)
    detect_rc3d(folder, sorted(truth["test"].videos), folder / "detections.json", test, features=features, log=log)
