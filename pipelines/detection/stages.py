"""The detection stages as the CLI runs them: configs from a TOML table and options, inputs checked first."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flow.errors import InputError
from flow.store import FlowStore
from pipelines.core.config import build_config, check_model_choice, read_toml
from pipelines.data.annotations import read_annotations
from pipelines.detection.detect import DetectConfig, detect
from pipelines.detection.rc3d import MODEL, RC3DConfig, train_rc3d
from pipelines.detection.rc3d_detect import RC3DDetectConfig, detect_rc3d
from pipelines.detection.scnn import DetectorConfig, train_detector
from pipelines.inference.features import FeatureStore


def detection_table(path: Path | None, name: str) -> dict[str, Any]:
    """The ``[detection.<name>]`` table of a TOML file (empty without a file)."""
    if path is None:
        return {}
    return dict(read_toml(path).get("detection", {}).get(name, {}))


def train_detector_stage(store: Path, annotations: Path, out: Path, config_path: Path | None,
                         options: Mapping[str, Any], log: Callable[[str], None] = print,
                         progress: bool = True, detector: str = "scnn", features: Path | None = None,
                         teacher: Path | None = None) -> dict[str, str]:
    """``train-detector``: read the config and the annotations of its subset, then train S-CNN's three networks
    (distilling from ``teacher`` on the mars stream) or R-C3D (``detector="rc3d"``, table ``[detection.rc3d]``;
    heads-only on ``features``)."""
    given = {k: v for k, v in options.items() if v is not None}  # options of the other detector stay unset
    if detector == "rc3d":
        if teacher is not None:
            raise InputError(None, "--teacher is for S-CNN's mars stream (R-C3D reads rgb or flow)")
        if "cache_mb" in given:
            raise InputError(None, "--cache-mb is for S-CNN (R-C3D keeps no decoded frames: it reads one buffer at "
                                   "a time)")
        config = build_config(RC3DConfig, detection_table(config_path, "rc3d"), given, source=config_path,
                              table="[detection.rc3d]")
        check_network(config.arch, config.sta, given, config_path, "[detection.rc3d]", config.layer)
        return train_rc3d(config, store, read_annotations(annotations, config.subset), out, features, log=log)
    if features is not None:
        raise InputError(None, "--features is for --detector rc3d (S-CNN reads clips from the flow store)")
    config = build_config(DetectorConfig, detection_table(config_path, "train"), given, source=config_path,
                          table="[detection.train]")
    check_network(config.arch, config.sta, given, config_path, "[detection.train]")
    truth = read_annotations(annotations, config.subset)
    return train_detector(config, store, truth, out, log=log, progress=progress, teacher=teacher)


def check_network(arch: str, sta: str | None, given: Mapping[str, Any], source: Path | None, table: str,
                  layer: str | None = None) -> None:
    """Architecture, STA spec and layer as the registry knows them, before any work (an unknown stage would
    otherwise stop S-CNN after its proposal network trained). ``--arch`` was checked as the command line was read;
    an STA spec from ``--sta`` is named by the option, anything else by the config file and table."""
    from_option = "sta" in given
    check_model_choice(arch, None if from_option else sta, source, table, layer)
    if from_option:
        try:
            check_model_choice(arch, sta, "--sta", "")
        except InputError as exc:  # the registry's message names the key, which the option already does
            raise InputError(exc.path, exc.problem.removeprefix("sta: ")) from None


def detect_stage(model_dir: Path, store: Path | None, out: Path, annotations: Path | None, subset: str,
                 config_path: Path | None, options: Mapping[str, Any], log: Callable[[str], None] = print,
                 progress: bool = True, features: Path | None = None) -> dict[str, Any]:
    """``detect``: the videos of an annotation subset (or the whole store), scored and written as results JSON.
    The subset's videos are its annotated ones and, for a THUMOS'14 folder, the store's named after the subset
    (:meth:`Annotations.subset_videos`): the evaluation counts false positives in test videos without instances.
    A folder with ``rc3d.pth`` is R-C3D (table ``[detection.rc3d_detect]``), end to end or on ``features``."""
    given = {k: v for k, v in options.items() if v is not None}
    if (model_dir / MODEL).is_file():
        if store is None and features is None:
            raise InputError(model_dir, "is an R-C3D model: give --store (end to end) or --features (its heads on "
                                        "cached features)")
        config = build_config(RC3DDetectConfig, detection_table(config_path, "rc3d_detect"), given,
                              source=config_path, table="[detection.rc3d_detect]")
        available = (FeatureStore(features).video_ids() if features is not None else
                     FlowStore(store).video_ids() if store is not None else [])
        videos = available if annotations is None else read_annotations(annotations, subset).subset_videos(available)
        return detect_rc3d(model_dir, videos, out, config, store, features, log=log)
    if store is None:
        raise InputError(None, "S-CNN reads clips from the flow store: give --store")
    config = build_config(DetectConfig, detection_table(config_path, "detect"), given, source=config_path,
                          table="[detection.detect]")
    with FlowStore(store) as opened:
        if annotations is None:
            videos = opened.video_ids()
        else:
            truth = read_annotations(annotations, subset)
            truth.check_videos(opened)
            videos = truth.subset_videos(opened.video_ids())
    return detect(model_dir, store, videos, out, config, log=log, progress=progress)
