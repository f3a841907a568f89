"""One way to run a trained network over videos: checkpoint, preprocessing check, test clips, chunked forward passes.

``evaluate`` (the videos of a store), ``predict`` (new videos, decoded as the store was made) and the attention probe
(one video, keeping the STA gates) all go through ``Engine``, so they cut, normalise and average clips alike and a
prediction equals the score ``evaluate`` gives the same video.

Shapes: a video's clips (K·M, C, T, H, W) → ``forward_features`` per chunk of ``batch_size`` → features (K·M, D) →
``forward_head`` → logits (K·M, classes); the video's score is the mean over its clips (the MARS protocol).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from flow.errors import InputError
from pipelines.core.checkpoint import Checkpoint, load_checkpoint
from pipelines.core.device import autocast
from pipelines.data.clips import ClipSource, Normalization, VideoClips


class Engine:
    """A checkpoint's network on a device, run over the test clips of videos.

    Args:
        checkpoint: a checkpoint file, or a ``Checkpoint`` already loaded.
        device: where the network runs.
        batch_size: clips per forward pass (memory, not results, depends on it).
        amp: the autocast dtype, or None for full precision.
    """

    def __init__(self, checkpoint: Checkpoint | str | Path, device: torch.device, batch_size: int = 32,
                 amp: torch.dtype | None = None) -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.model = self.checkpoint.build_model().to(device)
        self.device, self.batch_size, self.amp = device, batch_size, amp

    def video_clips(self, store: ClipSource, items: Sequence[tuple[str, int]], clips: int | None = None,
                    crops: int = 1) -> VideoClips:
        """The test clips of ``items`` as this network reads them; a store of other preprocessing is refused."""
        checkpoint = self.checkpoint
        reading = checkpoint.reading(store.preprocessing)
        checkpoint.check_input(reading, store.root)
        try:
            normalization = Normalization.named(reading.normalization, store.bound)
        except ValueError as exc:
            raise InputError(checkpoint.path, str(exc)) from None
        return VideoClips(store, items, checkpoint.spec.test_clips, reading.frames, reading.size, normalization,
                          clips=clips, crops=crops)

    @torch.no_grad()
    def forward(self, clips: torch.Tensor, after_chunk: Callable[[], None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and pooled features of every clip (float32, on the CPU), ``batch_size`` clips at a time;
        ``after_chunk`` runs after each pass (to read what modules kept of it)."""
        logits, features = [], []
        for chunk in torch.split(clips, self.batch_size):
            with autocast(self.device, self.amp):
                feats = self.model.forward_features(chunk.to(self.device))
                logits.append(self.model.forward_head(feats).float().cpu())
            features.append(feats.float().cpu())
            if after_chunk is not None:
                after_chunk()
        return torch.cat(logits), torch.cat(features)

    def video_scores(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A video's score under the test protocol: logits and features averaged over its clips."""
        logits, features = self.forward(clips)
        return logits.mean(0), features.mean(0)
