"""PyTorch's own distributed engine, as torchrun starts it: process group, batch plan, reductions, rank-0 IO.

One process without torchrun is simply world size 1: the same code path, no process group. The batch plan is
what makes a 2-process run comparable with one process: an epoch's permutation depends only on (seed, epoch), is
cut into global steps, and each step into ``parts = world_size × accumulate`` micro-batches. Rank r trains on
parts r·accumulate … (r+1)·accumulate − 1 of every step, so one process with ``accumulate = 2`` sees exactly the
micro-batches that two processes see.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.distributed as dist

from flow.errors import InputError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and reports."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_leave_process_group)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def _leave_process_group() -> None:
    """Destroy the process group while the interpreter is whole: left to interpreter shutdown, gloo's worker
    threads can outlive the objects they use, and the process aborts ("terminate called without an active
    exception") after its work is done."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, context: DistContext) -> torch.device:
    """Each process of a node takes its own GPU (``LOCAL_RANK``); CPU processes share the CPU."""
    if device.type == "cuda" and context.active:
        if context.local_rank >= torch.cuda.device_count():
            raise InputError(None, f"LOCAL_RANK {context.local_rank} but only {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return device


def batch_plan(size: int, batch_size: int, parts: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Steps × parts × indices for one epoch: a (seed, epoch) permutation cut into full steps (the rest dropped,
    as MARS's ``drop_last``); a dataset smaller than one step gives one step shared round-robin."""
    if size < parts:
        raise InputError(None, f"{size} training videos cannot feed {parts} micro-batches per step "
                               "(processes × accumulate)")
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    per_step = batch_size * parts
    if size < per_step:
        return [[order[p::parts] for p in range(parts)]]
    return [[order[s * per_step + p * batch_size:s * per_step + (p + 1) * batch_size] for p in range(parts)]
            for s in range(size // per_step)]


def all_reduce_sum(values: list[float], context: DistContext, device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (metrics), a no-op in one process."""
    if not context.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value: Any, context: DistContext) -> list[Any]:
    """Every rank's ``value``, in rank order (used to gather sharded evaluation)."""
    if not context.active:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def average_gradients(parameters: list[torch.nn.Parameter], context: DistContext) -> None:
    """Average the gradients of ``parameters`` over all ranks in one all-reduce, for networks used piecewise,
    which DistributedDataParallel cannot wrap; a parameter that no rank used keeps no gradient (so the optimizer
    skips it, as in one process)."""
    if not context.active:
        return
    used = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=parameters[0].device)
    dist.all_reduce(used)
    reduced = [p for p, count in zip(parameters, used.tolist()) if count > 0]
    grads = []
    for parameter in reduced:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        grads.append(parameter.grad)
    flat = torch.cat([grad.flatten() for grad in grads])
    dist.all_reduce(flat)
    flat /= context.world_size
    for grad, chunk in zip(grads, flat.split([grad.numel() for grad in grads])):
        grad.copy_(chunk.view_as(grad))


def barrier(context: DistContext) -> None:
    if context.active:
        dist.barrier()


class _SplitForward(Protocol):
    """The two halves of forward that every registered network has."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, features: torch.Tensor) -> torch.Tensor: ...


class LogitsAndFeatures(torch.nn.Module):
    """Logits and pooled features from one ``forward``, so DistributedDataParallel sees every use of the weights
    (the MARS loss needs both)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # nn.Module's __getattr__ types attributes of a plain Module as tensors or submodules
        net = cast(_SplitForward, self.net)
        features = net.forward_features(x)
        return net.forward_head(features), features
