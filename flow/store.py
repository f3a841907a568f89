"""The flow store: a folder of per-video HDF5 files, a manifest and a list of failures.

::

    STORE/
      manifest.json          format, preprocessing (TV-L1 parameters under OpenCV's names), versions, source root
      videos/<video_id>.h5   one finished video per file, written under a temporary name and renamed into place
      failures.json          videos that could not be extracted, with their reason
      .lock                  held (fcntl) by a running extraction or merge

HDF5 files are not crash-safe while open for writing, so nothing ever writes to a file that is already in place: a
video is done exactly when its file exists under its final name, and a crash can only leave a temporary file behind.

Per-video file: ``frames`` (T,) variable-length uint8, each a JPEG of one RGB frame (encoded from OpenCV's BGR);
``flow`` uint8 (T−1, H, W, 2) quantised (x, y) codes, one gzip chunk per frame with a Fletcher-32 checksum; flow k
is between frames k and k+1. Attributes: ``fps``, ``native_fps``, ``height``, ``width``, ``bound``,
``quantization``, ``frame_encoding``, ``jpeg_quality``, ``source`` (path below the source root), ``source_size``,
``source_mtime``, ``source_sha256`` (of the source's bytes; stores written before it was recorded lack it).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import cv2
import h5py
import numpy as np

from flow.errors import InputError, StoreLockedError, write_error
from flow.quantize import dequantize

FORMAT = "mars-sta-flow-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FAILURES = "failures.json"
LOCK = ".lock"
VIDEOS = "videos"
SUFFIX = ".h5"
TEMP_MARK = ".tmp-"  # temporary names are "<id>.h5.tmp-<pid>"

FLOW_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "fletcher32": True}
# Video files are written in HDF5 1.10's object formats (readable by HDF5 >= 1.10, bundled by every supported
# h5py): their chunk indexes make a file 5-13 KB smaller than HDF5's default 1.8 formats (docs/flow-store.md).
# Files of either format read alike; stores written before hold 1.8-format files.
FILE_FORMAT = ("v110", "v110")
FRAME_ID_CHUNK = 64  # frames are variable-length: a chunk holds 64 small heap references, not the JPEG bytes

REQUIRED_ATTRS = ("fps", "height", "width", "bound", "quantization", "frame_encoding", "source", "source_size",
                  "source_mtime")
NUMBER = (int, float)
ATTR_TYPES: dict[str, type | tuple[type, ...]] = {
    "fps": NUMBER, "native_fps": NUMBER, "height": int, "width": int, "bound": NUMBER, "quantization": str,
    "frame_encoding": str, "jpeg_quality": int, "source": str, "source_size": int, "source_mtime": NUMBER,
    "source_sha256": str,
}


def video_path(root: str | os.PathLike, video_id: str) -> Path:
    """Where a finished video lives in the store."""
    parts = video_id.split("/")
    if not video_id or any(part in ("", ".", "..") for part in parts):
        raise InputError(root, f"invalid video id {video_id!r}")
    return Path(root, VIDEOS, *parts[:-1], parts[-1] + SUFFIX)


def is_temporary(path: Path) -> bool:
    return TEMP_MARK in path.name


def is_dangling_link(path: Path) -> bool:
    """A symbolic link that leads to no file: broken, or a loop. ``Path.is_file`` is False for both, so a listing
    of files alone would skip such a video without a word."""
    return path.is_symlink() and not path.exists()


DANGLING_LINK = "is a symbolic link that leads to no file (broken, or a loop); replace it with the video file"


def iter_store_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every file below ``STORE/videos``, finished or not, dangling links included (reading them fails loudly)."""
    folder = Path(root, VIDEOS)
    if folder.is_dir():
        yield from (p for p in folder.rglob("*") if p.is_file() or is_dangling_link(p))


def finished_ids(root: str | os.PathLike) -> list[str]:
    """Ids of the videos whose file is in place, sorted."""
    folder = Path(root, VIDEOS)
    return sorted(p.relative_to(folder).as_posix()[: -len(SUFFIX)]
                  for p in iter_store_files(root) if p.name.endswith(SUFFIX))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (videos can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_change(video_file: Path, source: Path, compare_content: bool = False) -> str | None:
    """Why a finished video no longer matches its source (size, mtime, or with ``compare_content`` its SHA-256
    as recorded at extraction), or None when it still does. An unreadable video file counts as changed."""
    try:
        with h5py.File(video_file, "r") as handle:
            recorded = {key: video_attr(handle.attrs, key) for key in ("source_size", "source_mtime", "source_sha256")}
    except (OSError, InputError):
        return "its store file cannot be read"
    stat = os.stat(source)
    if recorded["source_size"] != stat.st_size:
        return f"size {recorded['source_size']} -> {stat.st_size} bytes"
    if recorded["source_mtime"] != stat.st_mtime:
        return "modified since extraction"
    if compare_content and recorded["source_sha256"] != file_sha256(source):
        return "content differs from the extracted one" if recorded["source_sha256"] else "no content hash recorded"
    return None


def remove_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete what interrupted writers left behind; only call while holding the store's lock."""
    stale = [p for p in iter_store_files(root) if is_temporary(p)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON under a temporary name, flush it to disk and rename it into place."""
    temp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(temp, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        temp.unlink(missing_ok=True)


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a store; InputError when ``root`` is not a store."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise InputError(root, "is not a flow store (not a folder)" if root.exists() else "no such flow store")
    manifest = read_json_manifest(root, "flow store")
    if manifest.get("format") != FORMAT:
        raise InputError(path, f"is not a flow store manifest (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(path, f"store format version {manifest.get('format_version')!r} is not supported "
                               f"(this version reads {FORMAT_VERSION})")
    if not isinstance(manifest.get("preprocessing"), dict) or not isinstance(manifest.get("source_root"), str):
        raise InputError(path, "is not a complete flow store manifest ('preprocessing' must be a table and "
                               "'source_root' a path)")
    return manifest


def read_json_manifest(root: str | os.PathLike, kind: str) -> dict[str, Any]:
    """The JSON object in ``root``'s manifest (of a flow or feature store, named by ``kind`` in errors)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise InputError(root, f"is not a {kind} (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(path, f"is not a {kind} manifest (not a JSON object)")
    return manifest


def read_failures(root: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{video_id: {"source": ..., "reason": ...}}`` from failures.json (empty when there is none)."""
    path = Path(root, FAILURES)
    if not path.is_file():
        return {}
    try:
        return {item["video_id"]: {"source": item["source"], "reason": item["reason"]}
                for item in json.loads(path.read_text())}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise InputError(path, f"is not a valid failure list ({exc})") from None


def write_failures(root: str | os.PathLike, failures: dict[str, dict[str, str]]) -> None:
    write_json_atomic(Path(root, FAILURES),
                      [{"video_id": vid, **failures[vid]} for vid in sorted(failures)])


class StoreLock:
    """An fcntl lock on ``STORE/.lock``: exclusive for a writer, shared for a reader that needs the store to hold
    still (merge reading its inputs). The kernel drops the lock when its holder dies, however it dies, so a crash
    never leaves a store locked.
    """

    def __init__(self, root: str | os.PathLike, shared: bool = False) -> None:
        self.root = Path(root)
        self.shared = shared
        self._handle: IO[str] | None = None

    def __enter__(self) -> StoreLock:
        if self.shared:
            if not (self.root / LOCK).exists():  # no extraction ever ran here, so none is running
                return self
            handle = open(self.root / LOCK)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / LOCK, "a+")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise StoreLockedError(self.root, "another extraction or merge is writing to this store"
                                              + (f" (process {holder})" if holder else "")
                                              + "; wait for it to finish") from None
        if not self.shared:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def refuse_foreign_folder(out: Path) -> None:
    """Never write into a folder that holds something other than a flow store (the videos folder, say)."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and not (out / MANIFEST).exists():
        if any(p.name != LOCK for p in out.iterdir()):
            raise InputError(out, f"is not empty and not a flow store (no {MANIFEST}); give a new folder")


def preprocessing_differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """``key a (store) vs b (now)`` for every preprocessing setting that differs (nested keys as ``tvl1.warps``)."""
    differences = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += preprocessing_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key} {old!r} (store) vs {new!r} (now)")
    return differences


class VideoFileWriter:
    """Builds one video's file in memory; ``commit()`` writes it under a temporary name and renames it into place.

    HDF5 itself never writes to disk: after a failed write (a full disk, ``ulimit -f``) the library is left in a
    state where the file cannot be closed and the process crashes on exit, whereas writing the finished file image
    fails with a plain OSError. Memory holds the compressed file only (JPEG frames, gzip flow: a few MB for a
    UCF-101 video). The temporary file is created when the video starts, so a running writer shows on disk.
    """

    def __init__(self, final: Path, attrs: dict[str, Any]) -> None:
        self.final = final
        self.temp = final.with_name(f"{final.name}{TEMP_MARK}{os.getpid()}")
        final.parent.mkdir(parents=True, exist_ok=True)
        self.temp.touch()
        self._file = h5py.File(self.temp, "w", driver="core", backing_store=False, libver=FILE_FORMAT)
        self._file.attrs.update(attrs)
        self._frames = self._file.create_dataset("frames", shape=(0,), maxshape=(None,),
                                                 dtype=h5py.vlen_dtype(np.uint8), chunks=(FRAME_ID_CHUNK,))
        self._flow: h5py.Dataset | None = None

    @property
    def num_frames(self) -> int:
        return self._frames.shape[0]

    def add_jpeg(self, data: bytes | np.ndarray) -> None:
        """Append one frame as its JPEG bytes, stored as given."""
        index = self._frames.shape[0]
        self._frames.resize((index + 1,))
        self._frames[index] = np.frombuffer(data, np.uint8)

    def add_flow(self, codes: np.ndarray) -> None:
        if self._flow is None:
            self._flow = self._file.create_dataset("flow", shape=(0, *codes.shape), maxshape=(None, *codes.shape),
                                                   dtype=np.uint8, chunks=(1, *codes.shape), **FLOW_COMPRESSION)
        index = self._flow.shape[0]
        self._flow.resize(index + 1, axis=0)
        self._flow[index] = codes

    def commit(self, height: int, width: int) -> None:
        """Write the file, flush it to disk and rename it into place: from here on the video counts as done."""
        self._file.attrs["height"] = height
        self._file.attrs["width"] = width
        self._file.flush()
        image = self._file.id.get_file_image()
        self._file.close()
        try:
            with open(self.temp, "wb") as handle:
                handle.write(image)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise write_error(self.final, exc) from None
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self.temp.unlink(missing_ok=True)


def check_video_file(handle: h5py.File, path: Path) -> tuple[int, int, int]:
    """(T, H, W) of an open video file, after checking its datasets and attributes; InputError if malformed."""
    attrs = dict(handle.attrs.items())  # read once: each ``handle.attrs`` access reopens the root group
    missing = [name for name in ("frames", "flow") if name not in handle]
    missing += [f"attribute {name}" for name in REQUIRED_ATTRS if name not in attrs]
    if missing:
        raise InputError(path, f"not a complete flow-store video (missing {', '.join(missing)})")
    for name in ATTR_TYPES:
        if name in attrs:
            video_attr(attrs, name, path)
    frames, flow = handle["frames"], handle["flow"]
    height, width = video_attr(attrs, "height"), video_attr(attrs, "width")
    if frames.ndim != 1 or h5py.check_vlen_dtype(frames.dtype) != np.uint8:
        raise InputError(path, f"'frames' must be (T,) variable-length uint8 JPEG bytes, found {frames.dtype} "
                               f"{frames.shape}")
    if video_attr(attrs, "frame_encoding") != "jpeg":
        raise InputError(path, f"unknown frame encoding {video_attr(attrs, 'frame_encoding')!r}")
    count = frames.shape[0]
    if count < 2:
        raise InputError(path, f"holds {count} frame(s); a video needs at least 2")
    if flow.dtype != np.uint8 or flow.shape != (count - 1, height, width, 2):
        raise InputError(path, f"'flow' must be uint8 {(count - 1, height, width, 2)} for {count} frames of "
                               f"{width}x{height}, found {flow.dtype} {flow.shape}")
    return count, height, width


class FlowStore:
    """Read access to a flow store: frames, flow and flow codes of any window of a video.

    Files are opened on first use and kept open in a small cache; the cache is dropped when the object is pickled
    or used in a forked child, so each DataLoader worker opens its own handles (h5py handles cannot cross processes).
    """

    def __init__(self, path: str | os.PathLike, max_open_files: int = 32) -> None:
        self.root = Path(path)
        self.manifest: dict[str, Any] = read_manifest(self.root)
        self.max_open_files = max_open_files
        self._ids: list[str] | None = None
        self._open: OrderedDict[str, tuple[h5py.File, int, int, int]] = OrderedDict()
        self._pid = os.getpid()

    # -- store-level facts -------------------------------------------------------------------------------------
    @property
    def preprocessing(self) -> dict[str, Any]:
        """Everything that decides the stored arrays; equal dicts mean stores that can be mixed."""
        return self.manifest["preprocessing"]

    @property
    def bound(self) -> float:
        return float(self.preprocessing["bound"])

    @property
    def quantization(self) -> str:
        return self.preprocessing["quantization"]

    @property
    def source_root(self) -> Path:
        """The videos folder the store was extracted from (``splits/`` normally sits beside it)."""
        return Path(self.manifest["source_root"])

    def video_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = finished_ids(self.root)
        return list(self._ids)

    def __len__(self) -> int:
        return len(self.video_ids())

    def __contains__(self, video_id: object) -> bool:
        """Listed in the store, as ``video_ids`` lists it: a dangling link is there, and fails when read."""
        if not isinstance(video_id, str):
            return False
        path = video_path(self.root, video_id)
        return path.is_file() or is_dangling_link(path)

    # -- one video ---------------------------------------------------------------------------------------------
    def path_of(self, video_id: str) -> Path:
        return video_path(self.root, video_id)

    def num_frames(self, video_id: str) -> int:
        return self._handle(video_id)[1]

    def frame_size(self, video_id: str) -> tuple[int, int]:
        """(height, width) of the stored frames and flow."""
        return self._handle(video_id)[2:]

    def attrs(self, video_id: str) -> dict[str, Any]:
        handle = self._handle(video_id)[0]
        return {key: _plain(value) for key, value in handle.attrs.items()}

    def frames(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """RGB frames ``start:stop`` as uint8 (n, H, W, 3); only those frames are read and decoded."""
        handle, count, height, width = self._handle(video_id)
        first, last, _ = slice(start, stop).indices(count)
        encoded = self._read(video_id, handle["frames"], first, last)
        out = np.empty((len(encoded), height, width, 3), np.uint8)
        for k, data in enumerate(encoded):
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != (height, width, 3):
                raise InputError(self.path_of(video_id), f"frame {first + k} is not a {width}x{height} JPEG")
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[k])
        return out

    def flow_codes(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Stored uint8 codes of flow ``start:stop`` (flow k is between frames k and k+1), (n, H, W, 2)."""
        handle, count = self._handle(video_id)[:2]
        first, last, _ = slice(start, stop).indices(count - 1)
        return self._read(video_id, handle["flow"], first, last)

    def flow(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Flow ``start:stop`` in pixels as float32 (n, H, W, 2), channel 0 = x, 1 = y."""
        return dequantize(self.flow_codes(video_id, start, stop), self.bound, self.quantization)

    # -- handles -----------------------------------------------------------------------------------------------
    def _read(self, video_id: str, dataset: h5py.Dataset, first: int, last: int) -> np.ndarray:
        try:
            return dataset[first:max(first, last)]
        except OSError as exc:
            raise InputError(self.path_of(video_id), f"damaged data in '{dataset.name[1:]}' ({exc})") from None

    def _handle(self, video_id: str) -> tuple[h5py.File, int, int, int]:
        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use
            self._open = OrderedDict()
            self._pid = os.getpid()
        if video_id in self._open:
            self._open.move_to_end(video_id)
            return self._open[video_id]
        path = self.path_of(video_id)
        if is_dangling_link(path):
            raise InputError(path, DANGLING_LINK)
        if not path.is_file():
            raise InputError(self.root, f"has no video {video_id!r}")
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(path, f"cannot be read as HDF5 (truncated or damaged?): {exc}") from None
        try:
            entry = (handle, *check_video_file(handle, path))
        except BaseException:
            handle.close()
            raise
        self._open[video_id] = entry
        while len(self._open) > self.max_open_files:
            self._open.popitem(last=False)[1][0].close()
        return entry

    def close(self) -> None:
        for handle, *_ in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"FlowStore({str(self.root)!r})"


def video_attr(attrs: Mapping[str, Any], name: str, path: Path | None = None) -> Any:
    """Attribute ``name`` as a plain value of the type the format gives it; None when absent or (without ``path``)
    of another type; with ``path``, another type is an InputError naming the file."""
    value = _plain(attrs[name]) if name in attrs else None
    expected = ATTR_TYPES[name]
    if value is None or (isinstance(value, expected) and not isinstance(value, bool)):
        return value
    if path is None:
        return None
    kinds = expected if isinstance(expected, tuple) else (expected,)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:39] + "…"
    raise InputError(path, f"attribute {name} must be {' or '.join(k.__name__ for k in kinds)}, found "
                           f"{type(value).__name__} {shown}")


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python types."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
