"""``OUT/stages/<stage>.json``: the marker ``run`` writes when a stage finishes, and reads to skip it next time.

A marker holds the stage's name, the key of its config and input fingerprints, those inputs, the stage's summary
(whatever JSON the stage returned), how long it took and the library versions. A marker that does not read back as
one is an InputError naming it: a rerun must not guess whether a stage finished.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow.atomic import write_json_atomic
from flow.errors import InputError


@dataclass(frozen=True)
class StageMarker:
    """One finished stage, as ``OUT/stages/<stage>.json`` records it."""

    stage: str  # the stage's name in STAGE_ORDER (``train-mars``, ``fuse``)
    key: str  # hash of ``inputs``: the marker counts only while the inputs hash to it
    inputs: dict[str, Any]  # config and input fingerprints
    summary: Any  # what the stage returned, as JSON
    seconds: float
    versions: dict[str, str]

    def write(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> StageMarker:
        """The marker at ``path``; a file that is not valid JSON or lacks a field is a one-line InputError."""
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, f"stage marker is not valid JSON ({exc}); delete it to rerun the stage") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: Any, path: Path) -> StageMarker:
        kinds: dict[str, type | tuple[type, ...]] = {"stage": str, "key": str, "inputs": dict, "summary": object,
                                                     "seconds": (int, float), "versions": dict}
        if not isinstance(data, dict):
            raise InputError(path, "stage marker is not a JSON object; delete it to rerun the stage")
        for name, kind in kinds.items():
            if name not in data or not isinstance(data[name], kind) or (name == "seconds" and
                                                                        isinstance(data[name], bool)):
                problem = "is missing" if name not in data else f"is {type(data[name]).__name__}"
                raise InputError(path, f"stage marker field {name!r} {problem}; delete it to rerun the stage")
        return cls(**{name: data[name] for name in kinds})
