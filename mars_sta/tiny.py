"""A small 3D ResNet for CPU work (≈229 k parameters), same interface and key scheme as the big ones.

Stem Conv3d (3, 5, 5) / stride (1, 2, 2), width 16; one basic block per stage at widths 16, 32, 64, the last two
halving only the spatial size, so the temporal length survives to the end: attention in ``layer3`` still has the
whole clip (16 frames at 16f) to weigh, unlike ResNeXt-101's ``layer4`` at 16 frames (one frame left).
"""
from __future__ import annotations

from mars_sta.blocks import BasicBlock
from mars_sta.inputs import InputConfig
from mars_sta.registry import register_model
from mars_sta.resnet import ResNet3D
from mars_sta.spec import AttentionSpec

TINY_STAGES = ("layer1", "layer2", "layer3")


@register_model("tiny_resnet", default_shortcut="B", stages=TINY_STAGES, default_sta_stage="layer3",
                default_input=InputConfig(size=32, normalization="unit"))
def tiny_resnet(*, num_classes: int, in_channels: int, sample_size: int, sample_duration: int, shortcut: str,
                attention: AttentionSpec | None) -> ResNet3D:
    """Tiny 3D ResNet (widths 16/32/64, temporal length kept) for CPU experiments and the demo."""
    return ResNet3D(
        BasicBlock,
        (1, 1, 1),
        num_classes=num_classes,
        in_channels=in_channels,
        sample_size=sample_size,
        shortcut=shortcut,
        attention=attention,
        widths=(16, 32, 64),
        stage_strides=((1, 1, 1), (1, 2, 2), (1, 2, 2)),
        stem_width=16,
        stem_kernel=(3, 5, 5),
        stem_stride=(1, 2, 2),
        max_pool=False,
        dropout=0.3,
    )
