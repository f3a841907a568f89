"""The STA module (spatio-temporal attention, Li et al., IEEE TMM 2020) and its channel-only relatives.

Every module here takes a 5-D feature map (N, c, L, h, w), computes a Sigmoid gate W and returns W ⊙ X, so it can
be dropped into any block without changing shapes. The gate of the last forward pass is kept (detached) in
``last_weights`` so that attention can be visualised without running the network twice.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

# Gate value of a freshly initialised module under ``init="identity"``. A plain Sigmoid at zero pre-activation gives
# 0.5, i.e. it halves every feature it sees; 0.9 keeps a trained network's predictions almost unchanged
# (docs/models.md gives the measured agreement) while the Sigmoid slope (0.09) still lets the gate learn.
IDENTITY_GATE = 0.9

INITS = ("identity", "default", "authors")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"unknown attention init {init!r} (expected one of {', '.join(INITS)})")


def _open_gate(layer: nn.Conv1d | nn.Linear | nn.BatchNorm1d) -> None:
    """Make ``layer`` (the one in front of the Sigmoid: a conv, a linear or a BatchNorm layer) output a constant
    logit of ``IDENTITY_GATE``.

    A zero weight with a positive bias starts the module near identity, as zero-initialised last BN layers start a
    residual block near identity; the weight still receives gradient, so the gate learns from the first step (the
    layers in front of it from the second).
    """
    weight, bias = layer.weight, layer.bias
    # Every gate layer is built with a bias (BatchNorm with affine=True), so both are tensors.
    assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
    nn.init.zeros_(weight)
    nn.init.constant_(bias, math.log(IDENTITY_GATE / (1.0 - IDENTITY_GATE)))


def _authors_start(module: nn.Module) -> None:
    """The start the authors' published network gives every module it contains: each Conv3d weight Kaiming-normal
    (fan-out), each BatchNorm (1, 0), everything else PyTorch's default. Conv2, kept here as the equivalent 1D
    convolution, is one of their Conv3d layers and is drawn alike (same shape and fan-out); their Deconv is a
    ConvTranspose3d, which that rule passes over."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv3d, nn.Conv1d)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def _live_deconv(deconv: nn.ConvTranspose1d) -> None:
    """Give the 1-channel Deconv taps (+1, 0, …, −1) and a zero bias, so the ReLU after it cannot start dead.

    With PyTorch's default init the single Deconv output is often negative for every frame (its bias can outweigh
    the Conv1 signal), and then neither Conv2's weight nor anything before the ReLU ever receives gradient. With
    opposite end taps and a zero bias every sample whose Conv1 output is not all zero has a positive value somewhere.
    """
    assert deconv.bias is not None, "the Deconv is built with a bias"
    nn.init.zeros_(deconv.weight)
    nn.init.zeros_(deconv.bias)
    with torch.no_grad():
        deconv.weight[..., 0] = 1.0
        deconv.weight[..., -1] = -1.0


class Attention(nn.Module):
    """Base of all attention modules: shape-preserving gates that remember their last weights."""

    def __init__(self) -> None:
        super().__init__()
        self.last_weights: torch.Tensor | None = None

    def _gate(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        self.last_weights = weights.detach()
        return x * weights


class STA(Attention):
    """Spatio-temporal attention: one Sigmoid weight per (channel, frame) pair, shared by the h×w positions.

    Shapes (s = ``stride``, k = ``kernel_size``)::

        X (N, c, L, h, w)
          │  Conv1   Conv3d(c → 1, kernel (1, h, w), bias)      per frame: a learned sum over channels and positions
          ▼  (N, 1, L)
          │  Deconv  ConvTranspose1d(1 → 1, kernel k, stride s)  stretches time
          ▼  (N, 1, (L − 1)·s + k)
          │  [BN1]   BatchNorm1d(1)                              ``batch_norm=True`` only
          │  ReLU
          │  Conv2   Conv1d(1 → c, kernel k, stride s)           back to length L, one row per channel
          ▼  (N, c, L)
          │  [BN2]   BatchNorm1d(c)                              ``batch_norm=True`` only
          │  Sigmoid
          ▼  W (N, c, L, 1, 1)
        Y = W ⊙ X    (N, c, L, h, w)

    Parameters: c·(h·w + 4) + 5 with k = 3 (54,277 for c = 1024 at 7×7), as in Table IV of the paper.

    Readings of the paper's text (sta-module reference §3–§4):

    * the channel squeeze S_s is merged into Conv1, so Conv1 outputs one value per frame and the Deconv is 1 → 1;
    * ``attention="t"`` is the temporal-only ablation (TA): Conv2 is 1 → 1 and W (N, 1, L, 1, 1) is shared by all
      channels (c·h·w + 9 parameters);
    * ``deconv=False`` (the "w/o Deconv" ablation) removes only the Deconv: Conv1 → ReLU → Conv2 (kernel k,
      padding k // 2, stride 1) keeps length L;
    * ``batch_norm=True`` is the module of the authors' published code (``falayer``): BatchNorm after the Deconv
      and after Conv2 (c·(h·w + 6) + 7 parameters: 45,063 at c = 2048, 4×4), with their 3D (3, 1, 1) kernels stored here as the equivalent
      1D kernels of length 3 (``mars_sta.authors_layout`` converts the keys and shapes both ways);
    * ``init="identity"`` (the default; the paper states no initialisation) starts with W = ``IDENTITY_GATE``
      everywhere, so that inserting the module into a trained network barely moves its predictions, and with a
      Deconv whose ReLU cannot start dead; ``init="default"`` keeps PyTorch's initialisation (gate ≈ 0.5, and the
      1-channel ReLU is often inactive for every frame, which freezes Conv1 and the Deconv); ``init="authors"`` is
      the start of the authors' published code, which re-draws Conv1 and Conv2 Kaiming-normal (fan-out).

    The Conv1 kernel equals the feature map's (h, w), so the module is tied to one input resolution; another size
    raises ``ValueError`` naming the expected one.

    Args:
        channels: c, the channels of the feature map it weighs.
        spatial_size: (h, w) of that feature map (an int for a square one).
        kernel_size: k, of the Deconv and Conv2.
        stride: s, of the Deconv and Conv2.
        deconv: False for the "w/o Deconv" ablation.
        attention: "st" (a weight per channel and frame) or "t" (the temporal-only ablation).
        init: "identity" (W starts at ``IDENTITY_GATE``), "default" (PyTorch's initialisation) or "authors" (the
            published code's).
    """

    def __init__(
        self,
        channels: int,
        spatial_size: int | tuple[int, int],
        *,
        kernel_size: int = 3,
        stride: int = 1,
        deconv: bool = True,
        attention: str = "st",
        batch_norm: bool = False,
        init: str = "identity",
    ) -> None:
        super().__init__()
        if attention not in ("st", "t"):
            raise ValueError(f"STA attention must be 'st' or 't', got {attention!r}")
        if stride < 1:
            raise ValueError(f"STA stride must be at least 1, got {stride}")
        if not deconv and (stride != 1 or kernel_size % 2 == 0):
            raise ValueError("STA without Deconv needs stride 1 and an odd kernel size")
        self.spatial_size = _pair(spatial_size)
        self.attention = attention
        self.conv1 = nn.Conv3d(channels, 1, kernel_size=(1, *self.spatial_size))
        gate_channels = channels if attention == "st" else 1
        self.deconv: nn.ConvTranspose1d | None
        if deconv:
            self.deconv = nn.ConvTranspose1d(1, 1, kernel_size, stride=stride)
            self.conv2 = nn.Conv1d(1, gate_channels, kernel_size, stride=stride)
        else:
            self.deconv = None
            self.conv2 = nn.Conv1d(1, gate_channels, kernel_size, padding=kernel_size // 2)
        self.bn1 = nn.BatchNorm1d(1) if batch_norm else None
        self.bn2 = nn.BatchNorm1d(gate_channels) if batch_norm else None
        self.relu = nn.ReLU()
        _check_init(init)
        if init == "identity":
            _open_gate(self.conv2 if self.bn2 is None else self.bn2)
            if self.deconv is not None:
                _live_deconv(self.deconv)
        elif init == "authors":
            _authors_start(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._gate(x, self.weights(x))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate W of ``x`` (N, c, L, 1, 1), without applying it."""
        if tuple(x.shape[-2:]) != self.spatial_size:
            raise ValueError(
                f"STA was built for {self.spatial_size[0]}×{self.spatial_size[1]} feature maps, got "
                f"{x.shape[-2]}×{x.shape[-1]}: build the model with the clip size (sample_size) it will see"
            )
        n, _, length = x.shape[:3]
        z = self.conv1(x).view(n, 1, length)
        if self.deconv is not None:
            z = self.deconv(z)
        if self.bn1 is not None:
            z = self.bn1(z)
        z = self.conv2(self.relu(z))
        if self.bn2 is not None:
            z = self.bn2(z)
        return torch.sigmoid(z).view(n, -1, length, 1, 1)

    def extra_repr(self) -> str:
        batch_norm = self.bn1 is not None
        return f"attention={self.attention!r}, spatial_size={self.spatial_size}, batch_norm={batch_norm}"


class ChannelAttention(Attention):
    """Channel-only attention: one Sigmoid weight per channel, shared by all frames and positions.

    Shapes (r = ``reduction``)::

        X (N, c, L, h, w)
          │  squeeze   "learned": Conv3d(c → c, kernel (1, h, w), groups c), then mean over L   (SA, P_s of eq. 4)
          │            "mean":    mean over L, h, w                                             (SE of Hu et al.)
          ▼  (N, c)
          │  reduce    Linear(c → c / r), ReLU
          │  expand    Linear(c / r → c), Sigmoid
          ▼  W (N, c, 1, 1, 1)
        Y = W ⊙ X

    The paper's SA squeezes time and space with learned weights (Eq. 4 as written would need c²·l·h·w of them), then
    squeezes and re-expands the channels. The reading here keeps a learned per-channel spatial kernel (c·h·w weights),
    averages over time and uses SE's bottleneck, so SA differs from the SE baseline only in its learned squeeze:
    ``squeeze="mean"`` is exactly the SE baseline (reduction 16, the SE paper's default).
    """

    def __init__(
        self,
        channels: int,
        spatial_size: int | tuple[int, int],
        *,
        reduction: int = 16,
        squeeze: str = "learned",
        init: str = "identity",
    ) -> None:
        super().__init__()
        if squeeze not in ("learned", "mean"):
            raise ValueError(f"ChannelAttention squeeze must be 'learned' or 'mean', got {squeeze!r}")
        if reduction < 1:
            raise ValueError(f"ChannelAttention reduction must be at least 1, got {reduction}")
        self.spatial_size = _pair(spatial_size)
        self.squeeze = squeeze
        if squeeze == "learned":
            self.pool = nn.Conv3d(channels, channels, kernel_size=(1, *self.spatial_size), groups=channels)
        hidden = max(channels // reduction, 1)
        self.reduce = nn.Linear(channels, hidden)
        self.relu = nn.ReLU()
        self.expand = nn.Linear(hidden, channels)
        _check_init(init)
        if init == "identity":
            _open_gate(self.expand)
        elif init == "authors":
            _authors_start(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.squeeze == "learned":
            if tuple(x.shape[-2:]) != self.spatial_size:
                raise ValueError(
                    f"SA was built for {self.spatial_size[0]}×{self.spatial_size[1]} feature maps, got "
                    f"{x.shape[-2]}×{x.shape[-1]}: build the model with the clip size (sample_size) it will see"
                )
            z = self.pool(x).mean(dim=(2, 3, 4))
        else:
            z = x.mean(dim=(2, 3, 4))
        weights = torch.sigmoid(self.expand(self.relu(self.reduce(z))))
        return self._gate(x, weights.view(*weights.shape, 1, 1, 1))

    def extra_repr(self) -> str:
        return f"squeeze={self.squeeze!r}, spatial_size={self.spatial_size}"


def attention_modules(model: nn.Module) -> Iterator[tuple[str, Attention]]:
    """Yield ``(qualified name, module)`` for every attention module inside ``model``, in network order."""
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            yield name, module
