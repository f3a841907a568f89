"""Controls for testing what STA's gate does: an oracle mask from the known informative frames, and STA with its
gate made constant in time.

Both act on a built model, at the places its ``sta=`` spec put attention, so a control sits exactly where STA
would: ``use_oracle`` replaces every attention module by an ``OracleMask`` (a fixed per-frame gate that the caller
sets for each batch from the frames it knows carry the class), and ``constant_in_time`` swaps every STA module for
a ``TimeMeanGate`` around it for as long as the ``with`` block lasts (W replaced by its mean over time, so the gate
keeps its per-channel weighting but can no longer pick frames).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mars_sta.sta import STA, Attention


def window_masks(starts: torch.Tensor, stops: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, frames) boolean masks, True on the frames ``start <= t < stop`` of each clip."""
    steps = torch.arange(frames)
    return (steps >= starts[:, None]) & (steps < stops[:, None])


class OracleMask(Attention):
    """A gate that is not learned: 1 on the clip's informative frames, ``outside`` on the others, for every channel.

    The mask is given per clip on the clip's frames (``frame_mask``, (N, T)); a feature map with fewer time steps
    L than T takes each step's mean over the frames it covers (adaptive average pooling), which is exact when L = T.
    """

    def __init__(self, outside: float = 0.0) -> None:
        super().__init__()
        self.outside = outside
        self.frame_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frame_mask is None:
            raise RuntimeError("OracleMask needs the frames of each clip: call set_frame_masks before the forward pass")
        if self.frame_mask.shape[0] != x.shape[0]:
            raise ValueError(f"OracleMask holds masks for {self.frame_mask.shape[0]} clips, the batch has {x.shape[0]}")
        n, _, length = x.shape[:3]
        mask = F.adaptive_avg_pool1d(self.frame_mask.to(x.dtype)[:, None], length)  # (N, 1, L)
        weights = self.outside + (1.0 - self.outside) * mask
        return self._gate(x, weights.view(n, 1, length, 1, 1))

    def extra_repr(self) -> str:
        return f"outside={self.outside}"


class TimeMeanGate(Attention):
    """An STA module whose gate W (N, c, L) is replaced by its mean over L: the same weight for every frame."""

    def __init__(self, sta: STA) -> None:
        super().__init__()
        self.sta = sta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sta.weights(x)
        return self._gate(x, gate.mean(dim=2, keepdim=True).expand_as(gate))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, module)


def use_oracle(model: nn.Module, outside: float = 0.0) -> list[OracleMask]:
    """Replace every attention module of ``model`` by an ``OracleMask`` (in place); returns the masks in network
    order. The model must hold attention where the oracle should act (build it with an ``sta=`` spec)."""
    names = [name for name, module in model.named_modules() if isinstance(module, Attention)]
    if not names:
        raise ValueError("use_oracle: the model has no attention module to replace (build it with sta=...)")
    masks = []
    for name in names:
        masks.append(OracleMask(outside))
        _replace(model, name, masks[-1])
    return masks


def set_frame_masks(model: nn.Module, frame_mask: torch.Tensor) -> None:
    """Give every ``OracleMask`` of ``model`` the (N, T) masks of the next batch's clips."""
    for module in model.modules():
        if isinstance(module, OracleMask):
            module.frame_mask = frame_mask


@contextmanager
def constant_in_time(model: nn.Module) -> Iterator[list[TimeMeanGate]]:
    """Within the block, every STA module of ``model`` gates with its W averaged over time; restored on exit."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, STA)]
    if not found:
        raise ValueError("constant_in_time: the model has no STA module")
    gates = [TimeMeanGate(module) for _, module in found]
    for (name, _), gate in zip(found, gates):
        _replace(model, name, gate)
    try:
        yield gates
    finally:
        for name, module in found:
            _replace(model, name, module)
