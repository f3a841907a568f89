"""3D ResNeXt-101 (cardinality 32), the backbone of MARS and of the paper's STA-ResNeXt-101."""
from __future__ import annotations

import torch
from torch import nn

from mars_sta.blocks import ResidualBlock, Stride, conv3x3x3
from mars_sta.registry import register_model
from mars_sta.resnet import LAYER_STAGES, ResNet3D
from mars_sta.spec import AttentionSpec, StageAttention


class ResNeXtBottleneck(ResidualBlock):
    """1×1×1 → grouped 3×3×3 (strided, ``cardinality`` groups) → 1×1×1 to 2·planes channels."""

    expansion = 2

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int | Stride = 1,
        downsample: nn.Module | None = None,
        attention: StageAttention | None = None,
        in_size: tuple[int, int] = (1, 1),
        cardinality: int = 32,
    ) -> None:
        super().__init__()
        mid_planes = cardinality * (planes // 32)
        self.conv1 = nn.Conv3d(in_planes, mid_planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_planes)
        self.conv2 = conv3x3x3(mid_planes, mid_planes, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm3d(mid_planes)
        self.conv3 = nn.Conv3d(mid_planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self._finish(downsample, attention, in_planes, planes * self.expansion, in_size, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


@register_model("resnext101", default_shortcut="B", stages=LAYER_STAGES, default_sta_stage="layer4")
def resnext101(*, num_classes: int, in_channels: int, sample_size: int, sample_duration: int, shortcut: str,
               attention: AttentionSpec | None) -> ResNet3D:
    """3D ResNeXt-101, cardinality 32 (MARS, Crasto et al. 2019; Hara et al., CVPR 2018)."""
    return ResNet3D(
        ResNeXtBottleneck,
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        sample_size=sample_size,
        shortcut=shortcut,
        attention=attention,
        widths=(128, 256, 512, 1024),
        block_kwargs={"cardinality": 32},
    )
