"""The files one ``synth`` run writes, so that a rerun into the same folder replaces exactly them.

A rerun with other settings writes other names (fewer classes, fewer videos), so overwriting alone leaves files of
the earlier run behind, which later read as part of the new dataset (a stale ``up_test.txt`` is a class the new
ground truth does not have). Each file is therefore recorded before it is written: in ``OUT/.synth-files`` while the
run goes on, and in ``synth.json``'s ``files`` once it is complete. A new run deletes exactly the files an earlier
one recorded (a finished or an interrupted one) and refuses a folder holding anything else, so it never deletes a
file it did not write.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flow.errors import InputError

INFO = "synth.json"
JOURNAL = ".synth-files"  # one relative path per line, each written before the file itself
FORMATS = ("mars-sta-synth", "mars-sta-synth-untrimmed")  # synth.json of either generator


class SynthFiles:
    """Claims ``out`` for one run (see the module), then writes each file under a temporary name, recorded first."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[str] = []
        claim(out)
        out.mkdir(parents=True, exist_ok=True)
        self._journal = open(out / JOURNAL, "w", encoding="utf-8")

    def video(self, path: Path, frames: np.ndarray, fps: float) -> None:
        """MJPG in AVI through OpenCV's own muxer (no FFmpeg needed, same bytes every time), renamed into place."""
        self._record(path)
        partial = partial_path(path)
        height, width = frames.shape[1:3]
        writer = cv2.VideoWriter(str(partial), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                 (width, height))
        if not writer.isOpened():
            raise InputError(path, "OpenCV could not open an MJPG video writer here")
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        os.replace(partial, path)

    def text(self, path: Path, text: str) -> None:
        self._record(path)
        _write_text(path, text)

    def finish(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write ``synth.json`` (``info`` and the list of files), last: its presence means the dataset is complete."""
        info = {**info, "files": sorted(self.written)}
        _write_text(self.out / INFO, json.dumps(info, indent=2) + "\n")
        self._journal.close()
        (self.out / JOURNAL).unlink()
        return info

    def _record(self, path: Path) -> None:
        name = path.relative_to(self.out).as_posix()
        self.written.append(name)
        self._journal.write(name + "\n")
        self._journal.flush()
        path.parent.mkdir(parents=True, exist_ok=True)


def partial_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed into place (a video keeps its suffix)."""
    return path.with_name(f".{path.stem}.partial.avi" if path.suffix == ".avi" else f".{path.name}.partial")


def _write_text(path: Path, text: str) -> None:
    partial = partial_path(path)
    partial.write_text(text, encoding="utf-8", newline="\n")
    os.replace(partial, path)


def check_target(out: Path) -> None:
    """Refuse ``out`` unless it is absent, or everything in it is a file an earlier run recorded or a folder holding
    them; writes nothing, so a caller can check before any work."""
    _present_if_own(out)


def claim(out: Path) -> None:
    """``check_target``, then delete the files an earlier run recorded and the folders they leave empty."""
    present = _present_if_own(out)
    for name in sorted(present, key=lambda name: -name.count("/")):  # files, then folders deepest first
        path = present[name]
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()


def _present_if_own(out: Path) -> dict[str, Path]:
    """Everything in ``out`` by relative name, when all of it is an earlier run's; a one-line refusal otherwise."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if not out.is_dir():
        return {}
    recorded = recorded_files(out)
    owned = recorded | {partial_path(Path(name)).as_posix() for name in recorded}
    folders = {parent.as_posix() for name in owned for parent in Path(name).parents if parent != Path(".")}
    present = {path.relative_to(out).as_posix(): path for path in out.rglob("*")}
    real_folder = {name: path.is_dir() and not path.is_symlink() for name, path in present.items()}
    foreign = sorted(name for name in present if not (name in owned and not real_folder[name]
                                                      or name in folders and real_folder[name]))
    if foreign:
        raise InputError(out, _refusal(out, foreign[0]))
    return present


def recorded_files(out: Path) -> set[str]:
    """Every file an earlier run into ``out`` recorded (itself included): its ``synth.json`` and its journal."""
    names = set()
    try:
        info = json.loads((out / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict) and info.get("format") in FORMATS and isinstance(info.get("files"), list):
        names |= {INFO, *(name for name in info["files"] if isinstance(name, str))}
    if (out / JOURNAL).is_file():
        names |= {JOURNAL, *(out / JOURNAL).read_text(encoding="utf-8").splitlines()}
    return {name for name in names if name and ".." not in Path(name).parts and not Path(name).is_absolute()}


def _refusal(out: Path, found: str) -> str:
    """Why ``out`` is refused, and what to do."""
    if (out / INFO).is_file() and INFO not in recorded_files(out):
        return (f"folder is not empty and not a synthetic dataset that this version of synth can rewrite (found "
                f"{found!r}; its {INFO} lists no files): delete the folder or give a new one")
    return (f"folder is not empty and not a synthetic dataset written by synth (found {found!r}, which no "
            f"{INFO} there lists): give a new or empty folder")
