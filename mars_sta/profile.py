"""Parameter counts and compute with and without attention: the paper's Tables III and IV, measured.

Compute is counted by ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (no memory, no arithmetic), so
even ResNeXt-101 at 64 frames takes about a second. FlopCounterMode counts a multiply-add as 2 FLOPs; the paper's
"GFLOPs" are multiply-accumulates, so figures are given as MACs (= FlopCounterMode / 2), with the 2-per-MAC FLOPs
beside them. Only convolutions and matrix products are counted (not BN, ReLU, pooling or the W ⊙ X product), as in
Table IV's formula.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch.utils.flop_counter import FlopCounterMode

from mars_sta.registry import build_model, model_entry
from mars_sta.sta import STA, Attention, ChannelAttention, attention_modules


@dataclass
class ModelCost:
    """One network: parameters (all, and without the classifier) and multiply-accumulates per clip."""

    label: str
    params: int
    params_without_classifier: int
    macs: int

    @property
    def flops(self) -> int:
        """FLOPs counting a multiply-add as 2 (FlopCounterMode's convention)."""
        return 2 * self.macs


@dataclass
class AttentionCost:
    """One attention module: its input shape, measured cost, and Table IV's formulas where they apply (STA)."""

    name: str
    kind: str
    channels: int
    length: int
    height: int
    width: int
    params: int
    macs: int
    table4_params: int | None
    table4_mults: int | None


@dataclass
class Profile:
    """Base network, the same network with attention, and each attention module (Tables III and IV)."""

    arch: str
    sta: str | None
    frames: int
    size: int
    num_classes: int
    in_channels: int
    base: ModelCost
    with_attention: ModelCost | None = None
    attention: list[AttentionCost] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for cost in (data["base"], data["with_attention"]):
            if cost is not None:
                cost["flops"] = 2 * cost["macs"]
        data["conventions"] = {"macs": "multiply-accumulates (the paper's GFLOPs)",
                               "flops": "2 per multiply-accumulate (torch FlopCounterMode)"}
        return data

    def table(self) -> str:
        """A readable report: Table III (whole networks) and Table IV (attention modules)."""
        rows = [self.base] + ([self.with_attention] if self.with_attention else [])
        wide = max(len(row.label) for row in rows) + 2
        lines = [
            f"{self.arch}, {self.frames} frames, {self.size}×{self.size}, {self.num_classes} classes, "
            f"{self.in_channels} input channels (batch 1)",
            "",
            f"{'network':<{wide}}{'params':>13}{'params w/o fc':>15}{'GMACs':>11}{'GFLOPs (2/MAC)':>16}",
        ]
        for row in rows:
            lines.append(f"{row.label:<{wide}}{row.params:>13,}{row.params_without_classifier:>15,}"
                         f"{row.macs / 1e9:>11.4f}{row.flops / 1e9:>16.4f}")
        if self.with_attention:
            extra, base = self.with_attention, self.base
            lines.append(f"{'difference':<{wide}}{extra.params - base.params:>+13,}"
                         f"{extra.params_without_classifier - base.params_without_classifier:>+15,}"
                         f"{(extra.macs - base.macs) / 1e9:>+11.4f}{(extra.flops - base.flops) / 1e9:>+16.4f}")
        if self.attention:
            name_wide = max(len(cost.name) for cost in self.attention) + 2
            kind_wide = max(len(cost.kind) for cost in self.attention) + 2
            lines += [
                "",
                "attention modules (MACs measured; Table IV for STA: params c·(h·w+4)+5, mults c·l·(h·w+4)+3·l)",
                f"{'module':<{name_wide}}{'kind':<{kind_wide}}{'c':>6}{'l':>4}{'h×w':>7}{'params':>10}"
                f"{'Table IV':>10}{'MACs':>11}{'Table IV':>11}",
            ]
            for cost in self.attention:
                lines.append(
                    f"{cost.name:<{name_wide}}{cost.kind:<{kind_wide}}{cost.channels:>6}{cost.length:>4}"
                    f"{f'{cost.height}×{cost.width}':>7}{cost.params:>10,}{_maybe(cost.table4_params):>10}"
                    f"{cost.macs:>11,}{_maybe(cost.table4_mults):>11}"
                )
            lines.append(f"{'total':<{name_wide + kind_wide + 17}}{sum(c.params for c in self.attention):>10,}"
                         f"{'':>10}{sum(c.macs for c in self.attention):>11,}")
        return "\n".join(lines)


def _maybe(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def profile_model(
    arch: str,
    *,
    sta: str | None = "default",
    frames: int = 16,
    size: int = 112,
    num_classes: int = 51,
    in_channels: int = 3,
) -> Profile:
    """Measure ``arch`` without attention and, when ``sta`` is given, with it, on one clip (batch 1)."""
    kwargs = {"num_classes": num_classes, "in_channels": in_channels, "sample_size": size, "sample_duration": frames}
    base, _, _ = _measure(arch, None, kwargs)
    result = Profile(arch, None, frames, size, num_classes, in_channels, base)
    if sta is not None and sta.strip().lower() not in ("", "none"):
        result.with_attention, result.attention, result.sta = _measure(arch, sta, kwargs)
    return result


def _measure(arch: str, sta: str | None, kwargs: dict) -> tuple[ModelCost, list[AttentionCost], str | None]:
    with torch.device("meta"):
        model = build_model(arch, sta=sta, **kwargs).eval()
        clip = torch.empty(1, kwargs["in_channels"], kwargs["sample_duration"], kwargs["sample_size"],
                           kwargs["sample_size"])
    with FlopCounterMode(display=False) as counter:
        inputs = _attention_inputs(model, clip)
    classifier = getattr(model, model_entry(arch).classifier)
    params = sum(p.numel() for p in model.parameters())
    # build_model's plain attribute, which nn.Module's __getattr__ types as a tensor or a submodule.
    canonical = cast(dict[str, Any], model.build_kwargs)["sta"]
    label = arch if canonical is None else f"{arch} + sta {canonical}"
    cost = ModelCost(label, params, params - sum(p.numel() for p in classifier.parameters()),
                     counter.get_total_flops() // 2)
    modules = [_attention_cost(name, module, inputs[name]) for name, module in attention_modules(model)]
    return cost, modules, canonical


def _attention_inputs(model: torch.nn.Module, clip: torch.Tensor) -> dict[str, torch.Size]:
    """Run ``model`` on ``clip`` and return the input shape each attention module saw, by qualified name."""
    inputs: dict[str, torch.Size] = {}
    hooks = [module.register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args[0].shape))
             for name, module in attention_modules(model)]
    with torch.no_grad():
        model(clip)
    for hook in hooks:
        hook.remove()
    return inputs


def attention_time_steps(arch: str, *, sta: str, frames: int, size: int, in_channels: int = 3) -> dict[str, int]:
    """The temporal length L of the feature map each attention module of ``arch`` weighs, for clips of ``frames``.

    Where L is 1 the temporal attention has nothing to weigh and STA degenerates to a channel gate (ResNeXt-101's
    layer4 at 16 frames). Runs on meta tensors: no memory, no arithmetic.

    Args:
        arch: a registry name.
        sta: the ``sta=`` spec.
        frames: clip length (``sample_duration``).
        size: clip height and width (``sample_size``).
        in_channels: 3 for RGB, 2 for flow.
    """
    with torch.device("meta"):
        model = build_model(arch, sta=sta, num_classes=2, in_channels=in_channels, sample_size=size,
                            sample_duration=frames).eval()
        clip = torch.empty(1, in_channels, frames, size, size)
    return {name: shape[2] for name, shape in _attention_inputs(model, clip).items()}


def _attention_cost(name: str, module: Attention, shape: torch.Size) -> AttentionCost:
    _, channels, length, height, width = shape
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.empty(shape, device="meta"))
    is_sta = isinstance(module, STA) and module.attention == "st" and module.deconv is not None \
        and module.deconv.kernel_size == (3,)
    table4_params = channels * (height * width + 4) + 5 if is_sta else None
    table4_mults = channels * length * (height * width + 4) + 3 * length \
        if is_sta and module.deconv.stride == (1,) else None
    return AttentionCost(
        name=name,
        kind=_kind(module),
        channels=channels,
        length=length,
        height=height,
        width=width,
        params=sum(p.numel() for p in module.parameters()),
        macs=counter.get_total_flops() // 2,
        table4_params=table4_params,
        table4_mults=table4_mults,
    )


def _kind(module: Attention) -> str:
    if isinstance(module, STA):
        return ("st" if module.attention == "st" else "ta") + ("" if module.deconv is not None else "-nodeconv")
    if isinstance(module, ChannelAttention):
        return "sa" if module.squeeze == "learned" else "se"
    return type(module).__name__
