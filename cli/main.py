"""The ``mars-sta`` Click group: wires the commands of each area and turns user errors into one line."""
from __future__ import annotations

import re
import sys

import click

from cli import byod, data, detection, flowcmds, fusion, models, report, stages
from flow.errors import InputError

# Exit status for bad input (a file or option the user gave); 1 is left for runs that finished with failures.
EXIT_BAD_INPUT = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message alone is what the user needs to see."""
    errors: list[type[BaseException]] = [InputError, FileNotFoundError, PermissionError, IsADirectoryError]
    if "mars_sta" in sys.modules:
        errors.append(sys.modules["mars_sta"].CheckpointError)
    return tuple(errors)


class MarsStaGroup(click.Group):
    """A group that prints ``error: <one line>`` for bad input, and the traceback only with ``--debug``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            if isinstance(exc, click.MissingParameter) or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(f"error: {_option_refusal(exc)}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except Exception as exc:  # noqa: BLE001 - filtered just below
            message = _worker_user_error(exc) or (str(exc) if isinstance(exc, _user_errors()) else None)
            if message is None or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(EXIT_BAD_INPUT)


def _option_refusal(exc: click.BadParameter) -> str:
    """``--lr: -1.0 is not in the range x>0.``: the option first, as a file comes first in other errors."""
    hint = exc.param_hint if exc.param_hint is not None else (
        exc.param.get_error_hint(exc.ctx) if exc.param is not None else "value")
    if not isinstance(hint, str):
        hint = " / ".join(hint)
    return f"{hint.replace(chr(39), '')}: {exc.message}"


# How PyTorch re-raises an exception from a DataLoader worker: the type's name, then the worker's traceback text,
# whose last line is ``<module>.<Type>: <message>``. Our errors take two arguments, so PyTorch cannot rebuild them
# and raises a RuntimeError holding that text instead.
_WORKER_ERROR = re.compile(r"\ACaught (?P<type>\w+) in DataLoader worker process \d+\.")
_LAST_LINE = re.compile(r"^[\w.]*?(?P<type>\w+): (?P<message>.+)$")


def _worker_user_error(exc: BaseException) -> str | None:
    """The one-line message of a user error raised in a DataLoader worker, or None for anything else."""
    text = str(exc)
    caught = _WORKER_ERROR.match(text)
    lines = text.rstrip().splitlines()
    last = _LAST_LINE.match(lines[-1]) if caught and lines else None
    if last is None or last["type"] != caught["type"]:
        return None
    return last["message"] if caught["type"] in {t.__name__ for t in _user_error_classes()} else None


def _user_error_classes() -> list[type[BaseException]]:
    """Every user-error type, subclasses included (a worker reports only the type's name)."""
    found, todo = [], list(_user_errors())
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo += kind.__subclasses__()
    return found


@click.group(cls=MarsStaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.version_option(package_name="mars-sta")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """STA-MARS action recognition: TV-L1 flow store, Flow/RGB/MARS training with STA, evaluation and late fusion.

    \b
    Typical order:  synth | extract-flow  ->  train --stream flow  ->  train --stream rgb|mars
                    ->  evaluate  ->  fuse        (or all at once: run CONFIG.toml, demo)
    Detection:      synth --untrimmed  ->  extract-flow  ->  [features]  ->  train-detector
                    ->  detect  ->  eval-detection        (demo --task detection)
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _module in (data, flowcmds, models, fusion, stages, report, byod, detection):
    for _command in _module.commands:
        main.add_command(_command)


