"""Fixed-length clips of sliding windows, read from the flow store by frame range and normalised as for training.

A window of any length becomes ``frames`` grid indices spread over it (S-CNN's sampling); RGB frame k and flow k
share grid position k, so a MARS clip (``rgb+flow``) stacks the student's RGB and the teacher's flow channels. Frames larger than ``size`` are centre-cropped to a square and resized.
"""
from __future__ import annotations

import numpy as np
import torch

from flow.store import FlowStore
from pipelines.data.clips import Normalization
from pipelines.detection.windows import clip_indices
from pipelines.inference.features import read_grid


class WindowClips:
    """Clips (C, T, size, size) float32 of windows of the store's videos, of one clip kind: ``rgb``, ``flow`` or
    ``rgb+flow`` (what a stream spec's ``train_clips`` / ``test_clips`` names)."""

    def __init__(self, store: FlowStore, kind: str, frames: int, size: int, normalization: str,
                 cache_videos: bool = True) -> None:
        self.store, self.kind, self.frames, self.size = store, kind, frames, size
        self.normalization = Normalization.named(normalization, store.bound)
        self.cache_videos = cache_videos
        self._cache: dict[str, np.ndarray] = {}

    def clip(self, video: str, start: int, stop: int) -> torch.Tensor:
        indices = clip_indices(int(start), int(stop), self.frames)
        if self.cache_videos:
            data = self._whole(video)[indices]
        else:
            data = self._range(video, int(indices[0]), int(indices[-1]) + 1)[indices - indices[0]]
        return torch.from_numpy(np.ascontiguousarray(data.transpose(3, 0, 1, 2)))

    def _whole(self, video: str) -> np.ndarray:
        if video not in self._cache:
            self._cache[video] = self._range(video, 0, self.store.num_frames(video) - 1)
        return self._cache[video]

    def _range(self, video: str, first: int, stop: int) -> np.ndarray:
        """Grid positions ``first:stop`` normalised, (n, size, size, C) float32."""
        return read_grid(self.store, video, self.kind, first, stop, self.size, self.normalization)
