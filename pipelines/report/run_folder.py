"""What a finished pipeline run left on disk, read back for the report: fused results, training runs, store.

The layout is the one ``pipelines.stages.run`` writes (``fused/report.json``, ``split<N>/train-<stream>/``,
``split<N>/scores/``, ``store/``). Everything is read from those files alone, so a report can be written long
after the run, on another machine, as long as the folder travels whole.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow.errors import InputError
from pipelines.core.streams import FUSION_ORDER
from pipelines.report.fused_report import FusedReport


@dataclass
class TrainingRun:
    """One trained stream of one split: its per-epoch metrics, its manifest and its checkpoints."""

    split: int
    stream: str
    folder: Path
    metrics: list[dict[str, Any]]
    manifest: dict[str, Any]

    @property
    def best(self) -> Path:
        return self.folder / "best.pth"

    @property
    def has_sta(self) -> bool:
        return bool(self.manifest.get("config", {}).get("sta"))


@dataclass
class RunFolder:
    """A pipeline run folder: the fused report, the training runs in split and fusion order, the flow store."""

    root: Path
    report: FusedReport | None  # fused/report.json; None for a folder that only detected actions
    trainings: list[TrainingRun] = field(default_factory=list)
    store: Path | None = None
    detection: dict[str, Any] | None = None  # detection/report.json, when the run or demo detected actions

    @property
    def fused(self) -> FusedReport:
        """The fused report, for the sections drawn only when the run fused scores."""
        if self.report is None:
            raise InputError(self.root / "fused" / "report.json", "not found")
        return self.report

    def score_file(self, split: int, stream: str, subset: str = "test") -> Path:
        return self.root / f"split{split}" / "scores" / f"{stream}-{subset}.npz"


def read_json(path: Path) -> Any:
    """A JSON file, or a one-line InputError naming it."""
    if not path.is_file():
        raise InputError(path, "not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (one JSON object per epoch); a malformed line names its number."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise InputError(path, f"line {number} is not an epoch record (no 'epoch')")
        rows.append(row)
    return rows


def _trainings(root: Path) -> list[TrainingRun]:
    rank = {stream: i for i, stream in enumerate(FUSION_ORDER)}
    found = []
    for folder in root.glob("split*/train-*"):
        match = re.fullmatch(r"split(\d+)", folder.parent.name)
        if not match or not folder.is_dir():
            continue
        manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").exists() else {}
        stream = manifest.get("stream") or folder.name.removeprefix("train-")
        found.append(TrainingRun(int(match.group(1)), stream, folder, read_metrics(folder / "metrics.jsonl"),
                                 manifest))
    return sorted(found, key=lambda t: (t.split, rank.get(t.stream, len(rank)), t.stream))


def _store(root: Path, trainings: list[TrainingRun]) -> Path | None:
    """The store the streams were trained on (their manifests name it), else ``RUN/store``."""
    candidates = [Path(t.manifest["inputs"]["store_manifest"]).parent for t in trainings
                  if t.manifest.get("inputs", {}).get("store_manifest")]
    for candidate in [*candidates, root / "store"]:
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def open_run_folder(root: str | Path) -> RunFolder:
    """Read a run folder; refuses a folder with neither a fused nor a detection report (nothing has finished)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such run folder")
    report_path, detection_path = root / "fused" / "report.json", root / "detection" / "report.json"
    if not report_path.is_file() and not detection_path.is_file():
        raise InputError(root, "holds neither fused/report.json nor detection/report.json: not a finished "
                               "`mars-sta run` or demo folder")
    report = FusedReport.from_json(read_json(report_path), report_path) if report_path.is_file() else None
    detection = read_json(detection_path) if detection_path.is_file() else None
    if detection is not None and (not isinstance(detection, dict) or
                                  not {"tiou", "rows", "classes", "pr_tiou"} <= set(detection)):
        raise InputError(detection_path, "is not a detection summary (needs tiou, rows, classes and pr_tiou)")
    trainings = _trainings(root)
    return RunFolder(root=root, report=report, trainings=trainings, store=_store(root, trainings),
                     detection=detection)
