"""Finding a dataset's videos and decoding one into resized frames at a chosen frame rate.

Frames are resized in colour first and converted to gray afterwards (as MARS and denseflow do), so the RGB frames
and the gray frames TV-L1 sees are the same pixels.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# FFmpeg's and OpenCV's own complaints about broken files ("Could not find decoder") would interleave with the
# progress bar; the reason a video failed is recorded in failures.json (or the summary) instead. FFmpeg's level is
# read when OpenCV's FFmpeg backend first opens a file; OpenCV's own when cv2 is imported, which some other module
# may have done already, so it is also set directly. Set either variable to see them.
_QUIET_OPENCV = "OPENCV_LOG_LEVEL" not in os.environ
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")

import cv2  # noqa: E402 - must follow the environment setting above
import numpy as np  # noqa: E402

from flow.errors import InputError, VideoError  # noqa: E402

if _QUIET_OPENCV:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp"}
)

# INTER_AREA averages the source pixels under each target pixel, so downscaling does not alias.
RESIZE_INTERPOLATION = "INTER_AREA"


@dataclass(frozen=True)
class VideoEntry:
    """One video of the dataset: its id (POSIX path below the root, no extension) and where it is."""

    video_id: str
    path: Path


@dataclass(frozen=True)
class VideoList:
    """The dataset root (recorded in the store as ``source_root``) and its videos sorted by id."""

    root: Path
    entries: list[VideoEntry]


def find_videos(source: str | os.PathLike) -> VideoList:
    """Videos of a folder (searched recursively by extension) or of a text file listing one path per line."""
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if source.is_dir():
        root = source.resolve()
        paths = [p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and _visible(p, root)]
        if not paths:
            raise InputError(source, f"no videos found (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    else:
        root, paths = _read_video_list(source)
    entries = [VideoEntry(_video_id(p, root), p) for p in paths]
    _refuse_duplicate_ids(entries, source)
    return VideoList(root, sorted(entries, key=lambda e: e.video_id))


def _visible(path: Path, root: Path) -> bool:
    """Skip hidden files and folders (editor backups, ``.Trash``), which are never dataset videos."""
    return path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_video_list(list_file: Path) -> tuple[Path, list[Path]]:
    """Paths listed one per line, relative to the list's folder or absolute.

    Blank lines and ``#`` comments are skipped; a trailing integer label (UCF101's ``trainlist01.txt`` form
    ``Class/video.avi 1``) is ignored. The root is the list's folder, or the deepest folder holding every listed
    video when some lie outside it.
    """
    base = list_file.resolve().parent
    try:
        lines = list_file.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(list_file, "is neither a folder nor a text file listing videos") from None
    paths = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, label = line.rpartition(" ")
        if name and label.lstrip("-").isdigit() and Path(line).suffix.lower() not in VIDEO_EXTENSIONS:
            line = name.strip()
        path = Path(line)
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(list_file, f"line {number}: {line!r} does not name a video file")
        paths.append(Path(os.path.normpath(base / path)))
    if not paths:
        raise InputError(list_file, "lists no videos")
    root = base
    if any(not p.is_relative_to(base) for p in paths):
        root = Path(os.path.commonpath([base, *[p.parent for p in paths]]))
    return root, paths


def _video_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _refuse_duplicate_ids(entries: list[VideoEntry], source: Path) -> None:
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.video_id in seen:
            raise InputError(source, f"two videos have the id {entry.video_id!r}: {seen[entry.video_id]} "
                                     f"and {entry.path}")
        seen[entry.video_id] = entry.path


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``; never upscales; 0 keeps the native size."""
    short, long = min(width, height), max(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    scaled_long = (2 * long * short_side + short) // (2 * short)  # round half up, in integers
    return (scaled_long, short_side) if width >= height else (short_side, scaled_long)


class VideoReader:
    """Iterates over a video's frames as BGR uint8, resized and, when ``fps`` is given, resampled in time.

    Resampling keeps, for each output time j/fps, the source frame nearest to it (ties to the later one), as
    ffmpeg's ``-r`` does; frames may repeat when ``fps`` is above the native rate.
    """

    def __init__(self, path: str | os.PathLike, short_side: int, fps: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(self.path, "no such file")
        if self.path.stat().st_size == 0:
            raise VideoError(self.path, "empty file (0 bytes)")
        # FFmpeg only: when it cannot read a file, OpenCV's fallback readers try next and print their complaints
        # straight to stderr ("Unexpected element. Expected: LIST"); the reason is recorded in failures.json instead.
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            raise VideoError(self.path, "cannot be opened as a video")
        native = self._capture.get(cv2.CAP_PROP_FPS)
        self.native_fps = float(native) if math.isfinite(native) and native > 0 else 0.0
        if fps is not None and self.native_fps == 0.0:
            raise VideoError(self.path, "frame rate unknown, so it cannot be resampled to the requested fps")
        self._step = None if fps is None or fps == self.native_fps else self.native_fps / fps
        self.fps = float(fps) if fps is not None else self.native_fps
        self._short_side = short_side
        self.size: tuple[int, int] | None = None  # (width, height) after resizing, known from the first frame
        self._native_shape: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        emitted = 0
        index = 0
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            if self._step is None:
                repeats = 1
            else:
                repeats = 0
                while math.floor((emitted + repeats) * self._step + 0.5) == index:
                    repeats += 1
            index += 1
            if repeats:
                frame = self._resize(frame)
                for _ in range(repeats):
                    yield frame
                emitted += repeats
        if index == 0:
            raise VideoError(self.path, "no frame could be decoded")

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if self._native_shape is None:
            self._native_shape = (height, width)
            self.size = output_size(width, height, self._short_side)
        elif (height, width) != self._native_shape:
            raise VideoError(self.path, f"frame size changes from {self._native_shape[1]}x{self._native_shape[0]} "
                                        f"to {width}x{height} within the video")
        if self.size == (width, height):
            return frame
        return cv2.resize(frame, self.size, interpolation=getattr(cv2, RESIZE_INTERPOLATION))

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
