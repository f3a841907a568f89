"""Named architectures and the one path that builds them.

Every model comes out of ``build_model`` with ``model.arch`` (its registry name) and ``model.build_kwargs`` (plain
values that rebuild it), which is all a checkpoint needs to recreate the network.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mars_sta.inputs import InputConfig
from mars_sta.spec import AttentionSpec, parse_sta

Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its factory, what ``build_model`` must know before calling it, and the layers
    that loading other weights treats apart (``first_conv`` is adapted between RGB and flow input, ``classifier``
    is replaced when the class count differs); ``default_input`` is how its usual weights read clips, and what
    ``build_model`` sizes it for when no size is given."""

    name: str
    factory: Factory
    default_shortcut: str | None
    stages: tuple[str, ...]
    default_sta_stage: str
    first_conv: str = "conv1"
    classifier: str = "fc"
    default_input: InputConfig = InputConfig()

    @property
    def description(self) -> str:
        doc = (self.factory.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, default_shortcut: str | None, stages: tuple[str, ...], default_sta_stage: str,
    first_conv: str = "conv1", classifier: str = "fc", default_input: InputConfig = InputConfig(),
) -> Callable[[Factory], Factory]:
    """Register ``factory(*, num_classes, in_channels, sample_size, sample_duration, shortcut, attention)``.

    Args:
        name: the registry name (``resnext101``), recorded in checkpoints as ``arch``.
        default_shortcut: "A" or "B" for residual networks, None for networks without residual shortcuts.
        stages: the names an ``sta=`` spec may use.
        default_sta_stage: the stage ``sta="default"`` means.
        first_conv: the module that reads the input clip (its weight is adapted between 2 and 3 channels).
        classifier: the module that gives the logits (replaced when a file's class count differs).
        default_input: the clips its usual weights read (frames, side, normalisation), as timm's ``PretrainedCfg``.
    """

    def decorate(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, factory, default_shortcut, stages, default_sta_stage, first_conv,
                                     classifier, default_input)
        return factory

    return decorate


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(list_models())})") from None


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    sample_size: int | None = None,
    sample_duration: int | None = None,
    shortcut: str | None = None,
    sta: str | AttentionSpec | None = None,
) -> nn.Module:
    """Build a registered network, with attention where ``sta`` says (see ``mars_sta.spec``).

    The model comes back with ``model.arch`` and ``model.build_kwargs`` set, which rebuild it from a checkpoint.

    Args:
        name: a registry name (``list_models()``).
        num_classes: classes of the classifier.
        in_channels: 3 for RGB clips, 2 for flow.
        sample_size: the clip's height and width; fixes the spatial size attention modules are built for (None:
            the entry's ``default_input.size``).
        sample_duration: frames per clip; matters only to C3D's flattened head (None: ``default_input.frames``).
        shortcut: "A" or "B"; None takes the architecture's default (None for C3D, which has no shortcuts).
        sta: an STA spec (``"layer4"``, ``"layer3:ta"``, ...) or None for the plain network.
    """
    entry = model_entry(name)
    sizes = {"num_classes": num_classes, "in_channels": in_channels,
             "sample_size": entry.default_input.size if sample_size is None else sample_size,
             "sample_duration": entry.default_input.frames if sample_duration is None else sample_duration}
    for label, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    kwargs = {**sizes, "shortcut": _resolve_shortcut(entry, name, shortcut)}
    spec = parse_sta(sta)
    if spec is not None:
        spec = spec.resolve(entry.default_sta_stage, entry.stages, name)
    model = entry.factory(**kwargs, attention=spec)
    # Plain attributes: nn.Module types its __setattr__ for tensors and submodules only.
    model.arch = name  # type: ignore[assignment]
    model.build_kwargs = {**kwargs, "sta": None if spec is None else str(spec)}  # type: ignore[assignment]
    return model


def _resolve_shortcut(entry: ModelEntry, name: str, shortcut: str | None) -> str | None:
    """The architecture's default shortcut when none is given; C3D-like entries (no default) take none."""
    if entry.default_shortcut is None:
        if shortcut is not None:
            raise ValueError(f"{name} has no residual shortcuts; leave shortcut unset (got {shortcut!r})")
        return None
    shortcut = (shortcut or entry.default_shortcut).upper()
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    return shortcut
