"""The folder a synthetic generator writes: it rewrites only what its own records prove it wrote there.

``synth.json`` (written last) records the config of a complete dataset and ``synth.partial.json`` (written before
the first file) the configs of a generation under way; the names of the files a config writes follow from it. So a
folder may be written into when it is absent or empty, or when every file in it is one that a recorded config
wrote (or the temporary name of one). Anything else is the user's, and the generator refuses the folder before it
writes anything: it never overwrites a user's dataset nor mixes its videos in beside the user's.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow.errors import InputError

DONE = "synth.json"
PARTIAL = "synth.partial.json"


@dataclass(frozen=True)
class Generator:
    """What a generator writes: its ``synth.json`` format, the files a recorded config writes, and its name."""

    format: str
    files_of: Callable[[Mapping[str, Any]], list[str]]  # paths relative to the folder, from a recorded config
    name: str  # "a synthetic dataset", for messages


def check_folder(out: Path, generator: Generator) -> list[dict[str, Any]]:
    """The configs recorded in ``out`` (none when it is absent or empty); refuses a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_symlink() or not p.is_dir()) if out.exists() else []
    configs = _recorded_configs(out, generator) if present else []
    own = _own_files(generator, configs) | _with_temporaries([DONE, PARTIAL])
    foreign = [name for name in present if name not in own]
    if foreign:
        raise InputError(out, f"folder is not empty and not {generator.name} (found {foreign[0]!r}); generate "
                              "into an empty or new folder")
    return configs


@contextlib.contextmanager
def rewriting(out: Path, generator: Generator, config: Mapping[str, Any]) -> Iterator[None]:
    """Claim ``out`` for a generation with ``config``: refuse a foreign folder, record the claim, delete what earlier
    generations wrote (so no stale video stays beside the new ones) and, once the body wrote ``synth.json``, drop
    the claim."""
    earlier = check_folder(out, generator)
    config = json.loads(json.dumps(config))  # as it will read back: tuples as lists
    configs = [*(c for c in earlier if c != config), config]
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{PARTIAL}.partial"
    temporary.write_text(json.dumps({"format": generator.format, "configs": configs}, indent=2) + "\n")
    os.replace(temporary, out / PARTIAL)
    (out / DONE).unlink(missing_ok=True)
    for name in sorted(_own_files(generator, earlier) | _with_temporaries([DONE]) - {DONE}):
        _remove(out, out / name)
    yield
    (out / PARTIAL).unlink()


def _recorded_configs(out: Path, generator: Generator) -> list[dict[str, Any]]:
    """Configs of ``synth.partial.json`` and ``synth.json`` when they are this generator's records."""
    configs: list[Any] = []
    for name in (PARTIAL, DONE):
        try:
            record = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == generator.format:
            found = record.get("configs") if name == PARTIAL else [record.get("config")]
            configs += found if isinstance(found, list) else []
    return [config for config in configs if isinstance(config, dict)]


def _own_files(generator: Generator, configs: list[dict[str, Any]]) -> set[str]:
    """Every file the recorded configs write, with the temporary names it is written under first."""
    own: set[str] = set()
    for config in configs:
        try:
            own |= _with_temporaries(generator.files_of(config))
        except (KeyError, TypeError, ValueError):  # a record this generator cannot read proves nothing
            continue
    return own


def _with_temporaries(names: list[str]) -> set[str]:
    """The names and the generators' temporary names of each (``.x.avi.partial``, ``.x.partial.avi``)."""
    found = set()
    for name in names:
        folder, _, leaf = name.rpartition("/")
        prefix = f"{folder}/" if folder else ""
        stem, dot, suffix = leaf.rpartition(".")
        found |= {name, f"{prefix}.{leaf}.partial", f"{prefix}.{stem}.partial{dot}{suffix}"}
    return found


def _remove(out: Path, path: Path) -> None:
    """Delete one file of an earlier generation and the folders it leaves empty, up to ``out``."""
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
