"""C3D (Tran et al., ICCV 2015) with the layer names of the PyTorch port the paper fine-tuned for STA-C3D.

Eight 3×3×3 convs with biases (``conv1``, ``conv2``, ``conv3a/b``, ``conv4a/b``, ``conv5a/b``) in five stages
``conv1…conv5`` each followed by a max-pool, then ``fc6``, ``fc7`` (4096, ReLU, dropout 0.5) and ``fc8``. The head
flattens the last pooled map, so the network is tied to the clip size it was built for (16×112² gives 8192 inputs
to ``fc6``). Attention sits at a stage's output (after its last conv's ReLU, before the pool) by default, or at its
input; C3D has no residual branch, so ``residual`` and ``output`` both name that stage output, the trunk. Its keys
are ``sta.<stage>.*``.
"""
from __future__ import annotations

import torch
from torch import nn

from mars_sta.registry import register_model
from mars_sta.spec import AttentionSpec

# stage name → (convs, pool kernel, pool padding)
_STAGES: dict[str, tuple[tuple[str, ...], tuple[int, int, int], tuple[int, int, int]]] = {
    "conv1": (("conv1",), (1, 2, 2), (0, 0, 0)),
    "conv2": (("conv2",), (2, 2, 2), (0, 0, 0)),
    "conv3": (("conv3a", "conv3b"), (2, 2, 2), (0, 0, 0)),
    "conv4": (("conv4a", "conv4b"), (2, 2, 2), (0, 0, 0)),
    "conv5": (("conv5a", "conv5b"), (2, 2, 2), (0, 1, 1)),
}
TRUNK_POSITIONS = ("residual", "output")  # without a residual branch, both gate the stage output
_WIDTHS = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}

# Keys of the Sports-1M weights as R-C3D's PyTorch port has them (``c3d_sports1M.pth`` and its ActivityNet files:
# ``features.<i>``, ``classifier.<i>``) → names used here. The other common conversion (c3d-pytorch's ``c3d.pickle``)
# already uses these names (``conv1`` … ``fc8``) and loads as it is.
SPORTS1M_KEYS = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3a", "features.8": "conv3b",
    "features.11": "conv4a", "features.13": "conv4b", "features.16": "conv5a", "features.18": "conv5b",
    "classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8",
}


def _pooled(size: int, kernel: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // kernel + 1


class C3D(nn.Module):
    """C3D with optional per-stage attention; ``forward_features`` is the 4096-d ``fc7`` output."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        sample_size: int = 112,
        sample_duration: int = 16,
        attention: AttentionSpec | None = None,
    ) -> None:
        super().__init__()
        self.stage_names = tuple(_STAGES)
        self.stage_modules = {stage: convs for stage, (convs, _, _) in _STAGES.items()}
        self.sta = nn.ModuleDict()
        self.attention_positions: dict[str, str] = {}
        channels, length, size = in_channels, sample_duration, sample_size
        for stage, (convs, kernel, padding) in _STAGES.items():
            stage_attention = attention.at(stage) if attention else None
            if stage_attention:
                self.attention_positions[stage] = stage_attention.position
            if stage_attention and stage_attention.position == "input":
                self.sta[stage] = stage_attention.build(channels, (size, size))
            for conv in convs:
                self.add_module(conv, nn.Conv3d(channels, _WIDTHS[stage], kernel_size=3, padding=1))
                channels = _WIDTHS[stage]
            if stage_attention and stage_attention.position in TRUNK_POSITIONS:
                self.sta[stage] = stage_attention.build(channels, (size, size))
            self.add_module(f"pool{stage[-1]}", nn.MaxPool3d(kernel, stride=kernel, padding=padding))
            length, size = _pooled(length, kernel[0], padding[0]), _pooled(size, kernel[1], padding[1])
            if length < 1 or size < 1:
                raise ValueError(
                    f"c3d needs clips of at least 16 frames of 16×16, got {sample_duration}×{sample_size}²"
                )
        self.fc6 = nn.Linear(channels * length * size * size, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    @staticmethod
    def remap_checkpoint_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename the Sports-1M file's ``features.<i>`` / ``classifier.<i>`` keys; other keys pass unchanged."""
        renamed = {}
        for key, value in state_dict.items():
            prefix, _, leaf = key.rpartition(".")
            renamed[f"{SPORTS1M_KEYS[prefix]}.{leaf}" if prefix in SPORTS1M_KEYS else key] = value
        return renamed

    def _stage(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """One stage's convs with ReLU and its attention, before the stage's pool."""
        position = self.attention_positions.get(stage)
        if position == "input":
            x = self.sta[stage](x)
        for conv in _STAGES[stage][0]:
            x = self.relu(getattr(self, conv)(x))
        return self.sta[stage](x) if position in TRUNK_POSITIONS else x

    def stage_map(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """The map after ``stage``'s last conv (its pool not applied): ``conv5`` is R-C3D's conv5b map, 8 input
        frames and 16 pixels per step."""
        for name in self.stage_names:
            x = self._stage(x, name)
            if name == stage:
                return x
            x = getattr(self, f"pool{name[-1]}")(x)
        raise ValueError(f"{stage!r} is not a stage of C3D ({', '.join(self.stage_names)})")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 4096-d ``fc7`` activation that feeds ``fc8``."""
        x = getattr(self, "pool5")(self.stage_map(x, "conv5"))
        x = self.dropout(self.relu(self.fc6(torch.flatten(x, 1))))
        return self.relu(self.fc7(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from ``forward_features``' output, so that training can have both from one pass."""
        return self.fc8(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("c3d", default_shortcut=None, stages=tuple(_STAGES), default_sta_stage="conv5", classifier="fc8")
def c3d(*, num_classes: int, in_channels: int, sample_size: int, sample_duration: int, shortcut: str | None,
        attention: AttentionSpec | None) -> C3D:
    """C3D (Tran et al., ICCV 2015), eight 3×3×3 convs and two 4096-d FC layers."""
    return C3D(num_classes=num_classes, in_channels=in_channels, sample_size=sample_size,
               sample_duration=sample_duration, attention=attention)
