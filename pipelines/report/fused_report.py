"""``fused/report.json`` as types: what ``fuse`` writes and every reader (tables, the HTML report, ``run``) reads.

``to_json`` gives the file's exact keys and values; ``from_json`` checks every field it reads, so a damaged or
foreign file is one InputError naming it, not a ``KeyError`` deep inside a table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow.errors import InputError

MEAN = "mean"  # the split of a row that averages the splits


class _Damaged(Exception):
    """A field of the report that is missing or has the wrong type; becomes one InputError naming the file."""


def _field(data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict):
        raise _Damaged(f"{where or 'the file'} is not a JSON object")
    if key not in data:
        raise _Damaged(f"{where}{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise _Damaged(f"{where}{key} is {type(value).__name__} {value!r:.40}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _list_of(values: Any, kind: type | tuple[type, ...], where: str) -> list[Any]:
    if not isinstance(values, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise _Damaged(f"{where} is not a list of {' or '.join(k.__name__ for k in _kinds(kind))}")
    return values


@dataclass(frozen=True)
class ReportRow:
    """One model (a stream or a fusion name) on one split, or its ``mean`` over ``splits``."""

    model: str
    split: int | str  # a split number, or "mean"
    top1: float
    top5: float
    mean_class: float
    videos: int
    splits: list[int] | None = None  # the splits a mean row averages

    @classmethod
    def from_json(cls, data: Any, where: str) -> ReportRow:
        split = _field(data, "split", (int, str), where)
        if isinstance(split, str) and split != MEAN:
            raise _Damaged(f"{where}split is {split!r}, neither a number nor {MEAN!r}")
        splits = _list_of(_field(data, "splits", list, where), int, f"{where}splits") if "splits" in data else None
        return cls(model=_field(data, "model", str, where), split=split,
                   **{key: float(_field(data, key, (int, float), where)) for key in ("top1", "top5", "mean_class")},
                   videos=_field(data, "videos", int, where), splits=splits)


@dataclass(frozen=True)
class BestModel:
    """The best model of one split, with its confusion matrix and per-class accuracy (None: no test video)."""

    model: str
    top1: float
    confusion: list[list[int]]
    per_class: dict[str, float | None]
    confusion_csv: str
    per_class_csv: str

    @classmethod
    def from_json(cls, data: Any, where: str) -> BestModel:
        confusion = [_list_of(row, int, f"{where}confusion row") for row in _field(data, "confusion", list, where)]
        per_class = _field(data, "per_class", dict, where)
        if not all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                   for value in per_class.values()):
            raise _Damaged(f"{where}per_class holds a value that is neither a number nor null")
        return cls(model=_field(data, "model", str, where), top1=float(_field(data, "top1", (int, float), where)),
                   confusion=confusion, per_class=per_class,
                   confusion_csv=_field(data, "confusion_csv", str, where),
                   per_class_csv=_field(data, "per_class_csv", str, where))


@dataclass(frozen=True)
class FusionMethod:
    """How scores were combined: ``equal``/``fixed``/``learned`` weights of ``logits`` or ``softmax`` scores."""

    method: str
    scores: str
    weights: dict[str, dict[str, dict[str, float]]]  # split -> model -> stream -> weight
    learned_on: dict[str, str] | None = None  # split -> the subset learned weights were fitted on
    learner: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> FusionMethod:
        method = _field(data, "method", str, where)
        if method not in ("equal", "fixed", "learned"):
            raise _Damaged(f"{where}method is {method!r}, not equal, fixed or learned")
        learned = method == "learned"
        return cls(method=method, scores=_field(data, "scores", str, where),
                   weights=_field(data, "weights", dict, where),
                   learned_on=_field(data, "learned_on", dict, where) if learned else None,
                   learner=_field(data, "learner", str, where) if learned else None)


@dataclass(frozen=True)
class ScoreFileUse:
    """A score file the fusion read, as its manifest lists it, and its role: ``test``, ``learning`` or ``unused``."""

    path: str
    sha256: str
    stream: str
    split: int
    subset: str
    videos: int
    role: str

    @classmethod
    def from_json(cls, data: Any, where: str) -> ScoreFileUse:
        kinds = {"path": str, "sha256": str, "stream": str, "split": int, "subset": str, "videos": int, "role": str}
        return cls(**{key: _field(data, key, kind, where) for key, kind in kinds.items()})


@dataclass(frozen=True)
class FusedReport:
    """Every fused model's accuracy per split (and mean), the best model per split, and how fusion was done."""

    dataset: str | None
    protocol: str
    classes: list[str]
    fusion: FusionMethod
    rows: list[ReportRow]
    best: dict[str, BestModel]  # split (as text) -> best model
    notes: list[str]
    manifest: dict[str, Any]  # the fuse stage's manifest (``pipelines.core.manifest``) with its score files

    def to_json(self) -> dict[str, Any]:
        """The file's content: the fields in order, leaving out the optional keys a report does not have."""
        return _without_none(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: Any, source: Path | str) -> FusedReport:
        """Read the content of a ``report.json``; a missing field or wrong type is an InputError naming ``source``."""
        try:
            return cls._parse(data)
        except _Damaged as exc:
            raise InputError(source, f"is not a fusion report: {exc}") from None

    @classmethod
    def _parse(cls, data: Any) -> FusedReport:
        dataset = _field(data, "dataset", (str, type(None)), "")
        rows = [ReportRow.from_json(row, f"rows[{i}].") for i, row in enumerate(_field(data, "rows", list, ""))]
        best = {str(split): BestModel.from_json(entry, f"best.{split}.")
                for split, entry in _field(data, "best", dict, "").items()}
        if not any(row.split == MEAN for row in rows):
            raise _Damaged("rows hold no mean row")
        _score_files(_field(data, "manifest", dict, ""))
        return cls(dataset=dataset, protocol=_field(data, "protocol", str, ""),
                   classes=_list_of(_field(data, "classes", list, ""), str, "classes"),
                   fusion=FusionMethod.from_json(_field(data, "fusion", dict, ""), "fusion."), rows=rows, best=best,
                   notes=_list_of(_field(data, "notes", list, ""), str, "notes"),
                   manifest=_field(data, "manifest", dict, ""))

    @property
    def score_files(self) -> list[ScoreFileUse]:
        """The score files of the manifest (checked when the report was read)."""
        return _score_files(self.manifest)

    @property
    def split_numbers(self) -> list[int]:
        """The splits that have rows of their own, in order."""
        return sorted({row.split for row in self.rows if isinstance(row.split, int)})

    def mean_rows(self) -> list[ReportRow]:
        return [row for row in self.rows if row.split == MEAN]


def _score_files(manifest: dict[str, Any]) -> list[ScoreFileUse]:
    return [ScoreFileUse.from_json(entry, f"manifest.score_files[{i}].")
            for i, entry in enumerate(_field(manifest, "score_files", list, "manifest."))]


def _without_none(content: dict[str, Any]) -> dict[str, Any]:
    """Drop the optional keys (a row's ``splits``, fusion's ``learned_on`` and ``learner``) where they are None."""
    content["rows"] = [{k: v for k, v in row.items() if not (k == "splits" and v is None)} for row in content["rows"]]
    content["fusion"] = {k: v for k, v in content["fusion"].items()
                         if not (k in ("learned_on", "learner") and v is None)}
    return content
