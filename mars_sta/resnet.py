"""3D ResNets (Hara et al., CVPR 2018), the generic body shared by ResNet-10…200, ResNeXt-101 and the tiny net.

One class, configured by its block type, widths, stem and strides; attention is an argument, not a copy.
Shortcut defaults follow the released Kinetics models of 3D-ResNets (CVPR2018 branch): "A" (zero padding) for
ResNet-18 and -34, "B" (1×1×1 conv + BN) for every other depth and for ResNeXt-101 (MARS).
"""
from __future__ import annotations

import torch
from torch import nn

from mars_sta.blocks import (BasicBlock, Bottleneck, ResidualBlock, Stride, init_backbone_weights, make_shortcut,
                             strided_size)
from mars_sta.registry import register_model
from mars_sta.spec import AttentionSpec, StageAttention


class ResNet3D(nn.Module):
    """Stem (conv1, bn1, ReLU, optional max-pool) → stages ``layer1…`` → global average pool → dropout → ``fc``.

    The pool is adaptive (any T, H, W); at the clip sizes of the reference networks (16 or 64 frames, 112²) it equals
    their fixed ``AvgPool3d((ceil(T/16), ceil(S/32), ceil(S/32)))``, which covers the whole ``layer4`` map there.

    Shapes for a 16×112² clip with the default strides (``forward_features`` ends at the pool)::

        x (N, in_channels, 16, 112, 112)
          │  conv1 + bn1 + ReLU (stride 1, 2, 2), max-pool (2, 2, 2)
          ▼  (N, 64, 8, 28, 28)
          │  layer1 … layer4 (strides 1, 2, 2, 2; attention where ``attention`` says)
          ▼  (N, 512·expansion, 1, 4, 4)
          │  adaptive average pool, flatten, dropout
          ▼  features (N, 512·expansion)
          │  fc
          ▼  logits (N, num_classes)

    Args:
        block: the residual block (``BasicBlock``, ``Bottleneck`` or a ResNeXt block).
        layers: blocks per stage.
        num_classes: size of the ``fc`` output.
        in_channels: 3 for RGB, 2 for flow.
        sample_size: the clip's height and width (attention modules are built for the feature map it gives).
        shortcut: "A" (zero-padded identity) or "B" (1×1×1 conv) where a block changes shape.
        attention: where and which attention modules to insert (``mars_sta.spec``), or None.
        widths: channels of each stage before the block's expansion.
        stage_strides: stride of each stage's first block (an int, or (t, h, w)).
        stem_width: channels of ``conv1``.
        stem_kernel: kernel of ``conv1``.
        stem_stride: stride of ``conv1``.
        max_pool: whether the stem ends with a 3×3×3 max-pool of stride 2.
        dropout: dropout before ``fc``.
        block_kwargs: further keyword arguments of every block (ResNeXt's cardinality).
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: tuple[int, ...],
        *,
        num_classes: int,
        in_channels: int = 3,
        sample_size: int = 112,
        shortcut: str = "B",
        attention: AttentionSpec | None = None,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stage_strides: tuple[int | Stride, ...] = (1, 2, 2, 2),
        stem_width: int = 64,
        stem_kernel: Stride = (7, 7, 7),
        stem_stride: Stride = (1, 2, 2),
        max_pool: bool = True,
        dropout: float = 0.0,
        block_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        padding = (stem_kernel[0] // 2, stem_kernel[1] // 2, stem_kernel[2] // 2)
        self.conv1 = nn.Conv3d(in_channels, stem_width, stem_kernel, stride=stem_stride, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1) if max_pool else nn.Identity()
        _, height, width = ((sample_size + 2 * p - k) // s + 1 for k, s, p in zip(stem_kernel, stem_stride, padding))
        size = (height, width)
        if max_pool:
            size = strided_size(size, 2)
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        in_planes = stem_width
        for name, planes, count, stride in zip(self.stage_names, widths, layers, stage_strides):
            stage_attention = attention.at(name) if attention else None
            stage, in_planes, size = _make_stage(block, in_planes, planes, count, stride, size, shortcut,
                                                 stage_attention, block_kwargs or {})
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes)
        init_backbone_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled (N, D) vector that feeds ``fc`` (what MARS distils)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from ``forward_features``' output, so that training can have both from one pass."""
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _make_stage(
    block: type[ResidualBlock],
    in_planes: int,
    planes: int,
    count: int,
    stride: int | Stride,
    size: tuple[int, int],
    shortcut: str,
    attention: StageAttention | None,
    block_kwargs: dict,
) -> tuple[nn.Sequential, int, tuple[int, int]]:
    """One stage, its output channels and spatial size; the first block carries the stride and the shortcut."""
    blocks = []
    for index in range(count):
        block_stride = stride if index == 0 else 1
        out_planes = planes * block.expansion
        selected = attention if attention and attention.selects(index, count) else None
        downsample = make_shortcut(shortcut, in_planes, out_planes, block_stride)
        blocks.append(block(in_planes, planes, block_stride, downsample, selected, size, **block_kwargs))
        in_planes, size = out_planes, strided_size(size, block_stride)
    return nn.Sequential(*blocks), in_planes, size


_DEPTHS: dict[int, tuple[type[ResidualBlock], tuple[int, ...]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}

LAYER_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _register_resnet(depth: int) -> None:
    block, layers = _DEPTHS[depth]

    def build(*, num_classes: int, in_channels: int, sample_size: int, sample_duration: int, shortcut: str,
              attention: AttentionSpec | None) -> ResNet3D:
        return ResNet3D(block, layers, num_classes=num_classes, in_channels=in_channels, sample_size=sample_size,
                        shortcut=shortcut, attention=attention)

    build.__doc__ = f"3D ResNet-{depth} ({block.__name__}, blocks {list(layers)}), Hara et al., CVPR 2018."
    register_model(
        f"resnet{depth}",
        default_shortcut="A" if depth in (18, 34) else "B",
        stages=LAYER_STAGES,
        default_sta_stage="layer4",
    )(build)


for _depth in _DEPTHS:
    _register_resnet(_depth)
