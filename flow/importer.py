"""The import job: folders of already extracted JPEG frames (and flow JPEGs) in, a flow store out.

Datasets often arrive as frames rather than videos: MARS's ``%05d.jpg`` with ``TVL1jpg_{x,y}_%05d.jpg``, mmaction2 /
denseflow's ``img_%05d.jpg`` with ``flow_{x,y}_%05d.jpg``, or 3D-ResNets' ``image_%05d.jpg`` (RGB only). Importing
writes the same per-video files, manifest, failure list and lock as ``extract-flow``, so every later stage reads the
result unchanged. Frames keep their JPEG bytes as they are (the store's frames are JPEG too), so an imported frame
decodes to exactly what the source file decodes to; flow JPEGs are decoded to their uint8 codes and stored as
``extract-flow`` stores its own. The manifest records the source layout and how that flow was quantised, so
``FlowStore.flow`` dequantises it correctly and an imported store can be told from an extracted one.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flow import extract
from flow import store as layout
from flow.errors import InputError, VideoError
from flow.extract import VideoResult, available_cpus, library_versions

ORIGIN = "import-frames"  # manifest["origin"] of an imported store (extracted stores have none)
NO_QUANTIZATION = "none"  # the quantisation recorded for an RGB-only store, which has no flow codes


@dataclass(frozen=True)
class FrameLayout:
    """A naming scheme of extracted frames: file prefixes before ``<number>.jpg`` and the flow's usual coding."""

    name: str
    frame_prefix: str
    flow_prefixes: tuple[str, str] | None  # (x, y); None for an RGB-only layout
    quantization: str | None  # how that layout's tools quantise flow; None when it has no flow

    @property
    def has_flow(self) -> bool:
        return self.flow_prefixes is not None

    @property
    def prefixes(self) -> tuple[str, ...]:
        return (self.frame_prefix, *(self.flow_prefixes or ()))

    def describe(self) -> str:
        names = [f"{prefix}%05d.jpg" for prefix in self.prefixes]
        return f"{self.name} ({', '.join(names)}{'' if self.has_flow else ', RGB only'})"


LAYOUTS: dict[str, FrameLayout] = {
    "mars": FrameLayout("mars", "", ("TVL1jpg_x_", "TVL1jpg_y_"), "truncate"),
    "mmaction2": FrameLayout("mmaction2", "img_", ("flow_x_", "flow_y_"), "round"),
    "3d-resnets": FrameLayout("3d-resnets", "image_", None, None),
}
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)\.jpg$")


@dataclass
class ImportConfig:
    """Settings of ``import-frames``; the flow's quantisation defaults to what the layout's tools do."""

    layout: str = "auto"  # auto | mars | mmaction2 | 3d-resnets
    bound: float = 20.0  # the ±bound (pixels) the source's flow codes span
    quantization: str | None = None  # round | truncate; None: the layout's own (MARS truncates, denseflow rounds)
    workers: int = 0  # worker processes; 0 = every CPU this process may use
    allow_failures: bool = False  # exit status 0 even when some videos could not be imported

    def __post_init__(self) -> None:
        problems = []
        if self.layout != "auto" and self.layout not in LAYOUTS:
            problems.append(f"layout must be auto or one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if not self.bound > 0:
            problems.append(f"bound must be > 0, got {self.bound}")
        if self.quantization is not None and self.quantization not in extract.QUANTIZATIONS:
            problems.append(f"quantization must be one of {', '.join(extract.QUANTIZATIONS)}, "
                            f"got {self.quantization!r}")
        if self.workers < 0:
            problems.append(f"workers must be ≥ 0, got {self.workers}")
        if problems:
            raise InputError(None, "import config: " + "; ".join(problems))

    def preprocessing(self, frames: FrameLayout) -> dict[str, Any]:
        """What decides the stored arrays of an imported store, in the keys an extracted store's manifest uses."""
        if frames.has_flow:
            quantization = self.quantization or frames.quantization
            flow_encoding = "uint8 codes decoded from the source's flow JPEGs, HDF5 gzip level 4, one chunk per frame"
        else:
            if self.quantization is not None:
                raise InputError(None, f"--quantization {self.quantization}: the {frames.name} layout has no flow")
            quantization, flow_encoding = NO_QUANTIZATION, "none: RGB frames only"
        return {
            "source_layout": frames.name,
            "short_side": None,  # whatever size the source frames have
            "fps": None,
            "bound": float(self.bound),
            "quantization": quantization,
            "rgb_only": not frames.has_flow,
            "frame_encoding": "jpeg",
            "jpeg_quality": None,  # the source's JPEG bytes, kept as they are
            "flow_encoding": flow_encoding,
        }


@dataclass
class ImportSummary:
    """What one run did. ``failures`` maps video id to its source folder and reason (this run's failures only)."""

    store: str
    layout: str
    detected: bool
    quantization: str
    selected: int
    imported: int
    skipped: int
    frames: int
    seconds: float
    workers: int
    failures: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportJob:
    """One video folder to import (picklable: it crosses to a spawned worker)."""

    video_id: str
    source: str
    relative_source: str
    final: str
    frame_prefix: str
    flow_prefixes: tuple[str, str] | None
    bound: float
    quantization: str
    files: int


# -- the public entry points ------------------------------------------------------------------------------------
def has_flow(preprocessing: dict[str, Any]) -> bool:
    """False for a store imported from an RGB-only layout; flow-needing stages refuse such a store."""
    return not preprocessing.get("rgb_only", False)


def is_imported(manifest: dict[str, Any]) -> bool:
    """Whether a store came from ``import-frames`` rather than ``extract-flow``."""
    return manifest.get("origin") == ORIGIN


def detect_layout(folders: dict[Path, list[str]], root: Path) -> FrameLayout:
    """The one layout whose file names the frame folders use; an error naming every candidate otherwise."""
    found = {name: [folder for folder, files in folders.items() if _matches(files, frames)]
             for name, frames in LAYOUTS.items()}
    found = {name: hits for name, hits in found.items() if hits}
    if not found:
        raise InputError(root, "no frame folders found (looked for "
                               + "; ".join(frames.describe() for frames in LAYOUTS.values()) + ")")
    if len(found) > 1:
        candidates = "; ".join(f"{LAYOUTS[name].describe()}: {len(hits)} folder(s), e.g. "
                               f"{hits[0].relative_to(root).as_posix() or '.'}" for name, hits in found.items())
        raise InputError(root, f"ambiguous frame layout, pass --layout: {candidates}")
    return LAYOUTS[next(iter(found))]


def scan_folders(root: str | os.PathLike) -> dict[Path, list[str]]:
    """Every non-hidden folder below ``root`` that holds numbered ``.jpg`` files, with its file names."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder" if not root.exists() else "is not a folder of frame folders")
    folders: dict[Path, list[str]] = {}
    for current, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        if any(_NUMBERED.match(name) for name in files):
            folders[Path(current)] = sorted(files)
    return folders


def import_frames(config: ImportConfig, root: str | os.PathLike, out: str | os.PathLike, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> ImportSummary:
    """Import every frame folder of ``root`` that ``out`` does not hold yet."""
    started = time.perf_counter()
    root = Path(root).resolve()
    folders = scan_folders(root)
    if config.layout == "auto":
        frames = detect_layout(folders, root)
    else:
        frames = LAYOUTS[config.layout]
    selected = {folder: files for folder, files in folders.items() if _matches(files, frames)}
    if not selected:
        raise InputError(root, f"no frame folders in the {frames.describe()} layout")
    if root in selected:
        raise InputError(root, "holds frames itself; give the folder above the video folders")
    preprocessing = config.preprocessing(frames)
    if log:
        how = "detected" if config.layout == "auto" else "as given"
        coded = {"round": "rounded", "truncate": "truncated"}.get(preprocessing["quantization"])
        flow = (f"flow codes {coded} over ±{config.bound:g} px" if frames.has_flow
                else "no flow: an RGB-only store")
        log(f"layout {frames.describe()} ({how}); {len(selected)} video folders; {flow}")
    out = Path(out)
    layout.refuse_foreign_folder(out)
    with layout.StoreLock(out):
        _write_or_check_manifest(out, root, preprocessing, config)
        layout.remove_temporaries(out)
        done = set(layout.finished_ids(out))
        all_jobs = [_job(folder, files, root, out, frames, preprocessing) for folder, files in selected.items()]
        jobs = sorted((job for job in all_jobs if job.video_id not in done), key=lambda job: -job.files)
        workers = max(1, min(config.workers or available_cpus(), len(jobs)))
        results = extract.run_with_progress(jobs, import_video, workers, progress, "import-frames", "frames")
        layout.remove_temporaries(out)
        failures = extract._updated_failures(out, {job.video_id for job in all_jobs}, results, jobs)
    return ImportSummary(
        store=str(out), layout=frames.name, detected=config.layout == "auto",
        quantization=preprocessing["quantization"], selected=len(all_jobs),
        imported=sum(r.failure is None for r in results), skipped=len(all_jobs) - len(jobs),
        frames=sum(r.pairs for r in results), seconds=round(time.perf_counter() - started, 3), workers=workers,
        failures=failures,
    )


def format_summary(summary: ImportSummary) -> str:
    """A few lines for the terminal, failures with their reasons."""
    rate = summary.frames / summary.seconds if summary.seconds else 0.0
    lines = [f"{summary.store}: {summary.imported} imported, {summary.skipped} already done, "
             f"{len(summary.failures)} failed of {summary.selected} video folders ({summary.layout} layout); "
             f"{summary.frames} frames in {summary.seconds:.1f} s ({rate:.0f} frames/s, {summary.workers} workers)"]
    return "\n".join(lines + extract.failure_lines(summary.store, summary.failures))


# -- manifest and jobs ------------------------------------------------------------------------------------------
def _matches(files: list[str], frames: FrameLayout) -> bool:
    return any(_numbered(name, frames.prefixes) is not None for name in files)


def _numbered(name: str, prefixes: tuple[str, ...]) -> tuple[str, int] | None:
    """(prefix, number) when ``name`` is ``<prefix><digits>.jpg`` for one of ``prefixes``."""
    match = _NUMBERED.match(name)
    if match and match["prefix"] in prefixes:
        return match["prefix"], int(match["number"])
    return None


def _write_or_check_manifest(out: Path, root: Path, preprocessing: dict[str, Any], config: ImportConfig) -> None:
    if (out / layout.MANIFEST).exists():
        manifest = layout.read_manifest(out)
        differences = layout.preprocessing_differences(manifest["preprocessing"], preprocessing)
        if differences:
            raise InputError(out, "holds other preprocessing (another layout, bound or quantisation); use another "
                                  "--out or the same settings: " + "; ".join(differences))
        if manifest["source_root"] != str(root):
            raise InputError(out, f"holds videos of {manifest['source_root']}, not of {root}; use another --out")
        return
    layout.write_json_atomic(out / layout.MANIFEST, {
        "format": layout.FORMAT,
        "format_version": layout.FORMAT_VERSION,
        "origin": ORIGIN,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_root": str(root),
        "preprocessing": preprocessing,
        "import": {"layout": preprocessing["source_layout"], "layout_detected": config.layout == "auto",
                   "quantization_from": "--quantization" if config.quantization else "the layout's default"},
        "versions": library_versions(),
    })


def _job(folder: Path, files: list[str], root: Path, out: Path, frames: FrameLayout,
         preprocessing: dict[str, Any]) -> ImportJob:
    video_id = folder.relative_to(root).as_posix()
    return ImportJob(
        video_id=video_id, source=str(folder), relative_source=video_id, final=str(layout.video_path(out, video_id)),
        frame_prefix=frames.frame_prefix, flow_prefixes=frames.flow_prefixes, bound=float(preprocessing["bound"]),
        quantization=preprocessing["quantization"], files=len(files),
    )


# -- running the jobs -------------------------------------------------------------------------------------------
def import_video(job: ImportJob) -> VideoResult:
    """Check one folder (numbering, counts, JPEG files, sizes) and write its store file; a problem fails the video."""
    return extract.video_result(job, _import)


class _ImportWriter(layout.VideoFileWriter):
    """The store's video writer, able to write a store file of RGB frames only."""

    def add_no_flow(self, height: int, width: int) -> None:
        """The ``flow`` dataset a store file must have, with no chunk ever written (it costs no space)."""
        shape = (height, width, 2)
        self._file.create_dataset("flow", shape=(self.num_frames - 1, *shape), maxshape=(None, *shape),
                                  dtype=np.uint8, chunks=(1, *shape), **layout.FLOW_COMPRESSION)


def _import(job: ImportJob) -> int:
    folder = Path(job.source)
    frame_names = _sequence(folder, job.frame_prefix)
    flow_names = _flow_sequences(folder, job, len(frame_names))
    files = [folder / name for name in frame_names + [n for pair in flow_names for n in pair]]
    stats = [path.stat() for path in files]
    attrs = {"fps": 0.0, "bound": job.bound, "quantization": job.quantization, "frame_encoding": "jpeg",
             "source": job.relative_source, "source_size": sum(s.st_size for s in stats),
             "source_mtime": max(s.st_mtime for s in stats)}
    writer = _ImportWriter(Path(job.final), attrs)
    try:
        height, width = _add_frames(writer, folder, frame_names)
        if flow_names:
            for x_name, y_name in flow_names:
                codes = np.stack([_decode(folder / x_name, cv2.IMREAD_GRAYSCALE, (height, width)),
                                  _decode(folder / y_name, cv2.IMREAD_GRAYSCALE, (height, width))], axis=-1)
                writer.add_flow(codes)
        else:
            writer.add_no_flow(height, width)
        writer.commit(height, width)
    except BaseException:
        writer.abort()
        raise
    return len(frame_names)


def _add_frames(writer: _ImportWriter, folder: Path, names: list[str]) -> tuple[int, int]:
    """Store each frame's JPEG bytes after checking that it decodes and has the first frame's size."""
    size: tuple[int, int] | None = None
    for name in names:
        data = _jpeg_bytes(folder / name)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoError(folder, f"{name} cannot be decoded")
        height, width = image.shape[:2]
        if size is None:
            size = (height, width)
        elif (height, width) != size:
            raise VideoError(folder, f"{name} is {width}x{height}, the first frame {size[1]}x{size[0]}")
        writer.add_jpeg(data)
    assert size is not None, "_flow_sequences refuses a folder of fewer than 2 frames before the frames are read"
    return size


def _sequence(folder: Path, prefix: str) -> list[str]:
    """The file names ``<prefix><n>.jpg`` in numbering order; a gap or a doubled number fails the video."""
    numbered: dict[int, str] = {}
    for entry in os.scandir(folder):
        found = _numbered(entry.name, (prefix,))
        if found is None:
            continue
        number = found[1]
        if number in numbered:
            raise VideoError(folder, f"{numbered[number]} and {entry.name} both have number {number}")
        numbered[number] = entry.name
    numbers = sorted(numbered)
    for previous, current in zip(numbers, numbers[1:]):
        if current != previous + 1:
            raise VideoError(folder, f"{prefix}{previous + 1:05d}.jpg is missing (numbering jumps from {previous} "
                                     f"to {current})")
    return [numbered[n] for n in numbers]


def _flow_sequences(folder: Path, job: ImportJob, frames: int) -> list[tuple[str, str]]:
    """(x, y) file names of flow 0..T−2; a tool that writes one field per frame has its last field dropped."""
    if frames < 2:
        raise VideoError(folder, f"has {frames} frame(s) ({job.frame_prefix}%05d.jpg); a video needs at least 2")
    if job.flow_prefixes is None:
        return []
    x_prefix, y_prefix = job.flow_prefixes
    xs, ys = _sequence(folder, x_prefix), _sequence(folder, y_prefix)
    if not xs and not ys:
        raise VideoError(folder, f"has no flow ({x_prefix}%05d.jpg, {y_prefix}%05d.jpg)")
    if len(xs) != len(ys):
        raise VideoError(folder, f"has {len(xs)} flow x files ({x_prefix}*.jpg) but {len(ys)} flow y files "
                                 f"({y_prefix}*.jpg)")
    if _number(xs[0]) != _number(ys[0]):
        raise VideoError(folder, f"flow x starts at {xs[0]}, flow y at {ys[0]}")
    if len(xs) not in (frames - 1, frames):
        raise VideoError(folder, f"has {frames} frames but {len(xs)} flow fields (expected {frames - 1}, one "
                                 "between each two frames)")
    return list(zip(xs, ys))[: frames - 1]


def _number(name: str) -> int:
    match = _NUMBERED.match(name)
    assert match is not None, "_sequence lists only numbered names"
    return int(match["number"])


def _jpeg_bytes(path: Path) -> bytes:
    """The file's bytes, if they look like one whole JPEG (start and end markers)."""
    data = path.read_bytes()
    if not data.startswith(b"\xff\xd8\xff"):
        raise VideoError(path.parent, f"{path.name} is not a JPEG file")
    if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise VideoError(path.parent, f"{path.name} is a truncated JPEG (no end marker)")
    return data


def _decode(path: Path, flags: int, size: tuple[int, int]) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(_jpeg_bytes(path), np.uint8), flags)
    if image is None:
        raise VideoError(path.parent, f"{path.name} cannot be decoded")
    if image.shape[:2] != size:
        raise VideoError(path.parent, f"{path.name} is {image.shape[1]}x{image.shape[0]}, the frames "
                                      f"{size[1]}x{size[0]}")
    return image

