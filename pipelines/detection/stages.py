"""The detection stages as the CLI runs them: configs from a TOML table and options, inputs checked first."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flow.store import FlowStore
from pipelines.core.config import build_config, read_toml
from pipelines.detection.annotations import read_annotations
from pipelines.detection.detect import DetectConfig, detect
from pipelines.detection.scnn import DetectorConfig, train_detector


def detection_table(path: Path | None, name: str) -> dict[str, Any]:
    """The ``[detection.<name>]`` table of a TOML file (empty without a file)."""
    if path is None:
        return {}
    return dict(read_toml(path).get("detection", {}).get(name, {}))


def train_detector_stage(store: Path, annotations: Path, out: Path, config_path: Path | None,
                         options: Mapping[str, Any], log: Callable[[str], None] = print,
                         progress: bool = True, teacher: Path | None = None) -> dict[str, str]:
    """``train-detector``: read the config and the annotations of its subset, then train both networks."""
    config = build_config(DetectorConfig, detection_table(config_path, "train"), options, source=config_path,
                          table="[detection.train]")
    truth = read_annotations(annotations, config.subset)
    return train_detector(config, store, truth, out, log=log, progress=progress, teacher=teacher)


def detect_stage(model_dir: Path, store: Path, out: Path, annotations: Path | None, subset: str,
                 config_path: Path | None, options: Mapping[str, Any], log: Callable[[str], None] = print,
                 progress: bool = True) -> dict[str, Any]:
    """``detect``: the videos of an annotation subset (or the whole store), scored and written as results JSON."""
    config = build_config(DetectConfig, detection_table(config_path, "detect"), options, source=config_path,
                          table="[detection.detect]")
    with FlowStore(store) as opened:
        if annotations is None:
            videos = opened.video_ids()
        else:
            truth = read_annotations(annotations, subset)
            truth.check_videos(opened)
            videos = sorted(truth.videos)
    return detect(model_dir, store, videos, out, config, log=log, progress=progress)
