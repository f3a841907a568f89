"""Pseudo-3D ResNet-199 (Qiu et al., ICCV 2017), laid out as its public PyTorch port (qijiezhao/pseudo-3d-pytorch).

The port's released Kinetics models (RGB and TV-L1 flow, 16×160² clips, 400 classes) load unchanged: module names,
shapes and ``state_dict()`` keys are the port's (``conv1_custom``, ``layer1.0.conv1…conv4``, ``layer4.0.conv_normal``,
``downsample.0/1``, ``fc``), in its order. Shapes through the network at 16×160²::

    clip (N, C, 16, 160, 160)
      │ conv1_custom 1×7×7 /(1,2,2), bn1, ReLU, max-pool 2×3×3 /2     → (N,   64, 8, 40, 40)
      │ layer1  P3D bottlenecks ×3,  then max-pool 2×1×1 over time      → (N,  256, 4, 40, 40)
      │ layer2  P3D bottlenecks ×8,  first /(1,2,2), time max-pool      → (N,  512, 2, 20, 20)
      │ layer3  P3D bottlenecks ×36, first /(1,2,2), time max-pool      → (N, 1024, 1, 10, 10)
      │ time folded into the batch                                      → (N·1, 1024, 10, 10)
      │ layer4  2D bottlenecks ×3,   first /2                           → (N·1, 2048, 5, 5)
      │ mean over time and space, dropout 0.5, fc                       → (N, classes)

The blocks of ``layer1``–``layer3`` cycle through P3D-A, -B, -C by their index over the whole network (block 0 is A,
block 3 is A again, ``layer3.0`` is C). Attention goes where time remains: ``layer1``–``layer3`` (l = 8, 4, 2 at
16 frames); ``layer4`` is 2D, with no temporal axis to attend over, so ``sta=`` refuses it.
"""
from __future__ import annotations

import torch
from torch import nn

from mars_sta.blocks import ResidualBlock, Stride, init_backbone_weights, make_shortcut, strided_size
from mars_sta.inputs import InputConfig
from mars_sta.registry import register_model
from mars_sta.spec import AttentionSpec, StageAttention

P3D_STAGES = ("layer1", "layer2", "layer3")  # the 3D stages, where ``sta=`` may put attention
P3D_VARIANTS = ("A", "B", "C")
_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES: tuple[int | Stride, ...] = (1, (1, 2, 2), (1, 2, 2))  # of each 3D stage's first block
_MIN_FRAMES = 16  # the stem's and the three stage max-pools each halve time: 16 → 8 → 4 → 2 → 1


class P3DBottleneck(ResidualBlock):
    """1×1×1 (strided) → a P3D pair of a spatial 1×3×3 (``conv2``) and a temporal 3×1×1 (``conv3``) conv → 1×1×1.

    Each of the pair is conv, BN, ReLU; ``variant`` wires them: A chains S then T, B runs S and T side by side and
    adds them, C adds S to T(S). The stride is spatial only, (1, 2, 2), so time never shrinks inside a block.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int | Stride = 1,
        downsample: nn.Module | None = None,
        attention: StageAttention | None = None,
        in_size: tuple[int, int] = (1, 1),
        variant: str = "A",
    ) -> None:
        super().__init__()
        self.downsample = downsample  # registered first, as the port does, so state_dict() keeps its key order
        self.variant = variant
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=(1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn3 = nn.BatchNorm3d(planes)
        self.conv4 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn4 = nn.BatchNorm3d(planes * self.expansion)
        self._finish(downsample, attention, in_planes, planes * self.expansion, in_size, stride)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(x)))

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn3(self.conv3(x)))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.variant == "A":
            out = self._temporal(self._spatial(out))
        elif self.variant == "B":
            out = self._spatial(out) + self._temporal(out)
        else:
            spatial = self._spatial(out)
            out = spatial + self._temporal(spatial)
        return self.bn4(self.conv4(out))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


class Bottleneck2D(ResidualBlock):
    """The 2D bottleneck of the last stage: 1×1 (strided) → 3×3 (``conv_normal``) → 1×1, on (N, C, H, W) maps."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.downsample = downsample  # registered first, as the port does, so state_dict() keeps its key order
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv_normal = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn_normal = nn.BatchNorm2d(planes)
        self.conv4 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn4 = nn.BatchNorm2d(planes * self.expansion)
        self._finish(downsample, None, in_planes, planes * self.expansion, (1, 1), stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn_normal(self.conv_normal(out)))
        return self.bn4(self.conv4(out))


class P3D(nn.Module):
    """Pseudo-3D ResNet: 3D stages of P3D bottlenecks with a temporal max-pool after each, then a 2D last stage.

    At 16 frames this is the port's network, output for output. Two choices go beyond it: the final pool is a mean
    over whatever ``layer4`` leaves (the port's fixed 5×5 average pool fits 160² only; it edits the kernel to 7 or 9
    for its 224² and 299² models), and clips longer than 16 frames, which leave time in front of ``layer4``, run
    each remaining step through it (folded into the batch) and average those too. Weights start as the other
    backbones here (Kaiming fan-out convs, unit BN); the port's own initialisation matters only from scratch.

    Args:
        layers: blocks per stage; the first three are 3D, the last 2D ((3, 8, 36, 3) for P3D-199).
        num_classes: outputs of ``fc``.
        in_channels: 3 for RGB, 2 for flow (the port's ``modality='RGB'`` / ``'Flow'``).
        sample_size: clip height and width that attention modules are built for (160 for the released models).
        sample_duration: clip length, at least 16.
        attention: where STA goes; ``layer1``–``layer3`` only.
        dropout: before ``fc`` (0.5, as the port).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        *,
        num_classes: int,
        in_channels: int = 3,
        sample_size: int = 160,
        sample_duration: int = 16,
        attention: AttentionSpec | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if sample_duration < _MIN_FRAMES:
            raise ValueError(f"P3D needs clips of at least {_MIN_FRAMES} frames (four max-pools halve time), "
                             f"got {sample_duration}")
        self.conv1_custom = nn.Conv3d(in_channels, 64, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3),
                                      bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(2, 3, 3), stride=2, padding=(0, 1, 1))
        self.temporal_pool = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1))
        size = strided_size(strided_size((sample_size, sample_size), 2), 2)
        in_planes, first_index = 64, 0
        for name, planes, count, stride in zip(P3D_STAGES, _WIDTHS, layers, _STAGE_STRIDES):
            stage_attention = attention.at(name) if attention else None
            stage, in_planes, size = _p3d_stage(in_planes, planes, count, stride, size, stage_attention, first_index)
            self.add_module(name, stage)
            first_index += count
        out_planes = _WIDTHS[3] * Bottleneck2D.expansion
        first = Bottleneck2D(in_planes, _WIDTHS[3], 2, _downsample_2d(in_planes, out_planes))
        self.layer4 = nn.Sequential(first, *(Bottleneck2D(out_planes, _WIDTHS[3]) for _ in range(layers[3] - 1)))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(out_planes, num_classes)
        init_backbone_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 2048) mean of ``layer4`` over time and space, which feeds ``fc`` (what MARS distils)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1_custom(x))))
        for name in P3D_STAGES:
            x = self.temporal_pool(getattr(self, name)(x))
        n, c, t, h, w = x.shape
        x = self.layer4(x.transpose(1, 2).reshape(n * t, c, h, w))
        return x.view(n, t, x.shape[1], -1).mean(dim=(1, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from ``forward_features``' output, so that training can have both from one pass."""
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _p3d_stage(
    in_planes: int,
    planes: int,
    count: int,
    stride: int | Stride,
    size: tuple[int, int],
    attention: StageAttention | None,
    first_index: int,
) -> tuple[nn.Sequential, int, tuple[int, int]]:
    """One 3D stage, its output channels and spatial size; ``first_index`` (blocks before it) sets the A/B/C cycle."""
    blocks = []
    for index in range(count):
        block_stride = stride if index == 0 else 1
        selected = attention if attention and attention.selects(index, count) else None
        downsample = make_shortcut("B", in_planes, planes * P3DBottleneck.expansion, block_stride)
        variant = P3D_VARIANTS[(first_index + index) % len(P3D_VARIANTS)]
        blocks.append(P3DBottleneck(in_planes, planes, block_stride, downsample, selected, size, variant))
        in_planes, size = planes * P3DBottleneck.expansion, strided_size(size, block_stride)
    return nn.Sequential(*blocks), in_planes, size


def _downsample_2d(in_planes: int, out_planes: int) -> nn.Sequential:
    """Shortcut "B" of the 2D stage: 1×1 conv with stride 2, then BN."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=2, bias=False),
                         nn.BatchNorm2d(out_planes))


@register_model("p3d199", default_shortcut="B", stages=P3D_STAGES, default_sta_stage="layer3",
                default_input=InputConfig(size=160),
                first_conv="conv1_custom")
def p3d199(*, num_classes: int, in_channels: int, sample_size: int, sample_duration: int, shortcut: str,
           attention: AttentionSpec | None) -> P3D:
    """Pseudo-3D ResNet-199 (P3D-A/B/C ×[3, 8, 36], 2D ×3), Qiu et al., ICCV 2017; 16×160² clips."""
    if shortcut != "B":
        raise ValueError(f"p3d199 has shortcut B (1×1 conv + BN) only, as its released models; got {shortcut!r}")
    return P3D((3, 8, 36, 3), num_classes=num_classes, in_channels=in_channels, sample_size=sample_size,
               sample_duration=sample_duration, attention=attention)
