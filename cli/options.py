"""Option types shared by every command: each rule about what an option accepts is written here once.

Click checks these while it parses the command line, before the command runs, so a bad value is refused before
any work starts; ``cli.main`` prints the refusal as one line naming the option (exit status 2). Types that need a
library (the model registry, the ``--sta`` parser) import it only when the option is given, so ``--help`` stays fast.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from flow.errors import InputError
from pipelines.core.stream_specs import StreamName


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf``, which pass every comparison a range makes."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE_INT = click.IntRange(min=1)
COUNT = click.IntRange(min=0)  # workers (0: as many as CPUs), seeds, sizes where 0 means "keep"
POSITIVE_FLOAT = FiniteFloatRange(min=0, min_open=True)
NON_NEGATIVE_FLOAT = FiniteFloatRange(min=0)
FRACTION_BELOW_ONE = FiniteFloatRange(0, 1, max_open=True)  # a share held out: 1 would leave nothing to train on
JPEG_QUALITY = click.IntRange(1, 100)


class Parsed(click.ParamType):
    """A value read by a library's own parser, so the option and the config file accept exactly the same text.

    The parser's ``ValueError`` (``InputError`` is none; it is caught by name) becomes the option's refusal.
    """

    def __init__(self, name: str, parser: Callable[[], Callable[[str], Any]]) -> None:
        self.name = name
        self._parser = parser  # imported lazily: the library may pull in torch

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            self._parser()(value)
        except (ValueError, InputError) as exc:
            self.fail(_without_name(getattr(exc, "problem", str(exc)), self.name), param, ctx)
        return value


def _without_name(message: str, name: str) -> str:
    """The parser's message without its own ``--name: `` prefix: the refusal names the option already."""
    return message.removeprefix(f"--{name}: ").removeprefix(f"--{name} ").removeprefix(f"{name}: ")


def _registered_model() -> Callable[[str], Any]:
    from mars_sta import model_entry

    return model_entry


def _sta_spec() -> Callable[[str], Any]:
    from mars_sta import parse_sta

    return parse_sta


def _shard() -> Callable[[str], Any]:
    from flow.shard import parse_shard

    return parse_shard


def _device_name() -> Callable[[str], Any]:
    from flow.tvl1 import check_device_name

    return check_device_name


def _protocol() -> Callable[[str], Any]:
    from pipelines.stages.evaluate import parse_protocol

    return parse_protocol


ARCH = Parsed("arch", _registered_model)
STA_SPEC = Parsed("sta", _sta_spec)
SHARD = Parsed("shard", _shard)
PROTOCOL = Parsed("protocol", _protocol)
DEVICE_NAME = Parsed("device", _device_name)  # auto, cpu, cuda or cuda:N; whether that GPU exists is checked later


def check_model_choice(arch: str, sta: str | None, arch_from: str | Path, sta_from: str | Path) -> None:
    """Refuse an unknown architecture, or an STA spec that it cannot take, once both are settled (options, then
    the config file); ``arch_from``/``sta_from`` name where each came from (an option or the file)."""
    from mars_sta import model_entry, parse_sta

    try:
        entry = model_entry(arch)
    except ValueError as exc:
        raise InputError(arch_from, _without_name(str(exc), "arch")) from None
    try:
        spec = parse_sta(sta)
        if spec is not None:
            spec.resolve(entry.default_sta_stage, entry.stages, arch)
    except ValueError as exc:
        raise InputError(sta_from, _without_name(str(exc), "sta")) from None


class StreamWeights(click.ParamType):
    """``mars=1,rgb=1,flow=1.5`` -> {"mars": 1.0, "rgb": 1.0, "flow": 1.5}; weights finite and positive."""

    name = "STREAM=W,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, float]:
        if isinstance(value, dict):
            return value
        weights: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in str(value).split(","))):
            stream, sep, number = item.partition("=")
            try:
                weight = float(number)
            except ValueError:
                sep = ""
            if not sep or not stream.strip():
                self.fail(f"{item!r} is not STREAM=WEIGHT (e.g. mars=1,flow=1.5)", param, ctx)
            if not (math.isfinite(weight) and weight > 0):
                self.fail(f"weight of {stream.strip()!r} must be a finite number > 0, got {number.strip()!r}",
                          param, ctx)
            try:
                weights[str(StreamName.parse(stream.strip()))] = weight
            except InputError as exc:
                self.fail(exc.problem, param, ctx)
        if not weights:
            self.fail("give at least one STREAM=WEIGHT", param, ctx)
        return weights


def writable_problem(path: Path, is_file: bool) -> str | None:
    """Why ``path`` (a folder, or a file when ``is_file``) cannot be written, or None when it can.

    Writes a probe file in the nearest folder that exists: permission bits do not stop root, while a read-only
    or immutable folder stops everyone, so only a real write tells. Nothing is created on the way there.
    """
    if path.is_dir() if is_file else (path.exists() and not path.is_dir()):
        return "is a folder, not a file" if is_file else "is a file, not a folder"
    folder = path.parent if is_file else path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be written: {folder} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
    except OSError as exc:
        return f"cannot be written: {folder}: {exc.strerror or exc}"
    os.close(handle)
    os.unlink(probe)
    return None


class Writable(click.Path):
    """An output path that can be written, checked by a probe write when the option is parsed (before any work)."""

    def __init__(self, is_file: bool = False) -> None:
        super().__init__(file_okay=is_file, dir_okay=not is_file, path_type=Path)
        self.is_file = is_file

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        problem = writable_problem(path, self.is_file)
        if problem:
            self.fail(f"{path}: {problem}", param, ctx)
        return path


WRITABLE_FOLDER = Writable()
WRITABLE_FILE = Writable(is_file=True)


def require_writable(path: Path, is_file: bool, option: str) -> None:
    """The same check for an output whose path is known only once the command runs (a default beside an input)."""
    problem = writable_problem(path, is_file)
    if problem:
        raise click.BadParameter(f"{path}: {problem}", param_hint=f"'{option}'")
