"""The training stage: Flow and RGB streams with cross-entropy, MARS (and STA-MARS) distilled from a frozen Flow teacher.

Defaults reproduce MARS (SGD momentum 0.9 with dampening 0.9, lr 0.1 / wd 1e-3 from scratch, lr 0.001 / wd 1e-5 and
only ``layer4`` and ``fc`` trained when fine-tuning, ReduceLROnPlateau with patience 10, α = 50). Selection and the
scheduler use a seeded validation subset of the training list, never the test split (``val_fraction = 0`` falls
back to MARS's own choice, the test split, and says so).

Under torchrun (``WORLD_SIZE`` > 1) the same code runs as DistributedDataParallel: each rank trains its part of
every step of one batch plan (pipelines.core.distributed), metrics are summed over ranks and only rank 0 writes.

Every epoch ends with an atomic checkpoint holding model, optimizer, scheduler, epoch and RNG state; the clip
sampling of an epoch depends only on (seed, epoch), so a run killed at any point and resumed ends with the same
weights as one never interrupted (CPU, deterministic mode).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from flow.atomic import remove_temporaries, write_json_atomic, write_text_atomic
from flow.errors import InputError
from flow.extract import available_cpus
from flow.progress import LOG_INTERVAL, progress_bar
from pipelines.core import checkpoint as ckpt
from pipelines.core.config import check_above, check_at_least, check_one_of, config_to_dict
from pipelines.data.clips import NORMALIZATIONS
from pipelines.data.dataset import StageData, open_stage_data
from pipelines.data.frame_cache import FrameCache
from pipelines.core.device import AMP_DTYPES, autocast, check_amp, resolve_device
from pipelines.core.distributed import (DistContext, LogitsAndFeatures, all_reduce_sum, batch_plan,
                                        init_distributed, rank_device)
from pipelines.core.lock import folder_lock
from pipelines.core.manifest import stage_key, stage_manifest
from pipelines.core.stream_specs import STREAM_SPECS, StreamName, stream_spec
from pipelines.core.training import LoopSettings, MicroBatch, check_resumable, restore, run_epochs

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("plateau", "step", "onecycle", "cosine", "none")
EXTENDABLE_SCHEDULES = ("plateau", "step", "none")  # learning rates that do not depend on the total of epochs


@dataclass
class TrainConfig:
    """Options of ``mars-sta train``; ``None`` means "MARS's value for this stream and start". Checked when made
    (``__post_init__``), so the stage trusts them."""

    def __post_init__(self) -> None:
        check_one_of(stream=(self.stream, tuple(STREAM_SPECS)), optimizer=(self.optimizer, OPTIMIZERS),
                     scheduler=(self.scheduler, SCHEDULERS), normalization=(self.normalization, NORMALIZATIONS),
                     amp=(self.amp, tuple(AMP_DTYPES)))
        check_at_least(epochs=(self.epochs, 1), accumulate=(self.accumulate, 1), frames=(self.frames, 1),
                       size=(self.size, 1), lr_patience=(self.lr_patience, 0),
                       split=(self.split, 1), seed=(self.seed, 0), momentum=(self.momentum, 0),
                       dampening=(self.dampening, 0), alpha=(self.alpha, 0), cache_mb=(self.cache_mb, 0),
                       workers=(0 if self.workers is None else self.workers, 0),  # None: the machine's
                       batch_size=(1 if self.batch_size is None else self.batch_size, 1),  # None: MARS's
                       weight_decay=(0 if self.weight_decay is None else self.weight_decay, 0))
        check_above(attention_lr_mult=(self.attention_lr_mult, 0), lr=(1 if self.lr is None else self.lr, 0))
        if not 0 <= self.val_fraction < 1:
            raise InputError(None, f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0 < self.warmup_fraction < 1:
            raise InputError(None, f"warmup_fraction must lie in (0, 1), got {self.warmup_fraction}")
        if self.scheduler == "step" and not self.lr_milestones:
            raise InputError(None, "scheduler 'step' needs lr_milestones (epochs after which lr drops tenfold)")
        _check_list("lr_milestones", self.lr_milestones, "epochs (integers >= 1)",
                    lambda v: type(v) is int and v >= 1)
        _check_list("crop_scales", self.crop_scales, "scales in (0, 1]",
                    lambda v: type(v) in (int, float) and 0 < v <= 1)

    stream: str = "rgb"  # flow | rgb | mars; "sta-" is added to the name when ``sta`` is set
    arch: str = "resnext101"  # a registry name (mars-sta models)
    sta: str | None = None  # STA spec, e.g. "layer4" or "layer4:ta"
    split: int = 1
    epochs: int = 400
    batch_size: int | None = None  # MARS: 32 for rgb/flow, 16 for mars
    lr: float | None = None  # MARS: 0.1 from scratch, 0.001 fine-tuning
    weight_decay: float | None = None  # MARS: 1e-3 from scratch, 1e-5 fine-tuning
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    dampening: float = 0.9  # MARS keeps PyTorch's dampening = momentum
    nesterov: bool = False
    scheduler: str = "plateau"  # plateau (on validation loss) | step | onecycle | cosine | none
    lr_patience: int = 10
    lr_milestones: list | None = None  # step only: epochs after which lr is multiplied by 0.1 (MultiStepLR)
    warmup_fraction: float = 0.15  # onecycle only
    finetune_from: str = "default"  # with --pretrained: train this stage, later ones and the classifier ("all":
    # everything; "default": the architecture's last stage, MARS's layer4 for the ResNets). Attention always trains.
    attention_lr_mult: float = 10.0  # attention parameters train at lr × this (the STA-MARS authors' 10)
    frames: int = 16  # sample_duration
    size: int = 112  # sample_size
    alpha: float = 50.0  # MARS weight of the feature-matching term
    mse_normalize: bool = False  # divide the MSE by the teacher features' mean square (makes alpha portable)
    val_fraction: float = 0.1  # seeded class-stratified validation subset of the training list
    flip: bool = True  # horizontal flips (negating flow x), as MARS
    label_aware_flips: bool = True  # use the dataset's mirror map (synthetic classes) when it has one
    crop_scales: list | None = None  # None: MARS's multi-scale corner crop; [1.0] keeps the whole short side
    normalization: str = "mars"  # mars (0..255 minus mean, flow codes minus 127.5) | unit (near unit scale)
    cache_mb: int = 0  # decoded frames kept per process, MB (LRU); 0: none. Helps with workers = 0 and a dataset
    # that fits (the demo): workers start afresh each epoch and an epoch reads each video once (docs/pipeline.md)
    workers: int | None = None  # DataLoader workers per process; None: as many as this machine's CPUs allow
    device: str = "auto"
    amp: str = "off"  # off | fp16 | bf16
    seed: int = 1
    deterministic: bool | None = None  # None: deterministic kernels on CPU, cuDNN autotuning on CUDA
    accumulate: int = 1  # micro-batches per optimizer step (keeps MARS's batch of 16 on small GPUs)
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)


def _check_list(name: str, values: list | None, what: str, ok: Callable[[Any], bool]) -> None:
    """A list option (TOML array) is either absent or a non-empty list of allowed items."""
    if values is not None and not (values and all(ok(v) for v in values)):
        raise InputError(None, f"{name} must be a non-empty list of {what}, got {values}")


@dataclass
class TrainPaths:
    store: Path
    out: Path
    splits: Path | None = None
    pretrained: Path | None = None
    teacher: Path | None = None


def stream_values(train_table: dict[str, Any], stream: str) -> dict[str, Any]:
    """The ``[train]`` values for one stream: shared keys, then ``[train.<stream>]`` (``[train.mars]`` also
    applies to ``sta-mars``, whose own table comes last)."""
    shared = {k: v for k, v in train_table.items() if not isinstance(v, dict)}
    base = StreamName.parse(stream).base
    return {**shared, **train_table.get(base, {}), **train_table.get(stream, {})}


def train_table_label(train_table: dict[str, Any], stream: str) -> str:
    """Where a stream's values come from, for messages: ``[train]``, then the stream's own tables it has."""
    own = [f"[train.{name}]" for name in dict.fromkeys((StreamName.parse(stream).base, stream)) if name in train_table]
    return "+".join(["[train]", *own])


def pretrained_path(values: dict[str, Any], path: Path, label: str) -> Path | None:
    """Take ``pretrained`` out of a stream's values: a checkpoint path relative to the config file, which must
    exist (a missing file found only when the stream starts training would waste every stage before it)."""
    pretrained = values.pop("pretrained", None)
    if pretrained is None:
        return None
    if not isinstance(pretrained, str):
        raise InputError(path, f"{label} 'pretrained' must be str, got {type(pretrained).__name__} {pretrained!r}")
    resolved = (Path(path).parent / pretrained).resolve()
    if not resolved.is_file():
        raise InputError(path, f"{label} pretrained: {resolved}: checkpoint not found")
    return resolved


def load_train_config(path: Path | None, overrides: dict[str, Any]) -> tuple[TrainConfig, Path | None]:
    """``mars-sta train --config X.toml``: the file's ``[train]`` table for the stream being trained, then options.

    Returns the config and the ``pretrained`` checkpoint the file names for that stream (relative to the file)."""
    from pipelines.core.config import build_config, read_toml

    if path is None:
        return build_config(TrainConfig, {}, overrides), None
    table = read_toml(path).get("train", {})
    stream = overrides.get("stream") or table.get("stream")
    if stream not in tuple(STREAM_SPECS):  # the config refuses an unknown one, once built
        stream = TrainConfig.stream
    stream = str(StreamName(stream, sta=bool(overrides.get("sta") or table.get("sta"))))
    label = train_table_label(table, stream)
    values = stream_values(table, stream)
    pretrained = pretrained_path(values, path, label)
    return build_config(TrainConfig, values, overrides, source=path, table=label), pretrained


def _defaults(config: TrainConfig, fine_tuning: bool) -> TrainConfig:
    """Fill the MARS defaults that depend on the stream and on fine-tuning."""
    return dataclasses.replace(
        config,
        batch_size=config.batch_size or stream_spec(config.stream).batch_size,
        lr=config.lr if config.lr is not None else (0.001 if fine_tuning else 0.1),
        weight_decay=config.weight_decay if config.weight_decay is not None else (1e-5 if fine_tuning else 1e-3),
    )


def _check_teacher_path(config: TrainConfig, paths: TrainPaths) -> None:
    """A stream with a teacher needs its checkpoint; the others must not be given one."""
    teacher = STREAM_SPECS[config.stream].teacher
    if teacher is not None and paths.teacher is None:
        raise InputError(None, f"--stream {config.stream} needs --teacher (a trained {teacher}-stream checkpoint)")
    if teacher is None and paths.teacher is not None:
        raise InputError(paths.teacher, "--teacher is only used by a stream with a teacher (--stream mars)")


def _frozen_prefix(model: torch.nn.Module, finetune_from: str) -> set[str]:
    """Names of the top-level children before the stage ``finetune_from`` (a child's name or its prefix, so C3D's
    ``conv5`` starts at ``conv5a``); ``default`` is the architecture's last stage."""
    from mars_sta import model_entry

    stage = model_entry(model.arch).stages[-1] if finetune_from == "default" else finetune_from
    names = [name for name, _ in model.named_children()]
    start = next((i for i, name in enumerate(names) if name == stage or name.startswith(stage)), None)
    if start is None:
        raise InputError(None, f"finetune_from {finetune_from!r}: the model has stages {', '.join(names)}")
    return set(names[:start])


def parameter_groups(model: torch.nn.Module, config: TrainConfig, fine_tuning: bool) -> list[dict[str, Any]]:
    """Optimizer groups: ``backbone`` at ``lr`` and ``attention`` (every attention module) at
    ``lr × attention_lr_mult``.

    From scratch everything trains; when fine-tuning, the children before ``finetune_from`` are frozen, except the
    attention modules, which train wherever ``sta`` put them (a frozen module at its initialisation would be a
    constant gate). The group dicts carry ``name`` and ``lr_mult`` for the manifest.
    """
    from mars_sta import attention_modules

    frozen = _frozen_prefix(model, config.finetune_from) if fine_tuning and config.finetune_from != "all" else set()
    for name, child in model.named_children():
        child.requires_grad_(name not in frozen)
    attention = [p for _, module in attention_modules(model) for p in module.parameters()]
    for p in attention:
        p.requires_grad_(True)
    attention_ids = {id(p) for p in attention}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in attention_ids]
    groups = [{"name": "backbone", "params": backbone, "lr": config.lr, "lr_mult": 1.0}]
    if attention:
        groups.append({"name": "attention", "params": attention, "lr": config.lr * config.attention_lr_mult,
                       "lr_mult": config.attention_lr_mult})
    return groups


def describe_groups(model: torch.nn.Module, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """For the manifest: each group's rate and size, and how many parameters stay frozen."""
    rows = [{"name": g["name"], "lr": g["lr"], "lr_mult": g["lr_mult"], "tensors": len(g["params"]),
             "parameters": sum(p.numel() for p in g["params"])} for g in groups]
    trained = sum(row["parameters"] for row in rows)
    return {"parameter_groups": rows, "frozen_parameters": sum(p.numel() for p in model.parameters()) - trained}


def make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """SGD as MARS (momentum, dampening) or AdamW, over ``parameter_groups``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    dampening = 0.0 if config.nesterov else config.dampening
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, dampening=dampening,
                           weight_decay=config.weight_decay, nesterov=config.nesterov)


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", patience=config.lr_patience)
    if config.scheduler == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=config.epochs,
                                                   steps_per_epoch=steps_per_epoch, pct_start=config.warmup_fraction)
    if config.scheduler == "step":  # stepped once per epoch, after validation
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_milestones), gamma=0.1)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    return None


def _load_teacher(path: Path, kind: str, data: StageData, device: torch.device) -> torch.nn.Module:
    """The frozen teacher (a ``kind`` stream, MARS's Flow network): eval mode (BN running stats), no gradients,
    not in the optimizer."""
    loaded = ckpt.load_checkpoint(path)
    if loaded.spec.name != kind:
        raise InputError(path, f"teacher must be a {kind}-stream checkpoint, got stream {loaded.stream!r}")
    if loaded.classes != data.classes:
        raise InputError(path, "teacher was trained on other classes than this dataset's")
    loaded.check_input(loaded.reading(data.store.preprocessing), data.store.root)  # the flow it learnt from
    return loaded.build_frozen(device)


def _split_inputs(batch: torch.Tensor, stream: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MARS feeds RGB channels to the student and flow channels to the teacher from one clip."""
    spec = stream_spec(stream)
    if spec.teacher is not None:
        return batch[:, :spec.in_channels], batch[:, spec.in_channels:]
    return batch, None


def _micro_batch_seed(seed: int, epoch: int, step: int, part: int) -> int:
    """Dropout and other in-model randomness depend on the micro-batch, not on which process runs it."""
    return (seed * 1_000_003 + epoch * 10_007 + step * 101 + part) % (2**63)


@torch.no_grad()
def validate(model: torch.nn.Module, dataset, config: TrainConfig, device: torch.device, amp,
             context: DistContext = DistContext()) -> dict[str, float]:
    """Cross-entropy and top-1 of the student on one centred clip per validation video (sharded over ranks)."""
    model.eval()
    shard = Subset(dataset, range(context.rank, len(dataset), context.world_size))
    sums = [0.0, 0.0, 0.0]  # loss, correct, total
    for clips, labels in DataLoader(shard, batch_size=config.batch_size, shuffle=False, num_workers=0):
        clips, labels = clips.to(device), labels.to(device)
        inputs, _ = _split_inputs(clips, config.stream)
        with autocast(device, amp):
            logits = model(inputs).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").item()
        sums[1] += (logits.argmax(1) == labels).sum().item()
        sums[2] += labels.numel()
    loss, correct, total = all_reduce_sum(sums, context, device)
    return {"val_loss": loss / max(total, 1), "val_acc": 100.0 * correct / max(total, 1)}


class _RecognitionTask:
    """One stream's training as the training loop runs it: MARS's batch plan, cross-entropy (plus MARS's MSE
    against the teacher), validation after each epoch, ``last.pth`` every epoch and ``best.pth`` on improvement."""

    def __init__(self, run: _Run, out: Path, bar: bool) -> None:
        self.run, self.out, self.bar = run, out, bar
        self.name, self.optimizer, self.scheduler = run.name, run.optimizer, run.scheduler
        self.metrics: tuple[str, ...] = ("loss", "ce", "mse", "correct", "seen")
        self.synced: torch.nn.Module | None = run.student
        self.best_acc, self.improved = -math.inf, False

    def steps(self, epoch: int) -> Iterator[list[MicroBatch]]:
        """This rank's share of the epoch's batch plan, read by the loader workers as the steps come."""
        run, config = self.run, self.run.config
        accumulate = config.accumulate
        plan = batch_plan(len(run.train_set), config.batch_size, run.context.world_size * accumulate, config.seed,
                          epoch)
        first_part = run.context.rank * accumulate
        mine = [step[first_part + a] for step in plan for a in range(accumulate)]
        run.train_set.set_epoch(epoch)
        run.student.train()
        batches = iter(progress_bar(_batches(run.train_set, mine, run.loader_workers), total=len(mine),
                                    disable=not self.bar, leave=False, unit="batch",
                                    desc=f"epoch {epoch + 1}/{config.epochs}", log_delay=LOG_INTERVAL))
        for step in range(len(plan)):
            yield [MicroBatch(_micro_batch_seed(config.seed, epoch, step, first_part + micro),
                              lambda: next(batches)) for micro in range(accumulate)]

    def loss(self, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        run = self.run
        clips, labels = data[0].to(run.device), data[1].to(run.device)
        inputs, flow_inputs = _split_inputs(clips, run.config.stream)
        logits, features = run.student(inputs)
        logits = logits.float()
        if run.teacher is None:
            loss = ce = F.cross_entropy(logits, labels)
            mse = torch.zeros((), device=run.device)
        else:
            with torch.no_grad():
                target = run.teacher.forward_features(flow_inputs)
            loss, ce, mse = run.loss_fn(logits, labels, features.float(), target.float())
        n = labels.numel()
        return loss, {"loss": loss.item() * n, "ce": ce.item() * n, "mse": mse.item() * n,
                      "correct": (logits.argmax(1) == labels).sum().item(), "seen": n}

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        if self.scheduler is not None and self.run.config.scheduler not in ("plateau", "step"):
            self.scheduler.step()

    def end_epoch(self, epoch: int, sums: dict[str, float]) -> dict[str, Any]:
        """Training metrics, validation; a plateau schedule steps on the validation loss, a step schedule here."""
        run, seen = self.run, max(sums["seen"], 1)
        row = {"loss": sums["loss"] / seen, "ce": sums["ce"] / seen, "mse": sums["mse"] / seen,
               "train_acc": 100.0 * sums["correct"] / seen}
        if run.teacher is None:
            row.pop("mse")
        row.update(validate(run.model, run.val_set, run.config, run.device, run.amp, run.context))
        if self.scheduler is not None and run.config.scheduler == "plateau":
            self.scheduler.step(row["val_loss"])
        elif self.scheduler is not None and run.config.scheduler == "step":
            self.scheduler.step()
        self.improved = row["val_acc"] > self.best_acc
        self.best_acc = max(self.best_acc, row["val_acc"])
        return row

    def checkpoint(self, epochs_done: int, row: dict[str, Any]) -> ckpt.Checkpoint:
        run = self.run
        return ckpt.Checkpoint.make(
            self.out / ckpt.LAST, arch=run.config.arch, model_kwargs=run.model.build_kwargs,
            state_dict=run.model.state_dict(), stream=run.name, classes=run.data.classes, epoch=epochs_done,
            preprocessing_hash=run.data.preprocessing_hash, preprocessing=run.data.store.preprocessing,
            train_config=config_to_dict(run.config), split=run.config.split, run_key=run.manifest["key"],
            best_val_acc=self.best_acc, metrics=row)

    def best(self, row: dict[str, Any]) -> Path | None:
        return self.out / ckpt.BEST if self.improved else None

    def describe(self, epochs_done: int, row: dict[str, Any]) -> str:
        return (f"{self.name} epoch {epochs_done}/{self.run.config.epochs}  loss {row['loss']:.3f}  train "
                f"{row['train_acc']:.1f}%  val {row['val_acc']:.1f}%  ({row['seconds']:.1f}s)")


def _batches(dataset, batches: list[list[int]], workers: int) -> Iterator:
    """The epoch's batches from a DataLoader with ``workers`` spawned workers.

    PyTorch warns twice per epoch when there are more workers than CPUs; ``_loader_workers`` says it once per run.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                            multiprocessing_context="spawn" if workers > 0 else None)
        return iter(loader)  # starts the workers, where PyTorch checks their number again


def default_loader_workers(cpus: int) -> int:
    """DataLoader workers per process when none are asked for: up to 4, leaving one CPU to the training loop."""
    return max(0, min(4, cpus - 1))


def _loader_workers(config: TrainConfig, say: Callable[[str], None]) -> int:
    """The DataLoader workers of each process: ``config.workers``, else what its share of the CPUs allows
    (torchrun's processes on one machine share its CPUs). More workers than CPUs are allowed, with a warning."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cpus = max(1, available_cpus() // processes)
    if config.workers is None:
        return default_loader_workers(cpus)
    if config.workers > cpus:
        share = f" (its share of {available_cpus()} among {processes} processes)" if processes > 1 else ""
        say(f"warning: workers {config.workers} is more than the {cpus} CPU(s) each training process may use"
            f"{share}; the workers will compete for them and slow training down (default: "
            f"{default_loader_workers(cpus)})")
    return config.workers


def train(config: TrainConfig, paths: TrainPaths, progress: Callable[[str], None] | None = None,
          resume: bool = True, bar: bool = False) -> dict[str, Any]:
    """Train one stream into ``paths.out`` (``last.pth``, ``best.pth``, ``metrics.jsonl``, ``manifest.json``, and
    ``tensorboard/`` when tensorboard is installed).

    Resumes from ``last.pth`` when it exists and was written by the same config and inputs (with any number of
    processes); with ``resume=False`` an existing checkpoint is an error rather than something to overwrite. Under
    torchrun every rank trains its share and only rank 0 writes.

    Args:
        config: the validated options; ``None`` values get MARS's defaults for the stream and start.
        paths: the store, the output folder, and the split files, pretrained weights and teacher when given.
        progress: receives one line per epoch (and notes) on the main process.
        resume: continue from an existing ``last.pth`` of the same run.
        bar: show a progress bar over each epoch's batches on the main process (plain lines in a log).
    """
    _check_teacher_path(config, paths)
    fine_tuning = paths.pretrained is not None
    config = _defaults(config, fine_tuning)
    device = resolve_device(config.device)
    context = init_distributed(device)
    device = rank_device(device, context)
    say = (progress or (lambda message: None)) if context.is_main else (lambda message: None)
    out = Path(paths.out)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out) if context.is_main else contextlib.nullcontext():
        if context.is_main:
            remove_temporaries(out)  # of a run killed while writing a checkpoint
        return _train_locked(config, paths, fine_tuning, device, context, say, out, resume, bar and context.is_main)


def _warn_collapsed_time(config: TrainConfig, in_channels: int, say: Callable[[str], None]) -> None:
    """Say where attention sees a single time step: there STA's temporal weights have nothing to weigh."""
    from mars_sta.profile import attention_time_steps

    steps = attention_time_steps(config.arch, sta=config.sta, frames=config.frames, size=config.size,
                                 in_channels=in_channels)
    collapsed = sorted({next(part for part in name.split(".") if part != "sta")
                        for name, length in steps.items() if length == 1})
    if collapsed:
        say(f"warning: sta {', '.join(collapsed)} sees a temporal length of 1 at {config.frames} frames, so its "
            f"temporal attention reduces to a channel gate; use more frames (the paper's STA runs use 64) or an "
            f"earlier stage")


def _configure_determinism(config: TrainConfig, device: torch.device) -> None:
    """Deterministic kernels by default on CPU (resume equals an uninterrupted run); cuDNN autotuning on CUDA."""
    deterministic = config.deterministic if config.deterministic is not None else device.type == "cpu"
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed clip sizes: let cuDNN pick the fastest kernels


@dataclass
class _Run:
    """What one training run builds once and every epoch uses."""

    config: TrainConfig
    name: str  # the stream name, with "sta-" when STA is inserted
    device: torch.device
    amp: torch.dtype | None
    context: DistContext
    data: StageData
    train_set: Any
    val_set: Any
    model: torch.nn.Module
    student: torch.nn.Module  # the model as trained: logits and features together, under DDP when distributed
    teacher: torch.nn.Module | None
    loss_fn: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    manifest: dict[str, Any]
    loader_workers: int  # DataLoader workers of this process, as config.workers or the machine decided


def _train_locked(config: TrainConfig, paths: TrainPaths, fine_tuning: bool, device: torch.device,
                  context: DistContext, say: Callable[[str], None], out: Path, resume: bool,
                  bar: bool) -> dict[str, Any]:
    run = _prepare(config, paths, fine_tuning, device, context, say)
    last_path, best_path, metrics_path = out / ckpt.LAST, out / ckpt.BEST, out / "metrics.jsonl"
    if last_path.exists() and not resume:
        raise InputError(last_path, "already holds a training run; resume it, or use a new --out folder")
    task = _RecognitionTask(run, out, bar)
    start_epoch = _resume(run, task, last_path, say) if last_path.exists() else 0
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()[:start_epoch]] \
        if metrics_path.exists() else []
    if context.is_main:
        write_json_atomic(out / "manifest.json", run.manifest)
        write_text_atomic(out / "val_videos.txt", "".join(f"{video}\n" for video, _ in run.data.val))
    settings = LoopSettings(epochs=config.epochs, accumulate=config.accumulate, context=context, device=device,
                            out=out, say=say, amp=run.amp, metrics=metrics_path, history=history)
    history = run_epochs(task, settings, start_epoch)
    return {"stream": run.name, "epochs": len(history), "best_val_acc": task.best_acc, "best": str(best_path),
            "last": str(last_path), "metrics": str(metrics_path)}


def _resume(run: _Run, task: _RecognitionTask, last_path: Path, say: Callable[[str], None]) -> int:
    """Continue the run ``last.pth`` holds: the same config and inputs, or the same with more epochs where the
    schedule allows (the manifest then lists the extension). Returns the epochs trained already."""
    checkpoint = ckpt.load_checkpoint(last_path)
    config, planned = run.config, checkpoint.train_config.get("epochs")
    if checkpoint.run_key != run.manifest["key"]:
        same_but_epochs = isinstance(planned, int) and planned >= 1 and checkpoint.run_key == \
            stage_key("train", {**config_to_dict(config), "epochs": planned}, run.manifest["input_fingerprints"],
                      _unkeyed(config))
        if same_but_epochs:
            raise InputError(last_path, f"was written by a {planned}-epoch run; scheduler '{config.scheduler}' sets "
                                        f"its learning rates from the total number of epochs, so it cannot be "
                                        f"extended to {config.epochs} (extendable: "
                                        f"{', '.join(EXTENDABLE_SCHEDULES)}); use a new --out folder")
        raise InputError(last_path, "was written by another config or other inputs; use a new --out folder or "
                                    "delete it to start over")
    check_resumable(checkpoint, config.epochs)
    extended = _previous_extensions(last_path.parent)
    if planned != config.epochs:
        extended.append({"from_epochs": planned, "to_epochs": config.epochs, "at_epoch": checkpoint.epoch,
                         "written": run.manifest["written"]})
        say(f"{'extending' if config.epochs > planned else 'shortening'} {run.name} from {planned} to "
            f"{config.epochs} epochs")
    if extended:
        run.manifest["extended"] = extended
    say(f"resuming {run.name} from epoch {checkpoint.epoch}")
    run.model.load_state_dict(checkpoint.state_dict)
    task.best_acc = checkpoint.best_val_acc if checkpoint.best_val_acc is not None else -math.inf
    return restore(checkpoint, task)


def _previous_extensions(out: Path) -> list[dict[str, Any]]:
    """The extensions the folder's manifest lists already, so that a later one adds to the record."""
    try:
        extended = json.loads((out / "manifest.json").read_text()).get("extended", [])
    except (OSError, ValueError, AttributeError):
        return []
    return list(extended) if isinstance(extended, list) else []


def _unkeyed(config: TrainConfig) -> tuple[str, ...]:
    """Config entries that may change without making a ``last.pth`` another run's: the frame cache's size, which
    changes no clip, and the number of epochs, where the schedule does not depend on it, so a finished run can be
    continued with more."""
    return ("cache_mb", "epochs") if config.scheduler in EXTENDABLE_SCHEDULES else ("cache_mb",)


def _prepare(config: TrainConfig, paths: TrainPaths, fine_tuning: bool, device: torch.device,
             context: DistContext, say: Callable[[str], None]) -> _Run:
    """Data, network, teacher, optimizer and schedule of one run, seeded, before its first epoch."""
    from mars_sta import MARSLoss

    amp = check_amp(config.amp, device)
    torch.manual_seed(config.seed)
    data = open_stage_data(paths.store, paths.splits, config.split, config.val_fraction, config.seed)
    _configure_determinism(config, device)  # after the data's checks: torch imports its compiler here (1-2 s)
    if config.val_fraction == 0:
        say("note: val_fraction = 0 selects the best epoch on the test split, as MARS does")
    spec = stream_spec(config.stream)
    cache = FrameCache(config.cache_mb)  # the training and validation clips of this process share one
    train_set = data.clip_dataset(data.train, spec.train_clips, train=True, config=config, cache=cache)
    val_set = data.clip_dataset(data.val or data.test, spec.train_clips, train=False, config=config, cache=cache)
    model = _build_model(config, paths, len(data.classes), fine_tuning, device)
    if config.sta:
        _warn_collapsed_time(config, spec.in_channels, say)
    teacher = _load_teacher(paths.teacher, spec.teacher, data, device) if spec.teacher else None
    model.to(device)
    groups = parameter_groups(model, config, fine_tuning)
    optimizer = make_optimizer(config, groups)
    steps_per_epoch = max(1, len(train_set) // (config.batch_size * context.world_size * config.accumulate))
    student: torch.nn.Module = LogitsAndFeatures(model)
    if context.active:
        student = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    name = str(StreamName(config.stream, sta=bool(config.sta)))
    manifest = stage_manifest("train", config_to_dict(config), {
        "store_manifest": Path(paths.store) / "manifest.json", "splits": data.splits_path,
        "pretrained": paths.pretrained, "teacher": paths.teacher}, unkeyed=_unkeyed(config))
    workers = _loader_workers(config, say)
    manifest.update(stream=name, classes=data.classes, train_videos=len(data.train), val_videos=len(data.val),
                    processes=context.world_size, loader_workers=workers, validation=data.val_method,
                    **describe_groups(model, groups))
    return _Run(config=config, name=name, device=device, amp=amp, context=context, data=data, train_set=train_set,
                val_set=val_set, model=model, student=student, teacher=teacher,
                loss_fn=MARSLoss(alpha=config.alpha, normalize=config.mse_normalize) if teacher is not None else None,
                optimizer=optimizer, scheduler=_make_scheduler(config, optimizer, steps_per_epoch), manifest=manifest,
                loader_workers=workers)


def _build_model(config: TrainConfig, paths: TrainPaths, num_classes: int, fine_tuning: bool,
                 device: torch.device) -> torch.nn.Module:
    """The network the stream trains, with pretrained weights when fine-tuning and SyncBatchNorm when asked."""
    from mars_sta import build_model, load_pretrained

    model = build_model(config.arch, num_classes=num_classes, in_channels=stream_spec(config.stream).in_channels,
                        sample_size=config.size, sample_duration=config.frames, sta=config.sta)
    if fine_tuning:
        load_pretrained(model, paths.pretrained, adapt_input="average")
    if config.sync_bn:
        if device.type != "cuda":
            raise InputError(None, "sync_bn needs CUDA (SyncBatchNorm does not run on CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
