"""``mars-sta run CONFIG.toml``: extract -> train flow -> train rgb -> train mars (and sta-mars) -> evaluate -> fuse,
then, with a ``[detection]`` table, the detection stages (``pipelines.detection.pipeline``).

Each stage writes ``stage.json`` with the key of its config and input fingerprints when it finishes. A rerun skips
every stage whose key is unchanged and says so; a killed run resumes where it stopped, because extraction skips
finished videos and training resumes from its last epoch checkpoint. ``from_stage`` reruns that stage and every
later one; ``force`` reruns the named stages only. Every stage's config, for every stream and split, is built (and
so checked) before the first stage runs: a bad value in ``[train]`` stops the run before any extraction. So is
what the run will write: synthetic data goes only where nothing but an earlier synthetic set lies, and a store is
deleted (when its videos are generated anew) only if this run made it (``pipelines.core.own_stores``).

Layout of the run folder::

    OUT/store/                      flow store (unless [data] store points elsewhere)
    OUT/stages/<stage>.json         key, summary and time of each finished stage
    OUT/stages/stores.json          the stores this run made (the only ones it deletes), by manifest SHA-256
    OUT/split1/train-flow/          last.pth, best.pth, metrics.jsonl, manifest.json (tensorboard/ with the extra)
    OUT/split1/train-mars/ ...
    OUT/split1/scores/<stream>-<subset>.npz
    OUT/fused/                      report.json, report.md, confusion matrices
    OUT/detection/                  store/, <model>/ (checkpoints, detections.json), report.json

A file with a ``[detection]`` table and no ``[data]`` table runs the detection stages only.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flow.errors import InputError
from pipelines.core.config import (TRAIN_STREAMS, build_config, check_model_choice, check_one_of,
                                   config_to_dict, read_toml)
from pipelines.core.device import check_device
from pipelines.core.lock import folder_lock
from pipelines.core.manifest import config_hash, fingerprint, library_versions
from pipelines.core.own_stores import check_deletable, delete_made_store, extract_recorded
from pipelines.core.stream_specs import StreamName
from pipelines.detection.pipeline import STAGES as DETECTION_STAGES
from pipelines.detection.pipeline import DetectionPlan, check_detection_outputs, plan_detection, run_detection
from pipelines.report.fused_report import FusedReport
from pipelines.stages.stage_marker import StageMarker

# Streams train in this order, so that a flow teacher exists before the MARS streams distil from it.
TRAIN_ORDER = TRAIN_STREAMS
STREAM_STAGES = {stream: f"train-{stream}" for stream in TRAIN_ORDER}
STAGE_ORDER = ("synth", "extract", *STREAM_STAGES.values(), "evaluate", "fuse", *DETECTION_STAGES)
TEACHERS = ("flow", "sta-flow")
FUSE_LABEL = "fuse scores"


@dataclass
class DataConfig:
    """The ``[data]`` table: where the videos, splits and outputs are. Relative paths are relative to the TOML file."""

    videos: str = "videos"
    splits: str | None = None  # default: splits/ beside the videos folder
    store: str | None = None  # default: OUT/store
    splits_to_run: list = field(default_factory=lambda: [1])
    streams: list = field(default_factory=lambda: ["flow", "rgb", "mars", "sta-mars"])
    sta: str = "layer4"  # STA spec of the sta- streams (a [train.<stream>] table may set its own)
    teacher: str = "flow"  # the flow stream MARS streams distil from: flow, or sta-flow as the STA-MARS authors
    dataset: str = "dataset"  # name printed in reports

    def __post_init__(self) -> None:
        """Split numbers, known stream names, and the teacher stream wherever a MARS stream distils from it."""
        if not all(type(split) is int and split >= 1 for split in self.splits_to_run):
            raise InputError(None, f"splits_to_run must list split numbers (1, 2, ...), got {self.splits_to_run}")
        for stream in self.streams:
            if stream not in TRAIN_ORDER:
                raise InputError(None, f"unknown stream {stream!r} in streams (known: {', '.join(TRAIN_ORDER)})")
        check_one_of(teacher=(self.teacher, TEACHERS))
        if any(StreamName.parse(stream).has_teacher for stream in self.streams) and self.teacher not in self.streams:
            raise InputError(None, f"mars streams distil from the {self.teacher} stream (teacher), which streams "
                                   "does not list")


@dataclass
class RunPlan:
    """What ``run`` was asked to do, resolved to absolute paths."""

    out: Path
    videos: Path
    splits: Path | None
    store: Path
    data: DataConfig
    tables: dict[str, Any]
    source: Path | None = None
    recognition: bool = True  # the recognition stages run (a [data] table, or no [detection] table)
    detection: DetectionPlan | None = None


def load_plan(config_path: Path, out: Path | None = None, overrides: dict[str, Any] | None = None,
              base: Path | None = None, tables: dict[str, Any] | None = None) -> RunPlan:
    """Read a run config; relative paths start at ``base`` (default: the config's folder), ``out`` defaults to
    ``base/run``; ``tables`` replaces the file's contents (a demo's edited copy), errors still name the file."""
    from flow.extract import ExtractConfig

    tables = read_toml(config_path) if tables is None else tables
    recognition = "data" in tables or "detection" not in tables
    if not recognition and "synth" in tables:
        raise InputError(config_path, "[synth] writes the trimmed recognition dataset, which a file without [data] "
                                      "does not use; untrimmed videos come from [detection.synth]")
    data = build_config(DataConfig, tables.get("data", {}), overrides, source=config_path, table="[data]")
    base = Path(base) if base else config_path.parent
    out = Path(out) if out else base / "run"
    videos = (base / data.videos).resolve()
    splits = (base / data.splits).resolve() if data.splits else None
    store = (base / data.store).resolve() if data.store else out / "store"
    detection = None
    if "detection" in tables:
        extract = build_config(ExtractConfig, tables.get("extract", {}), source=config_path)
        detection = plan_detection(tables["detection"], config_path, base, out, extract)
    return RunPlan(out=out, videos=videos, splits=splits, store=store, data=data, tables=tables, source=config_path,
                   recognition=recognition, detection=detection)


def _train_config(plan: RunPlan, stream: str, split: int):
    """[train] holds settings shared by every stream; [train.<stream>] overrides them for one stream (and
    [train.mars] applies to sta-mars too). ``pretrained`` in a stream's table names the checkpoint to fine-tune.
    The architecture, its STA spec and the pretrained file are checked here too, not when the stream trains."""
    from pipelines.stages.train import TrainConfig, pretrained_path, stream_values, train_table_label

    table = plan.tables.get("train", {})
    label = train_table_label(table, stream)
    name = StreamName.parse(stream)
    values = {**stream_values(table, stream), "stream": name.base, "split": split}
    if name.sta:
        values.setdefault("sta", plan.data.sta)
    pretrained = pretrained_path(values, plan.source, label)
    config = build_config(TrainConfig, values, source=plan.source, table=label)
    check_model_choice(config.arch, config.sta, plan.source, label)
    return config, pretrained


@dataclass
class StageConfigs:
    """Every stage's config, built (and so checked) from the plan before the first stage runs."""

    synth: Any  # SynthConfig, or None without a [synth] table
    extract: Any  # ExtractConfig
    train: dict[tuple[str, int], tuple[Any, Path | None]]  # (stream, split) -> (TrainConfig, pretrained)
    evaluate: dict[tuple[int, str], Any]  # (split, subset) -> EvaluateConfig
    fuse: Any  # FuseConfig


def stage_configs(plan: RunPlan) -> StageConfigs:
    """Check the whole config file, every stage's table for every stream and split, so a bad value stops the run
    before its first stage rather than after hours of extraction."""
    from flow.extract import ExtractConfig
    from pipelines.data.synth import SynthConfig
    from pipelines.stages.evaluate import EvaluateConfig
    from pipelines.stages.fuse import FuseConfig

    source, tables = plan.source, plan.tables
    synth = build_config(SynthConfig, tables["synth"], source=source, table="[synth]") if "synth" in tables else None
    if synth is None and not plan.videos.exists():
        raise InputError(plan.videos, "videos folder not found")
    if synth is not None:
        _check_synth_paths(plan)
    fuse = build_config(FuseConfig, tables.get("fuse", {}), source=source, table="[fuse]")
    splits = plan.data.splits_to_run
    streams = sorted(plan.data.streams, key=TRAIN_ORDER.index)
    configs = StageConfigs(
        synth=synth, fuse=fuse,
        extract=build_config(ExtractConfig, tables.get("extract", {}), source=source, table="[extract]"),
        train={(stream, split): _train_config(plan, stream, split) for split in splits for stream in streams},
        evaluate={(split, subset): build_config(EvaluateConfig, {**tables.get("evaluate", {}), "split": split,
                                                                 "subset": subset}, source=source, table="[evaluate]")
                  for split in splits for subset in (["test", "val"] if fuse.learn_weights else ["test"])})
    _check_devices(plan, configs)
    return configs


def _check_synth_paths(plan: RunPlan) -> None:
    """``[synth]`` writes DIR/videos and DIR/splits: ``[data]`` must read those, or the run would use other data
    than it generated."""
    folder = plan.videos.parent
    if plan.videos.name != "videos" or plan.splits not in (None, folder / "splits"):
        raise InputError(plan.source, f"[data] videos and splits: [synth] writes {folder / 'videos'} and "
                                      f"{folder / 'splits'}, so they must name those, not {plan.videos} and "
                                      f"{plan.splits or folder / 'splits'}")


def _check_devices(plan: RunPlan, configs: StageConfigs) -> None:
    """Every device the file names, present on this machine: ``cuda`` without a GPU stops the run now."""
    from pipelines.stages.train import train_table_label

    devices = {"[extract]": configs.extract.device, **{"[evaluate]": c.device for c in configs.evaluate.values()}}
    for (stream, _), (config, _) in configs.train.items():
        devices[train_table_label(plan.tables.get("train", {}), stream)] = config.device
    for table, device in devices.items():
        check_device(device, f"{table} device", plan.source)


class Runner:
    """Runs stages in order, skipping those whose key is unchanged."""

    def __init__(self, plan: RunPlan, from_stage: str | None = None, force: tuple[str, ...] = (),
                 log: Callable[[str], None] = print) -> None:
        for name in (from_stage, *force):
            if name is not None and name not in STAGE_ORDER:
                raise InputError(None, f"unknown stage {name!r} (stages: {', '.join(STAGE_ORDER)})")
        self.plan, self.log = plan, log
        self.rerun_from = STAGE_ORDER.index(from_stage) if from_stage else len(STAGE_ORDER)
        self.force = set(force)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def pending(self, name: str, label: str, key_payload: dict[str, Any]) -> bool:
        """Whether ``stage`` would run this stage now: forced, or no marker with the same key."""
        marker = self.marker_path(label)
        if name in self.force or STAGE_ORDER.index(name) >= self.rerun_from or not marker.exists():
            return True
        return StageMarker.read(marker).key != config_hash(key_payload)

    def stage(self, name: str, label: str, key_payload: dict[str, Any], action: Callable[[], Any]):
        """Run ``action`` unless its marker in ``OUT/stages/`` holds the same key; return its summary either way."""
        marker = self.marker_path(label)
        if not self.pending(name, label, key_payload):
            self.log(f"[skip] {label}: inputs and config unchanged")
            self.skipped.append(label)
            return StageMarker.read(marker).summary
        self.log(f"[run]  {label}")
        started = time.perf_counter()
        summary = action()
        StageMarker(stage=name, key=config_hash(key_payload), inputs=key_payload, summary=summary,
                    seconds=round(time.perf_counter() - started, 2), versions=library_versions()).write(marker)
        self.ran.append(label)
        return summary

    def marker_path(self, label: str) -> Path:
        """``OUT/stages/<label>.json``, the label's words joined by dashes."""
        return self.plan.out / "stages" / (re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-") + ".json")


def run(plan: RunPlan, from_stage: str | None = None, force: tuple[str, ...] = (),
        log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """The whole pipeline; returns the fused report (or the evaluation summaries when there is nothing to fuse).

    Args:
        plan: the run config with its paths resolved (``load_plan``).
        from_stage: rerun this stage and every later one even when cached.
        force: stages to rerun even when cached.
        log: receives one line per stage.
        progress: show progress bars.
    """
    configs = stage_configs(plan) if plan.recognition else None
    runner = Runner(plan, from_stage, force, log)
    if configs is not None:
        _check_recognition_outputs(plan, configs, runner)
    if plan.detection is not None:
        check_detection_outputs(plan.detection, runner.pending)
    plan.out.mkdir(parents=True, exist_ok=True)
    with folder_lock(plan.out):  # a second run on the same folder is refused, not interleaved
        return _run_locked(plan, configs, runner, log, progress)


def _run_locked(plan: RunPlan, configs: StageConfigs | None, runner: Runner, log: Callable[[str], None],
                progress: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"report": None}
    if configs is not None:
        result["report"] = _run_recognition(plan, configs, runner, log, progress)
    if plan.detection is not None:
        result["detection"] = run_detection(plan.detection, runner.stage, log, progress)
    return {**result, "ran": runner.ran, "skipped": runner.skipped, "out": str(plan.out)}


def _synth_stage(configs: StageConfigs) -> tuple[str, str, dict[str, Any]]:
    """The runner's name, label and key of the stage that generates the synthetic dataset."""
    return "synth", "generate the synthetic dataset", {"config": config_to_dict(configs.synth)}


def _check_recognition_outputs(plan: RunPlan, configs: StageConfigs, runner: Runner) -> None:
    """Refuse now what the stages must not do or would refuse later: a synthetic dataset written into a folder that
    is not an earlier synthetic set, the deletion of a store this run did not make, a store that holds
    other videos or other preprocessing."""
    from flow.extract import check_store
    from pipelines.data.synth_files import check_target

    if configs.synth is not None and runner.pending(*_synth_stage(configs)):
        check_target(plan.videos.parent)
        check_deletable(plan.store, plan.out, "[synth]")
    else:
        check_store(configs.extract, plan.videos, plan.store, "[data] store")


def _run_recognition(plan: RunPlan, configs: StageConfigs, runner: Runner, log: Callable[[str], None],
                     progress: bool) -> FusedReport:
    """Extract, train every stream of every split, evaluate, fuse; returns the fused report."""
    from pipelines.stages.fuse import fuse

    if configs.synth is not None:
        from pipelines.data.synth import generate

        def make_dataset() -> dict[str, Any]:
            info = generate(plan.videos.parent, configs.synth)
            delete_made_store(plan.store, plan.out, "[synth]", log)  # its flow is of the old videos
            return _synth_summary(info)

        runner.stage(*_synth_stage(configs), make_dataset)
    runner.stage("extract", "extract flow",
                 {"config": config_to_dict(configs.extract), "videos": fingerprint(plan.videos)},
                 lambda: _summary(extract_recorded(configs.extract, plan.videos, plan.store, plan.out,
                                                   progress=progress)))
    store_key = fingerprint(plan.store / "manifest.json")
    score_files = [path for split in plan.data.splits_to_run
                   for path in _run_split(plan, configs, runner, split, store_key, log, progress)]

    fuse_key = {"config": config_to_dict(configs.fuse), "scores": [fingerprint(p) for p in score_files]}
    fuse_config = dataclasses.replace(configs.fuse, dataset=configs.fuse.dataset or plan.data.dataset)
    summary = runner.stage("fuse", FUSE_LABEL, fuse_key,
                           lambda: fuse(score_files, plan.out / "fused", fuse_config).to_json())
    return FusedReport.from_json(summary, runner.marker_path(FUSE_LABEL))


def _run_split(plan: RunPlan, configs: StageConfigs, runner: Runner, split: int, store_key: str,
               log: Callable[[str], None], progress: bool) -> list[Path]:
    """Train every stream of one split (teachers first), then score each; returns the score files."""
    from pipelines.stages.evaluate import evaluate
    from pipelines.stages.train import TrainPaths, train

    split_dir = plan.out / f"split{split}"
    checkpoints: dict[str, Path] = {}
    for stream in sorted(plan.data.streams, key=TRAIN_ORDER.index):
        config, pretrained = configs.train[stream, split]
        name = StreamName(config.stream, sta=bool(config.sta))
        folder = split_dir / STREAM_STAGES[stream]
        teacher = checkpoints.get(plan.data.teacher) if name.has_teacher else None
        paths = TrainPaths(store=plan.store, out=folder, splits=plan.splits, teacher=teacher,
                           pretrained=pretrained)
        key = {"config": config_to_dict(config), "store": store_key,
               "teacher": fingerprint(teacher) if teacher else None,
               "pretrained": fingerprint(pretrained) if pretrained else None,
               "splits": fingerprint(plan.splits) if plan.splits else None}
        runner.stage(STREAM_STAGES[stream], f"train {name} (split {split})", key,
                     lambda c=config, p=paths: train(c, p, progress=log))
        checkpoints[stream] = folder / "best.pth"

    score_files: list[Path] = []
    subsets = ["test", "val"] if configs.fuse.learn_weights else ["test"]
    for stream, path in checkpoints.items():
        for subset in subsets:
            config = configs.evaluate[split, subset]
            out = split_dir / "scores" / f"{stream}-{subset}.npz"
            key = {"config": config_to_dict(config), "checkpoint": fingerprint(path), "store": store_key}
            runner.stage("evaluate", f"evaluate {stream} (split {split}, {subset})", key,
                         lambda c=config, p=path, o=out: evaluate(c, p, plan.store, o, plan.splits,
                                                                  progress=progress, log=log))
            score_files.append(out)
    return score_files


def _synth_summary(info: dict[str, Any]) -> dict[str, Any]:
    return {key: info[key] for key in ("classes", "videos") if key in info}


def _summary(result: Any) -> Any:
    """Stage summaries are stored as JSON: keep dataclass results readable."""
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
