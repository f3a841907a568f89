"""Residual blocks of the 3D ResNets (Hara et al., CVPR 2018) that accept an attention builder.

Module names follow the 3D-ResNets / MARS checkpoints (``conv1``, ``bn1``, …, ``downsample.0/1``) so their files
load unchanged; an attention module, when present, is the block's ``sta`` child and adds only its own keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mars_sta.spec import StageAttention
from mars_sta.sta import Attention

Stride = tuple[int, int, int]


def as_stride(stride: int | Stride) -> Stride:
    return (stride, stride, stride) if isinstance(stride, int) else stride


def strided_size(size: tuple[int, int], stride: int | Stride) -> tuple[int, int]:
    """Spatial size after a kernel-3/padding-1 (or kernel-1) layer with ``stride``: ceil(size / stride)."""
    _, sh, sw = as_stride(stride)
    return (size[0] - 1) // sh + 1, (size[1] - 1) // sw + 1


def conv3x3x3(in_planes: int, out_planes: int, stride: int | Stride = 1, groups: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def init_backbone_weights(model: nn.Module) -> None:
    """Kaiming (fan-out) convs and unit BN as the reference code; attention modules keep their own init."""
    inside_attention = {id(sub) for m in model.modules() if isinstance(m, Attention) for sub in m.modules()}
    for module in model.modules():
        if id(module) in inside_attention:
            continue
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ZeroPadShortcut(nn.Module):
    """Shortcut "A": subsample by the stride, then pad the missing channels with zeros (no parameters)."""

    def __init__(self, out_planes: int, stride: int | Stride) -> None:
        super().__init__()
        self.out_planes = out_planes
        self.stride = as_stride(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        n, c, t, h, w = out.shape
        return torch.cat([out, out.new_zeros(n, self.out_planes - c, t, h, w)], dim=1)


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int | Stride) -> nn.Module | None:
    """Shortcut "A" (zero padding) or "B" (1×1×1 conv + BN) where the block changes shape, else None (identity)."""
    if as_stride(stride) == (1, 1, 1) and in_planes == out_planes:
        return None
    if kind == "A":
        return ZeroPadShortcut(out_planes, stride)
    return nn.Sequential(
        nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(out_planes)
    )


class ResidualBlock(nn.Module):
    """relu(residual(x) + shortcut(x)), with optional attention at the end of the residual branch, on the block's
    input, or on its output (after the ReLU: the trunk every later block reads)."""

    expansion = 1

    def _finish(
        self,
        downsample: nn.Module | None,
        attention: StageAttention | None,
        in_planes: int,
        out_planes: int,
        in_size: tuple[int, int],
        stride: int | Stride,
    ) -> None:
        """Register the shortcut and the attention after the convs, keeping the checkpoints' key order."""
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)
        # A module set on ``sta`` later (a foreign layer, as the authors' tests do) sits on the residual branch.
        self.attention_position = attention.position if attention is not None else "residual"
        self.sta: Attention | None
        if attention is None:
            self.sta = None
        elif self.attention_position == "input":
            self.sta = attention.build(in_planes, in_size)
        else:
            self.sta = attention.build(out_planes, strided_size(in_size, stride))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sta is not None and self.attention_position == "input":
            x = self.sta(x)
        out = self.residual(x)
        if self.sta is not None and self.attention_position == "residual":
            out = self.sta(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(out + shortcut)
        if self.sta is not None and self.attention_position == "output":
            out = self.sta(out)
        return out


class BasicBlock(ResidualBlock):
    """Two 3×3×3 convs; the stride sits in the first (ResNet-10/18/34 and the tiny net)."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int | Stride = 1,
        downsample: nn.Module | None = None,
        attention: StageAttention | None = None,
        in_size: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self._finish(downsample, attention, in_planes, planes, in_size, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1×1×1 → 3×3×3 (strided) → 1×1×1 to 4·planes channels (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int | Stride = 1,
        downsample: nn.Module | None = None,
        attention: StageAttention | None = None,
        in_size: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self._finish(downsample, attention, in_planes, planes * self.expansion, in_size, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))
