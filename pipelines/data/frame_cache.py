"""Decoded frames kept in memory between reads: a least-recently-used cache bounded in bytes (``cache_mb``).

Decoding dominates reading a clip (one JPEG per RGB frame, one gzip chunk per flow frame), and training reads the
same frames again: S-CNN's overlapping windows within an epoch, every clip in every epoch. The cache holds single
stored frames, uint8 at the store's size, keyed by (video, part, frame), so a window or buffer costs only the frames
it samples, and memory stays within the limit whatever the number or the length of the videos. Each process
(each DataLoader worker) fills its own: a pickled cache arrives empty.

``functools.lru_cache`` bounds the number of entries, not their bytes, hence the ``OrderedDict``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flow.errors import InputError

MB = 2**20  # cache_mb counts mebibytes
PART_CHANNELS = {"rgb": 3, "flow": 2}  # the parts a frame is stored in: RGB pixels and (x, y) flow codes

Key = tuple[str, str, int]  # video, part, grid index


class FrameSource(Protocol):
    """What frames are read from: a ``FlowStore``, or one video decoded in memory (``flow.decode.DecodedVideo``)."""

    root: Path

    def frames(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray: ...

    def flow_codes(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray: ...


class FrameCache:
    """Stored frames of any videos, the least recently used dropped first once they pass ``limit_mb``; 0 keeps
    nothing (every read goes to the source, for the frames asked only)."""

    def __init__(self, limit_mb: int = 0) -> None:
        if limit_mb < 0:
            raise InputError(None, f"cache_mb must be 0 or more, got {limit_mb}")
        self.limit_mb = limit_mb
        self.limit = limit_mb * MB
        self.nbytes = 0  # the bytes of the frames held: what the limit bounds
        self._frames: OrderedDict[Key, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "nbytes": 0, "_frames": OrderedDict()}  # each process fills its own

    def check_fits(self, frames: int, frame_bytes: int, what: str) -> None:
        """Refuse a limit below one read of ``frames`` frames of ``frame_bytes`` each (a window, a clip): such a
        cache would drop a read's first frames while reading its last, and never be hit."""
        needed = frames * frame_bytes
        if 0 < self.limit < needed:
            raise InputError("--cache-mb", f"{self.limit_mb} MB holds less than one {what} ({frames} frames of "
                                           f"{frame_bytes} bytes need {math.ceil(needed / MB)} MB): raise it "
                                           "(cache_mb in a config table), or 0 turns the cache off")

    def held(self) -> list[tuple[Key, np.ndarray]]:
        """The frames held, least recently used first."""
        return list(self._frames.items())

    def read(self, source: FrameSource, video: str, part: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``indices`` of one part of a video, in that order: ``rgb`` (n, H, W, 3) RGB or ``flow``
        (n, H, W, 2) codes, uint8. Frames not held are read from ``source`` in runs of consecutive indices."""
        wanted = np.asarray(indices, np.int64)
        found: dict[int, np.ndarray] = {}
        missing = []
        for index in np.unique(wanted).tolist():
            frame = self._frames.get((video, part, index))
            if frame is None:
                missing.append(index)
            else:
                self._frames.move_to_end((video, part, index))
                found[index] = frame
        for first, stop in _runs(missing):
            block = _read_part(source, video, part, first, stop)
            self._keep_block(video, part, first, block)
            if not found and stop - first == len(wanted) and (wanted == np.arange(first, stop)).all():
                return block  # one run asked in order: no copy
            found.update(zip(range(first, stop), block))
        return np.stack([found[index] for index in wanted.tolist()])

    def _keep_block(self, video: str, part: str, first: int, block: np.ndarray) -> None:
        if self.limit == 0:
            return
        for offset, frame in enumerate(block):
            own = frame.copy()  # a view would keep the whole block alive, unaccounted
            self._frames[(video, part, first + offset)] = own
            self.nbytes += own.nbytes
        while self.nbytes > self.limit:
            self.nbytes -= self._frames.popitem(last=False)[1].nbytes


def frame_bytes(height: int, width: int, parts: Sequence[str]) -> int:
    """Bytes one grid position of ``parts`` holds at the stored size."""
    return height * width * sum(PART_CHANNELS[part] for part in parts)


def _read_part(source: FrameSource, video: str, part: str, first: int, stop: int) -> np.ndarray:
    if part == "rgb":
        return source.frames(video, first, stop)
    if part == "flow":
        return source.flow_codes(video, first, stop)
    raise ValueError(f"unknown frame part {part!r} (rgb or flow)")


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct indices as ``[first, stop)`` runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs
