"""The MARS loss (Crasto et al., CVPR 2019): cross-entropy plus feature distillation from a frozen flow network."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class MARSLossParts(NamedTuple):
    """``total = ce + alpha · mse``; ``mse`` is the (optionally normalised) distillation term before ``alpha``."""

    total: torch.Tensor
    ce: torch.Tensor
    mse: torch.Tensor


class MARSLoss(nn.Module):
    """CE(student logits, labels) + α · MSE(student features, teacher features), both with mean reduction.

    The teacher's features are detached here, so the flow network is never updated through this loss. MARS uses
    α = 50 on the raw 2048-d features. The right α depends on the teacher's feature scale; ``normalize=True``
    divides the MSE by the teacher features' mean square (a relative error, 1 for a student that outputs zeros),
    so that α depends less on the scale of a network's features (α ≈ 10 suits the tiny demo network).
    """

    def __init__(self, alpha: float = 50.0, *, normalize: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.normalize = normalize

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        student_features: torch.Tensor,
        teacher_features: torch.Tensor,
    ) -> MARSLossParts:
        teacher = teacher_features.detach()
        ce = F.cross_entropy(logits, labels)
        mse = F.mse_loss(student_features, teacher)
        if self.normalize:
            mse = mse / teacher.pow(2).mean().clamp_min(torch.finfo(teacher.dtype).tiny)
        return MARSLossParts(ce + self.alpha * mse, ce, mse)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, normalize={self.normalize}"
