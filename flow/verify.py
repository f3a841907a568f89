"""Check a flow store file by file: what ``verify-store`` runs before a long training job relies on it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py

from flow import store as layout
from flow.errors import InputError, StoreLockedError

BLOCK = 64  # frames read at a time, so checking a long video needs little memory


@dataclass
class VerifyReport:
    store: str
    videos: int = 0
    frames: int = 0
    failures: int = 0
    problems: list[str] = field(default_factory=list)
    tvl1: str = ""  # how the flow was computed: backend, device, parameters (from the manifest)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: str | os.PathLike, read_data: bool = True) -> VerifyReport:
    """Open every video file and check datasets, shapes and attributes against the manifest.

    With ``read_data`` every flow chunk is read (HDF5 checks its Fletcher-32 sum) and every JPEG frame decoded.
    """
    root = Path(path)
    report = VerifyReport(str(root))
    manifest = _manifest_or_problem(root, report)
    if manifest is not None:
        report.tvl1 = describe_tvl1(manifest.get("preprocessing", {}))
    try:
        with layout.StoreLock(root, shared=True):
            pass
    except StoreLockedError:
        report.problems.append(f"{root}: an extraction or merge is writing to it right now")
    for file in layout.iter_store_files(root):
        if layout.is_temporary(file):
            report.problems.append(f"{file}: temporary file of an interrupted extraction "
                                   "(rerun extract-flow to redo that video)")
        elif not file.name.endswith(layout.SUFFIX):
            report.problems.append(f"{file}: not a video file of this store")
    for video_id in layout.finished_ids(root):
        file = layout.video_path(root, video_id)
        try:
            report.frames += verify_video(file, manifest, read_data)
            report.videos += 1
        except InputError as exc:
            report.problems.append(str(exc))
        except OSError as exc:
            report.problems.append(f"{file}: cannot be read ({exc})")
    try:
        report.failures = len(layout.read_failures(root))
    except InputError as exc:
        report.problems.append(str(exc))
    return report


def describe_tvl1(preprocessing: dict) -> str:
    """One line: backend, device and every TV-L1 parameter under OpenCV's name, enough to recompute the flow.

    Empty for a store whose flow was imported rather than computed here (its manifest names no TV-L1).
    """
    if "tvl1" not in preprocessing:
        return ""
    params = " ".join(f"{name}={value}" for name, value in preprocessing.get("tvl1", {}).items())
    return (f"{preprocessing.get('tvl1_backend', 'opencv')} on {preprocessing.get('tvl1_device', 'cpu')} "
            f"({preprocessing.get('tvl1_class')}, preset {preprocessing.get('tvl1_preset')}): {params}")


def _manifest_or_problem(root: Path, report: VerifyReport) -> dict | None:
    """The manifest; a store folder without a valid one is a problem to report, anything else is not a store."""
    try:
        return layout.read_manifest(root)
    except InputError as exc:
        if not (root / layout.VIDEOS).is_dir():
            raise
        report.problems.append(str(exc))
        return None


def verify_video(file: Path, manifest: dict | None, read_data: bool = True) -> int:
    """Frames of one video file after checking it against the store's manifest; InputError naming what is wrong."""
    if layout.is_dangling_link(file):
        raise InputError(file, layout.DANGLING_LINK)
    try:
        handle = h5py.File(file, "r")
    except OSError as exc:
        raise InputError(file, f"cannot be read as HDF5 (truncated or damaged?): {exc}") from None
    with handle:
        count, height, width = layout.check_video_file(handle, file)
        if manifest is not None:
            preprocessing = manifest["preprocessing"]
            for key in ("bound", "quantization"):
                if layout.video_attr(handle.attrs, key) != preprocessing.get(key):
                    raise InputError(file, f"{key} {layout.video_attr(handle.attrs, key)!r} differs from the "
                                           f"manifest's {preprocessing.get(key)!r}")
            short_side = preprocessing.get("short_side")
            if isinstance(short_side, int) and short_side and min(height, width) > short_side:
                raise InputError(file, f"frames are {width}x{height}, larger than short side {short_side}")
        if read_data:
            _read_everything(handle, file, count, height, width)
    return count


def _read_everything(handle: h5py.File, file: Path, count: int, height: int, width: int) -> None:
    for start in range(0, count, BLOCK):
        try:
            encoded = handle["frames"][start:start + BLOCK]
            handle["flow"][start:min(start + BLOCK, count - 1)]
        except OSError as exc:
            raise InputError(file, f"damaged data near frame {start} ({exc})") from None
        for offset, data in enumerate(encoded):
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if image is None or image.shape != (height, width, 3):
                raise InputError(file, f"frame {start + offset} is not a {width}x{height} JPEG")
