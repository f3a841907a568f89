"""The ``sta=`` string: where attention goes in a network and which variant, parsed, validated and printed back.

Grammar: comma-separated entries ``STAGE[:OPTION[:OPTION...]]``, e.g. ``"layer4"``, ``"layer3,layer4"``,
``"layer4:bn"`` (the authors' published module), ``"layer4:ta"``, ``"layer4:st:stride=2"``, ``"layer4:nodeconv"``, ``"layer4:se"``,
``"layer4:input:blocks=first"``, ``"layer4:output"``.
``STAGE`` is a stage of the network (``layer1``…``layer4`` for the ResNets) or ``default`` (the paper's choice for
that network, resolved when the model is built). Options, defaults first:

=================  =========================================================================================
``st|ta|sa|se``    variant: full STA, temporal-only, channel-only (learned squeeze), squeeze-excitation
``residual|input|output``  bottom of each block's residual branch, before the ⊕ (default) / the block's input /
                   the block's output after the ⊕ and ReLU (the trunk, as C3D's modules gate it)
``blocks=``        ``all`` blocks of the stage (default), only the ``first`` or only the ``last``
``bn``             the authors' published module: BatchNorm after the Deconv and after Conv2 (``st``/``ta`` only)
``nodeconv``       STA without its Deconv layer (``st``/``ta`` only)
``stride=N``       Deconv step size (``st``/``ta`` only; default 1)
``reduction=N``    bottleneck ratio of ``sa``/``se`` (default 16)
``init=``          ``identity`` (gate starts at ``IDENTITY_GATE``; default), ``default`` (PyTorch's init) or
                   ``authors`` (the published code's: Conv1 and Conv2 Kaiming-normal, fan-out)
=================  =========================================================================================

``str()`` of a parsed spec is canonical: entries sorted by stage, options in the order above, defaults left out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mars_sta.sta import INITS, STA, Attention, ChannelAttention

KINDS = ("st", "ta", "sa", "se")
POSITIONS = ("residual", "input", "output")
BLOCK_CHOICES = ("all", "first", "last")
DEFAULT_STAGE = "default"
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class StageAttention:
    """Attention for one stage: which variant, where in each block, in which blocks; builds the modules."""

    stage: str
    kind: str = "st"
    position: str = "residual"
    blocks: str = "all"
    batch_norm: bool = False
    deconv: bool = True
    stride: int = 1
    reduction: int = 16
    init: str = "identity"

    def __str__(self) -> str:
        options = [self.kind] if self.kind != "st" else []
        options += ["bn"] if self.batch_norm else []
        options += [self.position] if self.position != "residual" else []
        options += [f"blocks={self.blocks}"] if self.blocks != "all" else []
        options += ["nodeconv"] if not self.deconv else []
        options += [f"stride={self.stride}"] if self.stride != 1 else []
        options += [f"reduction={self.reduction}"] if self.reduction != 16 else []
        options += [f"init={self.init}"] if self.init != "identity" else []
        return ":".join([self.stage, *options])

    def selects(self, index: int, count: int) -> bool:
        """Whether block ``index`` of a stage with ``count`` blocks gets a module."""
        return self.blocks == "all" or index == (0 if self.blocks == "first" else count - 1)

    def build(self, channels: int, spatial_size: tuple[int, int]) -> Attention:
        """The attention module for a feature map with ``channels`` channels and ``spatial_size`` (h, w)."""
        if self.kind in ("st", "ta"):
            return STA(
                channels,
                spatial_size,
                stride=self.stride,
                deconv=self.deconv,
                attention="st" if self.kind == "st" else "t",
                batch_norm=self.batch_norm,
                init=self.init,
            )
        squeeze = "learned" if self.kind == "sa" else "mean"
        return ChannelAttention(channels, spatial_size, reduction=self.reduction, squeeze=squeeze, init=self.init)


@dataclass(frozen=True)
class AttentionSpec:
    """A whole ``sta=`` value: one ``StageAttention`` per stage, sorted by stage name."""

    stages: tuple[StageAttention, ...]

    def __str__(self) -> str:
        return ",".join(str(stage) for stage in self.stages)

    def at(self, stage: str) -> StageAttention | None:
        """The attention configured for ``stage``, or None."""
        return next((entry for entry in self.stages if entry.stage == stage), None)

    def resolve(self, default_stage: str, stages: tuple[str, ...], arch: str) -> AttentionSpec:
        """Replace ``default`` by ``default_stage`` and check every stage exists in a network named ``arch``."""
        entries = [replace(e, stage=default_stage) if e.stage == DEFAULT_STAGE else e for e in self.stages]
        for entry in entries:
            if entry.stage not in stages:
                raise ValueError(
                    f"sta: unknown stage {entry.stage!r} for {arch} (stages: {', '.join(stages)})"
                )
        return AttentionSpec(_sorted_unique(entries, str(self)))


def parse_sta(spec: str | AttentionSpec | None) -> AttentionSpec | None:
    """Parse an ``sta=`` string; ``None``, ``""`` and ``"none"`` mean no attention.

    Raises ``ValueError`` naming the offending token.
    """
    if spec is None or isinstance(spec, AttentionSpec):
        return spec
    text = spec.strip()
    if text.lower() in ("", "none"):
        return None
    entries = [_parse_entry(entry.strip(), text) for entry in text.split(",")]
    return AttentionSpec(_sorted_unique(entries, text))


def _sorted_unique(entries: list[StageAttention], text: str) -> tuple[StageAttention, ...]:
    seen: set[str] = set()
    for entry in entries:
        if entry.stage in seen:
            raise ValueError(f"sta spec {text!r}: stage {entry.stage!r} is given twice")
        seen.add(entry.stage)
    return tuple(sorted(entries, key=lambda entry: entry.stage))


def _parse_entry(entry: str, text: str) -> StageAttention:
    def bad(problem: str) -> ValueError:
        return ValueError(f"sta spec {text!r}: {problem}")

    stage, *tokens = [token.strip() for token in entry.split(":")]
    if not _STAGE_NAME.fullmatch(stage):
        raise bad(f"bad stage name {stage!r} (expected e.g. 'layer4' or 'default')")
    fields: dict[str, object] = {}

    def put(key: str, value: object, token: str) -> None:
        if key in fields:
            raise bad(f"option {token!r} conflicts with an earlier option of {stage!r}")
        fields[key] = value

    for token in tokens:
        name, _, value = token.partition("=")
        if token in KINDS:
            put("kind", token, token)
        elif token == "bn":
            put("batch_norm", True, token)
        elif token in POSITIONS:
            put("position", token, token)
        elif token in ("deconv", "nodeconv"):
            put("deconv", token == "deconv", token)
        elif name == "blocks" and value in BLOCK_CHOICES:
            put("blocks", value, token)
        elif name == "init" and value in INITS:
            put("init", value, token)
        elif name in ("stride", "reduction") and value.isdigit() and int(value) >= 1:
            put(name, int(value), token)
        else:
            raise bad(
                f"unknown option {token!r} for {stage!r} (expected st|ta|sa|se, bn, residual|input|output, "
                f"blocks=all|first|last, nodeconv, stride=N, reduction=N, init={'|'.join(INITS)})"
            )
    attention = StageAttention(stage, **fields)  # type: ignore[arg-type]
    channel_only = attention.kind in ("sa", "se")
    if channel_only and ("deconv" in fields or "stride" in fields or "batch_norm" in fields):
        raise bad(f"{attention.kind!r} has no Deconv: 'nodeconv'/'stride'/'bn' do not apply to {stage!r}")
    if not channel_only and "reduction" in fields:
        raise bad(f"'reduction' applies to sa/se only, not to {attention.kind!r} in {stage!r}")
    if not attention.deconv and attention.stride != 1:
        raise bad(f"'stride' needs the Deconv, but {stage!r} also says 'nodeconv'")
    return attention
