"""The one training loop of recognition and both detectors: seeded micro-batches, accumulation, AMP, logging,
checkpoints every epoch, resume.

A task (``TrainingTask``) says what an epoch is: its micro-batches, each with the seed set before it and grouped
into optimizer steps; the loss of one; what ends an epoch (validation, schedules); and the checkpoint of its
weights. The loop does the rest the same way for all: under DistributedDataParallel the gradients are synchronised
only on a step's last micro-batch (``no_sync`` before), each micro-batch's loss is divided by ``accumulate``, the
GradScaler scales it (a no-op without fp16), and after each epoch rank 0 saves the checkpoint with the optimizer,
scheduler and random number generator states, rewrites the JSON-lines log and adds TensorBoard scalars
(``OUT/tensorboard``, when ``tensorboard`` is installed); every rank then meets at a barrier.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from flow.atomic import write_text_atomic
from flow.errors import InputError
from pipelines.core.checkpoint import (Checkpoint, load_checkpoint, restore_resume_state, resume_state,
                                       save_checkpoint)
from pipelines.core.device import autocast
from pipelines.core.distributed import DistContext, all_reduce_sum, barrier


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch of this process: the seed dropout and sampling start from, and how to read its data
    (read only when its turn comes, so loading sees the random state it always saw)."""

    seed: int
    load: Callable[[], Any]


class TrainingTask(Protocol):
    """What a stage supplies to the loop."""

    name: str  # names the run in log lines and TensorBoard tags
    metrics: tuple[str, ...]  # the names of the sums ``loss`` returns, the same on every process
    optimizer: torch.optim.Optimizer
    scheduler: Any  # saved and restored with the optimizer; None when there is none
    synced: torch.nn.Module | None  # the module under DistributedDataParallel, if any

    def steps(self, epoch: int) -> Iterable[Sequence[MicroBatch]]:
        """This process's micro-batches of each optimizer step of ``epoch`` (0-based), in order."""

    def loss(self, data: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch (run under autocast) and the sums it adds to the epoch's metrics."""

    def after_backward(self) -> None:
        """Before each optimizer step: what the gradients still need (averaging by hand over processes)."""

    def after_step(self) -> None:
        """After each optimizer step (a schedule that steps per batch)."""

    def end_epoch(self, epoch: int, sums: dict[str, float]) -> dict[str, Any]:
        """The epoch's metrics row from its sums over all processes (validation and per-epoch schedules here)."""

    def checkpoint(self, epochs_done: int, row: dict[str, Any]) -> Checkpoint:
        """The checkpoint of the weights after ``epochs_done`` epochs (``path`` is where it goes)."""

    def best(self, row: dict[str, Any]) -> Path | None:
        """Where to save a copy without resume state when this epoch is the best so far; None otherwise."""

    def describe(self, epochs_done: int, row: dict[str, Any]) -> str:
        """The line said after an epoch."""


@dataclass
class LoopSettings:
    """How the loop runs a task: epochs, accumulation, devices, and where it writes."""

    epochs: int
    accumulate: int
    context: DistContext
    device: torch.device
    out: Path  # the run's folder (TensorBoard events go to its ``tensorboard``)
    say: Callable[[str], None]
    amp: torch.dtype | None = None
    metrics: Path | None = None  # the JSON-lines log, one row per epoch, when the stage keeps one
    history: list[dict[str, Any]] = field(default_factory=list)  # the rows of the epochs already trained


def check_resumable(checkpoint: Checkpoint, epochs: int, key: str | None = None) -> None:
    """Refuse to continue a checkpoint of another run (``key``: its ``run_key``, when the stage checks it here) or
    one that has trained more epochs than asked for."""
    if key is not None and checkpoint.run_key != key:
        raise InputError(checkpoint.path, "was trained with another config or other inputs; use another --out or "
                                          "delete it")
    if checkpoint.epoch > epochs:
        raise InputError(checkpoint.path, f"holds {checkpoint.epoch} trained epochs, more than the {epochs} asked "
                                          "for; ask for at least as many, or use a new --out folder")


def resume_if_any(path: Path, task: TrainingTask, epochs: int, key: str,
                  load_weights: Callable[[Checkpoint], None]) -> int:
    """The epochs already trained in ``path`` (0 when there is none), its weights and states restored once it is
    known to be this run's."""
    if not path.is_file():
        return 0
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, epochs, key)
    load_weights(checkpoint)
    return restore(checkpoint, task)


def restore(checkpoint: Checkpoint, task: TrainingTask) -> int:
    """Continue from a checkpoint the task has accepted: optimizer, scheduler and random states (the weights are
    the task's to load). Returns the epochs already trained."""
    restore_resume_state(checkpoint, task.optimizer, task.scheduler)
    return checkpoint.epoch


def run_epochs(task: TrainingTask, settings: LoopSettings, start: int) -> list[dict[str, Any]]:
    """Train epochs ``start`` … ``settings.epochs - 1``, checkpointing each; returns every epoch's row."""
    history = settings.history
    main = settings.context.is_main
    scaler = torch.amp.GradScaler(settings.device.type, enabled=settings.amp is torch.float16)
    with _scalar_writer(settings.out) if main else contextlib.nullcontext() as writer:
        for epoch in range(start, settings.epochs):
            started = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": task.optimizer.param_groups[0]["lr"]}
            sums = _train_epoch(task, settings, epoch, scaler)
            totals = all_reduce_sum(list(sums.values()), settings.context, settings.device)
            row.update(task.end_epoch(epoch, dict(zip(sums, totals))))
            row["seconds"] = round(time.perf_counter() - started, 3)
            history.append(row)
            if main:
                _save(task, epoch + 1, row)
                if settings.metrics is not None:
                    write_text_atomic(settings.metrics, "".join(json.dumps(r) + "\n" for r in history))
                _add_scalars(writer, f"{task.name}/epoch", row, epoch + 1)
            barrier(settings.context)
            settings.say(task.describe(epoch + 1, row))
    return history


def _save(task: TrainingTask, epochs_done: int, row: dict[str, Any]) -> None:
    """The best copy when the task says so, then the checkpoint with what resuming needs (atomic both)."""
    checkpoint = task.checkpoint(epochs_done, row)
    best = task.best(row)
    if best is not None:
        save_checkpoint(best, checkpoint.to_payload())
    payload = checkpoint.to_payload()
    payload.update(vars(resume_state(task.optimizer, task.scheduler)))
    save_checkpoint(checkpoint.path, payload)


def _train_epoch(task: TrainingTask, settings: LoopSettings, epoch: int,
                 scaler: torch.amp.GradScaler) -> dict[str, float]:
    """One epoch of optimizer steps; returns this process's metric sums."""
    sums = dict.fromkeys(task.metrics, 0.0)
    for step in task.steps(epoch):
        for position, micro in enumerate(step):
            torch.manual_seed(micro.seed)
            last = position == len(step) - 1
            synced = task.synced
            with synced.no_sync() if isinstance(synced, DistributedDataParallel) and not last \
                    else contextlib.nullcontext():
                with autocast(settings.device, settings.amp):
                    loss, found = task.loss(micro.load())
                scaler.scale(loss / settings.accumulate).backward()
            for key, value in found.items():
                sums[key] += value
        task.after_backward()
        scaler.step(task.optimizer)
        scaler.update()
        task.optimizer.zero_grad(set_to_none=True)
        task.after_step()
    return sums


@contextlib.contextmanager
def _scalar_writer(out: Path) -> Iterator[Any]:
    """TensorBoard's writer into ``out/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        yield None
        return
    writer = SummaryWriter(log_dir=str(out / "tensorboard"))
    try:
        yield writer
    finally:
        writer.close()


def _add_scalars(writer: Any, prefix: str, row: dict[str, Any], step: int) -> None:
    """Every number of a metrics row (but the epoch and its seconds) as a scalar ``prefix/name`` at ``step``."""
    if writer is None:
        return
    for key, value in row.items():
        if key not in ("epoch", "seconds") and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, step)
    writer.flush()
