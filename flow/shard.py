"""Which share of the video list this process extracts: ``--shard I/N``, torchrun's or Slurm's environment.

Shard I of N takes every N-th video of the list sorted by id, starting at the I-th (0-based), so the shards of one
list are disjoint, cover it, and need no coordination.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flow.errors import InputError

Item = TypeVar("Item")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    origin: str  # where it came from, for the summary: "--shard", "RANK/WORLD_SIZE" or "SLURM_ARRAY_TASK_*"

    def select(self, items: Sequence[Item]) -> list[Item]:
        return list(items[self.index::self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, origin: str = "--shard") -> Shard:
    """``"I/N"`` with 0 ≤ I < N."""
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise InputError(None, f"{origin}: expected I/N such as 0/4, got {text!r}")
    shard = Shard(int(index), int(count), origin)
    if shard.count < 1:
        raise InputError(None, f"{origin}: {text!r}: N must be at least 1 (I/N takes share I of N, numbered from 0: "
                               "0/4, 1/4, 2/4 and 3/4 are the four shares of 4)")
    if shard.index >= shard.count:
        shares = "only 0/1" if shard.count == 1 else f"0/{shard.count} to {shard.count - 1}/{shard.count}"
        raise InputError(None, f"{origin}: {text!r}: there is no share {shard.index} of {shard.count}; shares are "
                               f"numbered from 0, so {shares}")
    return shard


def shard_from_environment(environ: Mapping[str, str]) -> Shard | None:
    """torchrun's RANK/WORLD_SIZE, else a Slurm job array's task id relative to its first task."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return parse_shard(f"{environ['RANK']}/{environ['WORLD_SIZE']}", "RANK/WORLD_SIZE")
    if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        try:
            offset = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            index = offset // int(environ.get("SLURM_ARRAY_TASK_STEP", "1"))
        except ValueError:
            raise InputError(None, "SLURM_ARRAY_TASK_ID/MIN/STEP are not integers") from None
        return parse_shard(f"{index}/{environ['SLURM_ARRAY_TASK_COUNT']}", "SLURM_ARRAY_TASK_*")
    return None


def resolve_shard(option: str | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard to extract: the option wins over the environment; one shard of one is no shard."""
    shard = parse_shard(option) if option else shard_from_environment(environ)
    return shard if shard is not None and shard.count > 1 else None
