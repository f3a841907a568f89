"""One config object per stage: a dataclass with documented defaults, loaded from TOML and overridden by CLI options.

Validation happens here, at the boundary: an unknown key or a value of the wrong type in a TOML file is reported as
one line naming the file and the key; choices (``Literal`` fields) and ranges are checked by each config's
``__post_init__``, so the stages themselves never re-check.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from flow.errors import InputError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")

# The tables a config file may hold, and the sub-tables of those that have them: one file serves every stage
# (``run`` reads it whole, ``train --config`` its ``[train]``), so a name no stage reads is a misspelling that would
# otherwise be ignored without a word. ``[train.<stream>]`` overrides ``[train]`` for one stream.
TRAIN_STREAMS = ("flow", "sta-flow", "rgb", "sta-rgb", "mars", "sta-mars")
TABLES: dict[str, tuple[str, ...] | None] = {
    "synth": None, "data": None, "extract": None, "train": TRAIN_STREAMS, "evaluate": None, "fuse": None,
    "detection": ("synth", "train", "detect", "rc3d", "rc3d_detect")}

# Keys an older config may still hold, and what replaced them: named in the error rather than guessed at (a
# boolean says nothing about how much memory to spend).
REPLACED_KEYS = {"cache_videos": "cache_mb, the MB of decoded frames kept in memory (0: none)"}


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a config file, reporting a missing file, a syntax error, bytes that are not UTF-8 or an unknown table
    as one line."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            tables = tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(path, "config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 only; tomllib lets the decoding error through
        raise InputError(path, f"not valid TOML (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is "
                               "not UTF-8)") from None
    check_tables(path, tables)
    return tables


def check_tables(path: str | Path, tables: Mapping[str, Any], known: Mapping[str, Any] = TABLES) -> None:
    """Refuse a table that no stage reads (``[trian]``, ``[train.flwo]``) and a value outside any table."""
    for name, table in tables.items():
        if name not in known:
            raise InputError(path, f"unknown table [{name}] (known: {', '.join(sorted(known))})")
        if not isinstance(table, dict):
            raise InputError(path, f"'{name}' must be a table ([{name}]), got {type(table).__name__}")
        subtables = known[name]
        for key, value in table.items() if subtables is not None else ():
            if key in subtables and not isinstance(value, dict):
                raise InputError(path, f"[{name}.{key}] must be a table, got {type(value).__name__}")
            if key not in subtables and isinstance(value, dict):
                listed = ", ".join(f"[{name}.{sub}]" for sub in subtables)
                raise InputError(path, f"unknown table [{name}.{key}] (known: {listed})")


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """The runtime types a field annotation admits (``int | None`` -> (int, NoneType))."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return tuple({type(choice) for choice in typing.get_args(annotation)})
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if origin is not None:
        return (origin,)
    if annotation is float:
        return (float, int)
    if annotation is None or annotation is type(None):
        return (type(None),)
    return (annotation,)


def _check_value(cls: type, field: dataclasses.Field, value: Any, source: str | Path | None) -> Any:
    hints = typing.get_type_hints(cls)
    allowed = _allowed_types(hints[field.name])
    if isinstance(value, list) and tuple in allowed:  # TOML has arrays, configs keep fixed pairs as tuples
        value = tuple(value)
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        raise InputError(source, f"'{field.name}' must be {_names(allowed)}, got {type(value).__name__} {value!r}")
    items = _item_types(hints[field.name]) if isinstance(value, tuple) else ()
    wrong = [item for item in value if not isinstance(item, items) or isinstance(item, bool) and bool not in items] \
        if items else []
    if wrong:
        raise InputError(source, f"'{field.name}' must hold {_names(items)} items, got {type(wrong[0]).__name__} "
                                 f"{wrong[0]!r}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _names(allowed: tuple[type, ...]) -> str:
    return " or ".join(sorted({t.__name__.replace("NoneType", "none") for t in allowed}))


def _item_types(annotation: Any) -> tuple[type, ...]:
    """The types the items of a tuple field admit (``tuple[float, ...] | None`` -> (float, int)); () if any."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for arg in typing.get_args(annotation) if union else (annotation,):
        if typing.get_origin(arg) is tuple:
            return tuple({t for item in typing.get_args(arg) if item is not Ellipsis for t in _allowed_types(item)})
    return ()


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` annotation admits (``Literal["a", "b"] | None`` -> ("a", "b", None)); () if any."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        nested = [_choices(arg) if arg is not type(None) else (None,) for arg in typing.get_args(annotation)]
        return () if any(not choices for choices in nested) else tuple(c for choices in nested for c in choices)
    return ()


def check_choices(config: Any) -> None:
    """Refuse a value outside its ``Literal`` field's choices; config dataclasses call it from ``__post_init__``,
    so a config made in Python is checked as one read from TOML is."""
    hints = typing.get_type_hints(type(config))
    check_one_of(**{field.name: (getattr(config, field.name), _choices(hints[field.name]))
                    for field in dataclasses.fields(config) if _choices(hints[field.name])})


def check_one_of(**values: tuple[Any, tuple[Any, ...]]) -> None:
    """Refuse ``name=(value, choices)`` pairs whose value is not among the choices."""
    for name, (value, choices) in values.items():
        if value not in choices:
            raise InputError(None, f"{name} {value!r}: expected one of {', '.join(str(c) for c in choices)}")


def check_at_least(**values: tuple[float, float]) -> None:
    """Refuse ``name=(value, minimum)`` pairs whose value lies below the minimum (or is ``nan``, which TOML has)."""
    for name, (value, minimum) in values.items():
        if not value >= minimum:
            raise InputError(None, f"{name} must be at least {minimum}, got {value}")


def check_above(**values: tuple[float, float]) -> None:
    """Refuse ``name=(value, bound)`` pairs whose value is not greater than the bound (a rate of 0 learns nothing)."""
    for name, (value, bound) in values.items():
        if not value > bound:
            raise InputError(None, f"{name} must be greater than {bound}, got {value}")


def build_config(
    cls: type[ConfigT],
    values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: str | Path | None = None,
    table: str | None = None,
) -> ConfigT:
    """Make ``cls`` from TOML ``values`` then ``overrides`` (CLI options; ``None`` means "not given").

    Keys may use dashes or underscores. Unknown keys, wrong types and values the dataclass refuses raise InputError
    naming ``source``, and ``table`` (``[train]``) when given, so the line says where in the file to look.
    """
    try:
        return _build(cls, values or {}, overrides or {}, source)
    except InputError as exc:
        if table and exc.path == (None if source is None else str(source)):
            raise InputError(exc.path, f"{table} {exc.problem}") from None
        raise


def _build(cls: type[ConfigT], values: Mapping[str, Any], overrides: Mapping[str, Any],
           source: str | Path | None) -> ConfigT:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    options = {key.replace("-", "_") for key, value in overrides.items() if value is not None}
    for mapping, from_option in ((values, False), (overrides, True)):
        for key, value in mapping.items():
            name = key.replace("-", "_")
            origin = option_name(name) if from_option else source
            if name not in fields and name in REPLACED_KEYS:
                raise InputError(origin, f"'{key}' was replaced by {REPLACED_KEYS[name]}")
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise InputError(origin, f"unknown key '{key}' (known: {known})")
            if value is None and from_option:
                continue
            merged[name] = _check_value(cls, fields[name], value, origin)
    try:
        return cls(**merged)
    except InputError as exc:  # the dataclass's own checks: name the option or the file the value came from
        raise InputError(exc.path or _option_at_fault(exc.problem, options) or source, exc.problem) from None
    except ValueError as exc:
        raise InputError(_option_at_fault(str(exc), options) or source, str(exc)) from None


def option_name(field: str) -> str:
    """The command-line option that sets a config field (``batch_size`` -> ``--batch-size``)."""
    return "--" + field.replace("_", "-")


def _option_at_fault(problem: str, options: set[str]) -> str | None:
    """The option a dataclass's refusal is about, when it came from one: the checks here (``check_at_least`` and
    the others) start their message with the field's name, so the line names the option the user typed instead of
    the config table, which the user may not have."""
    words = problem.split(maxsplit=1)
    field = words[0].rstrip(":,") if words else ""
    return option_name(field) if field in options else None


def load_config(
    cls: type[ConfigT],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    table: str | None = None,
) -> ConfigT:
    """Load ``cls`` from a TOML file (optionally one of its tables), then apply CLI overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = read_toml(path)
        if table is not None:
            values = values.get(table, {})
    return build_config(cls, values, overrides, source=path, table=f"[{table}]" if path and table else None)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass, for manifests and checkpoints."""
    return dataclasses.asdict(config)


def check_model_choice(arch: str, sta: str | None, source: str | Path | None, label: str,
                       layer: str | None = None) -> None:
    """An architecture the registry has, an STA spec it can take and, when given, a ``layer`` among its stages
    (or ``pool``): checked when a file is read, not when the network is built hours later. ``label`` (the table)
    goes before the problem; empty when ``source`` is the option that gave the value."""
    from mars_sta import model_entry, parse_sta

    prefix = f"{label} " if label else ""
    try:
        entry = model_entry(arch)
        spec = parse_sta(sta)
        if spec is not None:
            spec.resolve(entry.default_sta_stage, entry.stages, arch)
    except ValueError as exc:
        raise InputError(source, f"{prefix}{exc}") from None
    if layer is not None and layer not in (*entry.stages, "pool"):
        raise InputError(source, f"{prefix}layer {layer!r}: expected pool or one of {', '.join(entry.stages)}")
