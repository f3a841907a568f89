"""Decoded frames in, what a flow store keeps of them out: each frame's JPEG bytes and the quantised TV-L1 flow
between consecutive frames.

Extraction writes this to a store's video file; prediction keeps it in memory (``DecodedVideo``), with the coding a
store's manifest records (``FrameCoding.of_store``), so a network sees at prediction exactly the arrays its
training store held, whichever TV-L1 backend made them. torch is imported only when the torch backend runs.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flow.errors import InputError, VideoError
from flow.quantize import quantize
from flow.tvl1 import BACKENDS, PairFlows, preset_params, resolve_device
from flow.video import VideoReader

NO_CODES = np.empty((0, 0, 0, 2), np.uint8)


@dataclass(frozen=True)
class FrameCoding:
    """How decoded BGR frames become a store's arrays.

    Args:
        bound: flow is clipped to ±bound pixels before quantisation.
        quantization: ``"round"`` or ``"truncate"`` (see ``flow.quantize``).
        tvl1: TV-L1 parameters under OpenCV's names.
        backend: ``"opencv"`` or ``"torch"``.
        device: where the torch backend runs (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        batch_pairs: frame pairs per torch call (does not change the flow).
        jpeg_quality: quality of the stored JPEG frames; None keeps frames as decoded (an imported store kept its
            source's JPEG bytes, whose coding cannot be repeated).
    """

    bound: float
    quantization: str
    tvl1: dict[str, Any] = field(default_factory=lambda: preset_params("default"))
    backend: str = "opencv"
    device: str = "cpu"
    batch_pairs: int = 1
    jpeg_quality: int | None = 95

    @classmethod
    def of_store(cls, preprocessing: dict[str, Any], batch_pairs: int = 16, flow: bool = True) -> FrameCoding:
        """The coding a store's recorded preprocessing describes. Stores of older versions (no backend recorded)
        used OpenCV; imported stores record no TV-L1 and get OpenCV's defaults. A torch backend recorded as run on
        CUDA runs on CUDA, and is refused without one: CPU flow differs slightly, and extraction does not mix them.
        Without ``flow`` (frames only) the TV-L1 backend is never used, so it is not asked for.
        """
        backend = preprocessing.get("tvl1_backend", "opencv") if flow else "opencv"
        if backend not in BACKENDS:
            raise InputError(None, f"records an unknown TV-L1 backend {backend!r} (known: {', '.join(BACKENDS)})")
        device = "cpu"
        if flow and backend == "torch" and preprocessing.get("tvl1_device", "cpu") == "cuda":
            try:
                device = resolve_device(backend, "cuda")
            except InputError:
                raise InputError(None, "its flow was computed by the torch TV-L1 on CUDA and torch sees no CUDA "
                                       "device here (flow computed on the CPU differs slightly, so it is not used "
                                       "instead)") from None
        return cls(bound=float(preprocessing["bound"]), quantization=preprocessing["quantization"],
                   tvl1=preprocessing.get("tvl1") or preset_params("default"), backend=backend, device=device,
                   batch_pairs=batch_pairs, jpeg_quality=preprocessing.get("jpeg_quality"))

    def encode(self, bgr: np.ndarray) -> np.ndarray | None:
        """The frame's JPEG bytes (uint8, 1-D) as the store keeps them; None when frames are kept as decoded."""
        if self.jpeg_quality is None:
            return None
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
        if not ok:
            raise VideoError(None, "OpenCV could not JPEG-encode a frame")
        return encoded.ravel()

    def codes(self, flows: np.ndarray) -> np.ndarray:
        """uint8 codes of flows in pixels."""
        return quantize(flows, self.bound, self.quantization)


@dataclass(frozen=True)
class StoredFrame:
    """One decoded frame and what the store keeps with it.

    ``jpeg`` is None when the coding keeps frames as decoded or JPEG was not asked for; ``flow_codes`` (N, H, W, 2)
    are the pairs whose flow became ready with this frame, in order (N may be 0).
    """

    bgr: np.ndarray
    jpeg: np.ndarray | None
    flow_codes: np.ndarray

    def rgb(self) -> np.ndarray:
        """The RGB frame as a store reads it back: through its JPEG coding when there is one."""
        stored = self.bgr if self.jpeg is None else cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR)
        if stored is None:
            raise VideoError(None, "OpenCV could not decode the JPEG it made of a frame")
        return cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)


def stored_frames(frames: Iterable[np.ndarray], coding: FrameCoding, jpeg: bool = True,
                  flow: bool = True) -> Iterator[StoredFrame]:
    """Each BGR frame with its JPEG bytes and the flow codes that became ready with it (flow k is between frames k
    and k+1); the last frame also carries the pairs still waiting, so the codes are complete once it comes.
    Without ``flow`` no TV-L1 runs at all; without ``jpeg`` no frame is encoded."""
    solver = PairFlows(coding.backend, coding.tvl1, coding.device, coding.batch_pairs) if flow else None
    held: StoredFrame | None = None
    for bgr in frames:
        ready = solver.push(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)) if solver else NO_CODES
        current = StoredFrame(bgr, coding.encode(bgr) if jpeg else None, coding.codes(ready) if solver else NO_CODES)
        if held is not None:
            yield held
        held = current
    if held is not None:
        rest = coding.codes(solver.flush()) if solver else NO_CODES
        yield replace(held, flow_codes=np.concatenate([held.flow_codes, rest])) if len(rest) else held


class DecodedVideo:
    """One video decoded in memory as a store would hold it, read through the same methods as a ``FlowStore``
    holding that one video (``video_id``); ``root`` is the video's path, so errors name it."""

    video_id = "video"

    def __init__(self, path: str | os.PathLike, preprocessing: dict[str, Any], rgb: np.ndarray | None,
                 codes: np.ndarray | None, count: int, size: tuple[int, int]) -> None:
        self.root = Path(path)
        self.preprocessing = preprocessing
        self._rgb, self._codes, self._count, self._size = rgb, codes, count, size

    @property
    def bound(self) -> float:
        return float(self.preprocessing["bound"])

    def video_ids(self) -> list[str]:
        return [self.video_id]

    def num_frames(self, video_id: str) -> int:
        return self._count

    def frame_size(self, video_id: str) -> tuple[int, int]:
        """(height, width) of the frames and flow."""
        return self._size

    def frames(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """RGB frames ``start:stop`` (n, H, W, 3) uint8."""
        if self._rgb is None:
            raise ValueError(f"{self.root} was decoded without its RGB frames")
        return self._rgb[start:stop]

    def flow_codes(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Flow codes ``start:stop`` (n, H, W, 2) uint8; flow k is between frames k and k+1."""
        if self._codes is None:
            raise ValueError(f"{self.root} was decoded without its flow")
        return self._codes[start:stop]


def decode_video(path: str | os.PathLike, preprocessing: dict[str, Any], coding: FrameCoding, rgb: bool,
                 flow: bool) -> DecodedVideo:
    """Decode and resize a video as the store of ``preprocessing`` was made, and code it with ``coding``: RGB
    frames through its JPEG coding when ``rgb``, TV-L1 flow codes only when ``flow``."""
    frames: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    size = (0, 0)
    with VideoReader(path, preprocessing.get("short_side") or 0, preprocessing.get("fps")) as reader:
        for stored in stored_frames(reader, coding, jpeg=rgb, flow=flow):
            if rgb:
                frames.append(stored.rgb())
            codes.append(stored.flow_codes)  # one entry per frame, empty without flow
            size = stored.bgr.shape[:2]
    if len(codes) < 2:
        raise InputError(path, f"has {len(codes)} frame; at least 2 are needed")
    return DecodedVideo(path, preprocessing, np.stack(frames) if rgb else None,
                        np.concatenate(codes) if flow else None, len(codes), size)
