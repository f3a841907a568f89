"""Manifests written next to every stage's outputs: config, inputs (with fingerprints) and library versions.

The fingerprint of a stage's inputs and config is what lets ``run`` skip a stage whose inputs did not change.
"""
from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

__all__ = ["config_hash", "file_sha256", "fingerprint", "library_versions", "stage_key", "stage_manifest"]

_LIBRARIES = ("mars-sta", "torch", "numpy", "opencv-contrib-python-headless", "opencv-contrib-python", "h5py",
              "scikit-learn", "click")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that change results."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: str | Path) -> str:
    """A content hash of a file, or of a folder's file names, sizes and modification times (cheap for stores)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = item.stat()
        digest.update(f"{item.relative_to(path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def config_hash(payload: Any) -> str:
    """A stable hash of a JSON-able value (configs, preprocessing manifests)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_key(stage: str, config: Mapping[str, Any], fingerprints: Mapping[str, str],
              unkeyed: tuple[str, ...] = ()) -> str:
    """The key of one stage run: its config (but the ``unkeyed`` entries, which may change without making it
    another run) and its inputs' fingerprints."""
    keyed = {name: value for name, value in config.items() if name not in unkeyed}
    return config_hash({"stage": stage, "config": keyed, "inputs": dict(fingerprints)})


def stage_manifest(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str | Path],
                   unkeyed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The manifest of one stage run: what it was asked to do, on which inputs, with which software."""
    fingerprints = {name: fingerprint(p) for name, p in inputs.items() if p is not None and Path(p).exists()}
    return {
        "stage": stage,
        "config": dict(config),
        "inputs": {name: str(p) for name, p in inputs.items() if p is not None},
        "input_fingerprints": fingerprints,
        "key": stage_key(stage, config, fingerprints, unkeyed),
        "versions": library_versions(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
