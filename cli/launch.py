"""``--nproc N``: start the same command again under torchrun's elastic agent on this machine."""
from __future__ import annotations

import os
import subprocess
import sys

import click


def relaunch_under_torchrun(nproc: int) -> None:
    """Run this very command line under ``torch.distributed.run`` with ``nproc`` processes, then exit with its status."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise click.UsageError("--nproc is for a plain launch; under torchrun, leave it out")
    args = _without_nproc(sys.argv[1:])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cli", *args]
    raise SystemExit(subprocess.call(command))


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
