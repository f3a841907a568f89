"""The ``[detection]`` table of ``mars-sta run``: untrimmed data -> flow -> detectors -> detections -> mAP.

Read and checked whole before the run's first stage, so a typo in the last table stops the run before hours of
training. Each step is one cached stage of the run (the runner's ``stage``), keyed by its config and the
fingerprints of its inputs, and resumable: extraction and ``features`` skip finished videos and ``train-detector``
resumes after its last finished epoch. Layout: ``OUT/detection/store`` (unless ``store`` says),
``OUT/detection/<model>/`` (checkpoints, ``detections.json``), ``OUT/detection/teacher-flow/`` (the flow detector
a ``mars`` stream distils from), ``OUT/detection/features/<model>/`` (the backbone maps a heads-only R-C3D row
trains on) and ``OUT/detection/report.json`` (``pipelines.report.detection_summary``).
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from flow.errors import InputError
from flow.extract import ExtractConfig, check_store
from flow.store import FlowStore
from flow.atomic import write_json_atomic
from pipelines.core.config import build_config, check_model_choice, config_to_dict
from pipelines.core.device import check_device
from pipelines.core.manifest import fingerprint
from pipelines.core.own_stores import check_deletable, delete_made_store, extract_recorded
from pipelines.core.stream_specs import StreamName
from pipelines.data.synth_files import check_target
from pipelines.data.annotations import SUBSET_NAMES, read_annotations
from pipelines.detection.detect import DetectConfig, detect
from pipelines.scoring.detection_map import DEFAULT_TIOU, PROTOCOLS, tiou_result_sets
from mars_sta import model_entry
from pipelines.core.checkpoint import load_checkpoint
from pipelines.detection.rc3d import MODEL, RC3DConfig, train_rc3d
from pipelines.detection.rc3d_detect import RC3DDetectConfig, detect_rc3d
from pipelines.detection.scnn import NETWORKS, WITHOUT_STA, DetectorConfig, train_detector
from pipelines.report.detection_summary import summarize
from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed
from pipelines.inference.features import FeaturesConfig, FeatureStore, build_features

MODELS = {"s-cnn": False, "sta-s-cnn": True, "r-c3d": False, "sta-r-c3d": True}  # row -> STA in its detector
RC3D_ROWS = ("r-c3d", "sta-r-c3d")
STAGES = ("detection-synth", "detection-extract", "detection-features", "train-detector", "detect",
          "eval-detection")
TABLES = ("synth", "train", "detect", "rc3d", "rc3d_detect")
TEACHER = "teacher-flow"
Stage = Callable[[str, str, dict[str, Any], Callable[[], Any]], Any]
Pending = Callable[[str, str, dict[str, Any]], bool]  # whether the runner would run (name, label, key) now


@dataclass(frozen=True)
class DetectionRunConfig:
    """The keys of ``[detection]`` itself; paths are relative to the TOML file (to ``--out`` for the demo)."""

    videos: str = "data/videos"  # untrimmed videos ([detection.synth] writes them here when present)
    annotations: str = "data/annotations.json"  # THUMOS'14 folder or ActivityNet-style JSON
    store: str | None = None  # default OUT/detection/store
    models: tuple[str, ...] = ("s-cnn", "sta-s-cnn")  # each trained, run on the test subset and evaluated
    test_subset: str = "test"  # detected and evaluated ([detection.train] subset is trained on)
    tiou: tuple[float, ...] = DEFAULT_TIOU
    protocol: str = "activitynet"  # or thumos14
    timeline_videos: int = 3  # test videos drawn as timelines in the report

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models or len(set(self.models)) < len(self.models):
            raise InputError(None, f"models {list(self.models)}: give distinct names among "
                                   f"{', '.join(MODELS)}")
        if not self.tiou or not all(0 < t <= 1 for t in self.tiou):
            raise InputError(None, f"tiou {list(self.tiou)}: thresholds must lie in (0, 1]")
        if self.protocol not in PROTOCOLS:
            raise InputError(None, f"protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if self.test_subset not in SUBSET_NAMES:
            raise InputError(None, f"test_subset {self.test_subset!r}: expected one of {', '.join(SUBSET_NAMES)}")
        if self.timeline_videos < 0:
            raise InputError(None, "timeline_videos must be at least 0")


@dataclass
class DetectionPlan:
    """Everything the detection stages will do, checked and resolved to absolute paths."""

    config: DetectionRunConfig
    out: Path
    videos: Path
    annotations: Path
    store: Path
    synth: UntrimmedConfig | None
    extract: ExtractConfig
    train: dict[str, DetectorConfig]  # S-CNN rows in training order; the flow teacher first when the stream is mars
    detect: DetectConfig
    rc3d: dict[str, RC3DConfig]  # R-C3D rows; heads-only ones read the backbone of their ``pretrained``
    rc3d_detect: RC3DDetectConfig

    @property
    def run_folder(self) -> Path:
        """The run's folder (``out`` is its ``detection/``), where it records the stores it made."""
        return self.out.parent


def plan_detection(table: dict[str, Any], source: Path, base: Path, out: Path,
                   extract: ExtractConfig) -> DetectionPlan:
    """Check the whole ``[detection]`` table of ``source``; every problem is one line naming the file and key."""
    if not isinstance(table, dict):
        raise InputError(source, "[detection] must be a table")
    tables = {key: value for key, value in table.items() if isinstance(value, dict)}
    for key in tables:
        if key not in TABLES:
            raise InputError(source, f"unknown table [detection.{key}] (known: {', '.join(TABLES)})")
    keys = {key: value for key, value in table.items() if key not in tables}
    config = _named(DetectionRunConfig, keys, source, "[detection]")
    _check_rc3d_tables_used(tables, config.models, source)
    synth = _named(UntrimmedConfig, tables["synth"], source, "[detection.synth]") if "synth" in tables else None
    base_train = _named(DetectorConfig, tables.get("train", {}), source, "[detection.train]")
    if "sta-s-cnn" in config.models and not base_train.sta:
        raise InputError(source, "[detection.train] sta: name where STA goes (e.g. 'layer3') for sta-s-cnn")
    check_model_choice(base_train.arch, base_train.sta, source, "[detection.train]")
    train = {model: dataclasses.replace(base_train, sta=base_train.sta if MODELS[model] else None)
             for model in config.models if model not in RC3D_ROWS}
    given_rc3d = _named(RC3DConfig, tables.get("rc3d", {}), source, "[detection.rc3d]")
    rc3d = _plan_rc3d(config.models, given_rc3d, base_train, source, base, (out / "detection").resolve())
    for row in rc3d.values():
        check_model_choice(row.arch, row.sta, source, "[detection.rc3d]", row.layer)
    teacher = StreamName(base_train.stream).teacher
    if teacher is not None and train:
        train = {TEACHER: dataclasses.replace(base_train, stream=teacher.base, sta=None), **train}
    plan = DetectionPlan(config=config, out=out / "detection", videos=(base / config.videos).resolve(),
                         annotations=(base / config.annotations).resolve(),
                         store=(base / config.store).resolve() if config.store else out / "detection" / "store",
                         synth=synth, extract=extract, train=train,
                         detect=_detect_config(tables.get("detect", {}), config.tiou, source),
                         rc3d=rc3d, rc3d_detect=_named(RC3DDetectConfig, tables.get("rc3d_detect", {}), source,
                                                       "[detection.rc3d_detect]"))
    _check_devices(plan, base_train, given_rc3d, source)
    _check_data_paths(plan, source)
    return plan


def _detect_config(table: dict[str, Any], evaluated: tuple[float, ...], source: Path) -> DetectConfig:
    """``[detection.detect]``; its per-tIoU result sets (``nms_below_tiou``) cover every tIoU the run evaluates."""
    config = _named(DetectConfig, table, source, "[detection.detect]")
    return dataclasses.replace(config, tiou=tuple(sorted({*evaluated, *config.tiou})))


def _check_rc3d_tables_used(tables: dict[str, Any], models: tuple[str, ...], source: Path) -> None:
    """R-C3D tables without an R-C3D row would be ignored without a word: refuse them."""
    if not any(model in RC3D_ROWS for model in models):
        for name in ("rc3d", "rc3d_detect"):
            if name in tables:
                raise InputError(source, f"[detection.{name}] is given but [detection] models lists no R-C3D row "
                                         f"({', '.join(RC3D_ROWS)}), so its values would be ignored: add a row or "
                                         "remove the table")


def _check_devices(plan: DetectionPlan, train: DetectorConfig, rc3d: RC3DConfig, source: Path) -> None:
    """Every device a detection table names, present on this machine (``cuda`` without a GPU is refused now)."""
    devices = {"[detection.train]": train.device, "[detection.detect]": plan.detect.device,
               "[detection.rc3d]": rc3d.device, "[detection.rc3d_detect]": plan.rc3d_detect.device,
               "[extract]": plan.extract.device}
    for table, device in devices.items():
        check_device(device, f"{table} device", source)


def _check_data_paths(plan: DetectionPlan, source: Path) -> None:
    """Without ``[detection.synth]`` the data must exist; with it, ``videos`` and ``annotations`` must name what it
    writes (``DIR/videos``, ``DIR/annotations.json`` or the ``DIR/annotations`` folder), or the run would read
    other data than it generated."""
    if plan.synth is None:
        for key, path in (("videos", plan.videos), ("annotations", plan.annotations)):
            if not path.exists():
                raise InputError(source, f"[detection] {key}: {path} not found (or add [detection.synth])")
        return
    folder = plan.videos.parent
    if plan.videos.name != "videos" or plan.annotations not in (folder / "annotations.json", folder / "annotations"):
        raise InputError(source, f"[detection] videos and annotations: [detection.synth] writes {folder / 'videos'} "
                                 f"and {folder / 'annotations.json'} (and the folder {folder / 'annotations'}), so "
                                 f"they must name those, not {plan.videos} and {plan.annotations}")


def _plan_rc3d(models: tuple[str, ...], given: RC3DConfig, scnn: DetectorConfig, source: Path, folder: Path,
               out: Path) -> dict[str, RC3DConfig]:
    """Each R-C3D row's settings. End to end, ``sta-r-c3d`` puts STA where ``[detection.rc3d] sta`` (else
    ``[detection.train] sta``) says. Heads-only, the frozen backbone is ``pretrained`` (its STA must match the
    row's name) or, without it, the matching S-CNN row's localization network, as R-C3D starts from a
    pretrained C3D."""
    planned = {}
    pretrained = (folder / given.pretrained).resolve() if given.pretrained else None
    if pretrained is not None and not pretrained.is_file():
        raise InputError(source, f"[detection.rc3d] pretrained: {pretrained} not found")
    for model in (m for m in models if m in RC3D_ROWS):
        if given.mode == "heads" and pretrained is None:
            planned[model] = _heads_on_scnn(given, model, scnn, models, source, out)
        elif given.mode == "heads":
            planned[model] = _heads_on_checkpoint(given, model, pretrained, source)
        else:
            sta = (given.sta or scnn.sta) if MODELS[model] else None
            if MODELS[model] and not sta:
                raise InputError(source, "[detection.rc3d] sta: name where STA goes (e.g. 'layer3') for sta-r-c3d")
            planned[model] = dataclasses.replace(given, sta=sta, pretrained=pretrained and str(pretrained))
    return planned


def _heads_on_scnn(given: RC3DConfig, model: str, scnn: DetectorConfig, models: tuple[str, ...], source: Path,
                   out: Path) -> RC3DConfig:
    """Heads on the localization network of the S-CNN row of the same name: its input, its STA."""
    row = model.replace("r-c3d", "s-cnn")
    if row not in models:
        raise InputError(source, f"[detection.rc3d] mode 'heads' without pretrained reads the backbone of {row}: "
                                 f"add {row} to [detection] models or give pretrained")
    return dataclasses.replace(given, pretrained=str(out / row / "localization.pth"), arch=scnn.arch,
                               stream="flow" if scnn.stream == "flow" else "rgb", size=scnn.size,
                               normalization=scnn.normalization, sta=scnn.sta if MODELS[model] else None)


def _heads_on_checkpoint(given: RC3DConfig, model: str, pretrained: Path, source: Path) -> RC3DConfig:
    """Heads on a given checkpoint's network: arch, input and STA are the checkpoint's."""
    checkpoint = load_checkpoint(pretrained)
    sta = checkpoint.model_kwargs.get("sta")
    if bool(sta) != MODELS[model]:
        raise InputError(source, f"[detection.rc3d] pretrained: {pretrained} has {'STA' if sta else 'no STA'}, "
                                 f"so heads-only it makes {'sta-r-c3d' if sta else 'r-c3d'}, not {model}")
    return dataclasses.replace(given, pretrained=str(pretrained), arch=checkpoint.arch,
                               stream=checkpoint.spec.test_clips, size=checkpoint.sample_size,
                               normalization=checkpoint.normalization, sta=sta)


def _named(cls: type, values: dict[str, Any], source: Path, table: str) -> Any:
    """``build_config`` with the table's name in front of the problem."""
    try:
        return build_config(cls, values, source=source)
    except InputError as exc:
        raise InputError(source, f"{table} {exc.problem}") from None


def synth_stage(plan: DetectionPlan) -> tuple[str, str, dict[str, Any]]:
    """The runner's name, label and key of the stage that generates the untrimmed synthetic videos."""
    return ("detection-synth", "generate the untrimmed synthetic videos",
            {"config": config_to_dict(plan.synth) if plan.synth else None})


def check_detection_outputs(plan: DetectionPlan, pending: Pending) -> None:
    """Refuse now what the stages must not do or would refuse later: synthetic videos written into a folder that
    is not an earlier synthetic set, the deletion of a store this run did not make, a store that holds
    other videos or other preprocessing."""
    if plan.synth is not None and pending(*synth_stage(plan)):
        check_target(plan.videos.parent)
        check_deletable(plan.store, plan.run_folder, "[detection.synth]")
    else:
        check_store(plan.extract, plan.videos, plan.store, "[detection] store")


def run_detection(plan: DetectionPlan, stage: Stage, log: Callable[[str], None] = print,
                  progress: bool = True) -> dict[str, Any]:
    """Every detection stage through the runner's cached ``stage``; returns the report's summary."""
    if plan.synth is not None:
        def make_videos() -> dict[str, Any]:
            info = generate_untrimmed(plan.videos.parent, plan.synth)
            delete_made_store(plan.store, plan.run_folder, "[detection.synth]", log)  # its flow is of old videos
            return {"videos": info["videos"], "instances": info["instances"]}

        stage(*synth_stage(plan), make_videos)
    stage("detection-extract", "extract flow of the untrimmed videos",
          {"config": config_to_dict(plan.extract), "videos": fingerprint(plan.videos)},
          lambda: dataclasses.asdict(extract_recorded(plan.extract, plan.videos, plan.store, plan.run_folder,
                                                      progress=progress)))
    inputs = {"store": fingerprint(plan.store / "manifest.json"), "annotations": fingerprint(plan.annotations)}
    folders = {}
    for model, config in plan.train.items():
        folders[model] = _train_stage(plan, stage, model, config, inputs, log, progress)
    for model, config in plan.rc3d.items():
        folders[model] = _train_rc3d_stage(plan, stage, model, config, inputs, log, progress)
    folders.pop(TEACHER, None)
    test = read_annotations(plan.annotations, plan.config.test_subset)
    with FlowStore(plan.store) as store:
        videos = test.subset_videos(store.video_ids())
    for model, folder in folders.items():
        _detect_stage(plan, stage, model, folder, inputs, videos, log, progress)
    key = {**inputs, "config": config_to_dict(plan.config),
           "detections": [fingerprint(path) for folder in folders.values() for path in _results_files(folder)]}
    return stage("eval-detection", "evaluate detections", key, lambda: _evaluate(plan, folders, test))


def _results_files(folder: Path) -> list[Path]:
    """A detector's results file and the per-tIoU result sets it names."""
    results = folder / "detections.json"
    return [results, *tiou_result_sets(results).values()]


def _train_stage(plan: DetectionPlan, stage: Stage, model: str, config: DetectorConfig, inputs: dict[str, Any],
                 log: Callable[[str], None], progress: bool) -> Path:
    """Train one detector; STA-S-CNN takes S-CNN's proposal and classification networks, a mars detector the flow
    teacher."""
    folder = plan.out / model
    teacher = plan.out / TEACHER if StreamName(config.stream).has_teacher else None
    if model == "sta-s-cnn" and "s-cnn" in plan.train:
        share_networks_without_sta(plan.out / "s-cnn", folder)
    key = {**inputs, "config": config_to_dict(config),
           "teacher": [fingerprint(teacher / f"{n}.pth") for n in NETWORKS] if teacher else None}

    def train() -> dict[str, str]:
        truth = read_annotations(plan.annotations, config.subset)
        return train_detector(config, plan.store, truth, folder, log=log, progress=progress, teacher=teacher)

    stage("train-detector", f"train detector {model} ({config.stream})", key, train)
    return folder


def _train_rc3d_stage(plan: DetectionPlan, stage: Stage, model: str, config: RC3DConfig, inputs: dict[str, Any],
                      log: Callable[[str], None], progress: bool) -> Path:
    """Train one R-C3D row: end to end from the store, or heads-only after caching its backbone's maps."""
    folder, features = plan.out / model, plan.out / "features" / model
    backbone = {"pretrained": fingerprint(config.pretrained) if config.pretrained else None}
    if config.mode == "heads":
        layer = config.layer or model_entry(config.arch).stages[-1]  # as R-C3D's heads read by default
        reads = FeaturesConfig(stride=config.stride, layer=layer, buffer=config.buffer, device=config.device)
        stage("detection-features", f"cache the backbone features of {model}",
              {"store": inputs["store"], "config": config_to_dict(reads), **backbone},
              lambda: build_features(reads, Path(config.pretrained), plan.store, features, log=log,
                                     progress=progress))
    heads = {"features": FeatureStore(features).manifest["key"]} if config.mode == "heads" else {}
    key = {**inputs, "config": config_to_dict(config), **backbone, **heads}

    def train() -> dict[str, Any]:
        truth = read_annotations(plan.annotations, config.subset)
        return train_rc3d(config, plan.store, truth, folder, features if heads else None, log=log)

    stage("train-detector", f"train detector {model} ({config.mode}, {config.stream})", key, train)
    return folder


def _detect_stage(plan: DetectionPlan, stage: Stage, model: str, folder: Path, inputs: dict[str, Any],
                  videos: list[str], log: Callable[[str], None], progress: bool) -> None:
    """Detect in the test videos with one row's networks (R-C3D heads-only reads its cached maps)."""
    out = folder / "detections.json"
    if model in plan.rc3d:
        config = plan.rc3d[model]
        features = plan.out / "features" / model if config.mode == "heads" else None
        key = {**inputs, "config": config_to_dict(plan.rc3d_detect), "model": [fingerprint(folder / MODEL)]}
        action = partial(detect_rc3d, folder, videos, out, plan.rc3d_detect, plan.store, features, log=log)
    else:
        key = {**inputs, "config": config_to_dict(plan.detect),
               "model": [fingerprint(folder / f"{n}.pth") for n in ("proposal", "localization")]}
        action = partial(detect, folder, plan.store, videos, out, plan.detect, log=log, progress=progress)
    stage("detect", f"detect with {model}", {**key, "subset": plan.config.test_subset}, action)


def _evaluate(plan: DetectionPlan, folders: dict[str, Path], test) -> dict[str, Any]:
    summary = summarize(folders, test, plan.store, plan.config.tiou, plan.config.protocol,
                        plan.config.timeline_videos)
    write_json_atomic(plan.out / "report.json", summary)
    return {"report": str(plan.out / "report.json"),
            "mAP": {row["model"]: [round(v, 4) for v in row["mAP"]] for row in summary["rows"]}}


def share_networks_without_sta(source: Path, target: Path) -> None:
    """Give STA-S-CNN the proposal and classification networks S-CNN trained (their resume keys ignore ``sta``, so
    they are kept as they are; the localization network starts from this classification network)."""
    for name in (f"{network}.pth" for network in WITHOUT_STA):
        if source == target or (target / name).exists() or not (source / name).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
