"""``--nproc N``: start the same command again under torchrun's elastic agent on this machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import click

# The command line travels to the processes in this variable, around torchrun's own option parser, which would
# read an option such as --sta as an abbreviation of its --standalone.
ARGS_VARIABLE = "MARS_STA_TORCHRUN_ARGS"


def relaunch_under_torchrun(nproc: int) -> None:
    """Run this very command line under ``torch.distributed.run`` with ``nproc`` processes, then exit with its status."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise click.UsageError("--nproc is for a plain launch; under torchrun, leave it out")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cli"]
    environment = {**os.environ, ARGS_VARIABLE: json.dumps(_without_nproc(sys.argv[1:]))}
    raise SystemExit(subprocess.call(command, env=environment))


def relaunched_args() -> list[str] | None:
    """The command line a process started by ``relaunch_under_torchrun`` runs (None for a plain start)."""
    value = os.environ.pop(ARGS_VARIABLE, None)
    return json.loads(value) if value is not None else None


def _without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept
