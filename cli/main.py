"""The ``mars-sta`` Click group: wires the commands of each area and turns user errors into one line."""
from __future__ import annotations

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
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not isinstance(exc, _user_errors()) or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=MarsStaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.version_option(package_name="mars-sta")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """STA-MARS action recognition: TV-L1 flow store, Flow/RGB/MARS training with STA, evaluation and late fusion.

    \b
    Typical order:  synth | extract-flow  ->  train --stream flow  ->  train --stream rgb|mars
                    ->  evaluate  ->  fuse        (or all at once: run CONFIG.toml, demo)
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _module in (data, flowcmds, models, fusion, stages, report, byod, detection):
    for _command in _module.commands:
        main.add_command(_command)


