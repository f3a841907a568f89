"""Fixed-length clips of sliding windows, read from the flow store frame by frame and normalised as for training.

A window of any length becomes ``frames`` grid indices spread over it (S-CNN's sampling), and only those frames are
read: a 512-frame window costs 16 decoded frames, not 512. RGB frame k and flow k share grid position k, so a MARS
clip (``rgb+flow``) stacks the student's RGB and the teacher's flow channels. Frames larger than ``size`` are
centre-cropped to a square and resized. With ``cache_mb`` the decoded frames stay in an LRU of that many MB, which
the overlapping windows of S-CNN's scales read again and again.
"""
from __future__ import annotations

import numpy as np
import torch

from flow.store import FlowStore
from pipelines.data.clips import Normalization
from pipelines.data.frame_cache import FrameCache, frame_bytes
from pipelines.detection.windows import clip_indices
from pipelines.inference.features import read_grid


class WindowClips:
    """Clips (C, T, size, size) float32 of windows of the store's videos, of one clip kind: ``rgb``, ``flow`` or
    ``rgb+flow`` (what a stream spec's ``train_clips`` / ``test_clips`` names)."""

    def __init__(self, store: FlowStore, kind: str, frames: int, size: int, normalization: str,
                 cache_mb: int = 0) -> None:
        self.store, self.kind, self.frames, self.size = store, kind, frames, size
        self.normalization = Normalization.named(normalization, store.bound)
        self.cache = FrameCache(cache_mb)
        if cache_mb:
            largest = max((frame_bytes(*store.frame_size(video), kind.split("+")) for video in store.video_ids()),
                          default=0)
            self.cache.check_fits(frames, largest, f"{frames}-frame {kind} window")

    def clip(self, video: str, start: int, stop: int) -> torch.Tensor:
        data = read_grid(self.store, video, self.kind, clip_indices(int(start), int(stop), self.frames), self.size,
                         self.normalization, self.cache)
        return torch.from_numpy(np.ascontiguousarray(data.transpose(3, 0, 1, 2)))
