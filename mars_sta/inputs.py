"""How a network reads its input: the one description kept in the registry entry and in every checkpoint.

In the spirit of timm's ``PretrainedCfg``: a network's weights mean something only for clips made the way they were
trained on (the stream, the clip's frames and side, the pixel and flow scale, and for flow the TV-L1 backend and
its parameters). The registry gives each architecture's usual input; a checkpoint records the one it was trained
with, and every path that feeds frames to a trained network checks what it feeds against it first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class InputConfig:
    """What a network reads.

    Args:
        stream: the stream name (``rgb``, ``flow``, ``mars``, ``sta-mars``, ...); it says which clips it reads.
        frames: frames per clip (``sample_duration``).
        size: the clip's height and width in pixels (``sample_size``).
        normalization: ``mars`` (pixels 0..255 minus the mean, flow codes minus 127.5) or ``unit``.
        flow: the flow store's preprocessing it was trained on (TV-L1 backend and parameters, bound, quantisation,
            frame size), or None where it is not known (a file written before it was recorded, weights from
            elsewhere).
    """

    stream: str = "rgb"
    frames: int = 16
    size: int = 112
    normalization: str = "mars"
    flow: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a checkpoint stores them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputConfig:
        """The description a checkpoint stored; unknown keys are refused (a newer file)."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown input description keys: {', '.join(sorted(unknown))}")
        return cls(**values)
