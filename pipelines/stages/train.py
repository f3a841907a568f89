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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from flow.atomic import remove_temporaries, write_json_atomic, write_text_atomic
from flow.errors import InputError
from pipelines.core import checkpoint as ckpt
from pipelines.core.config import config_to_dict
from pipelines.data.dataset import StageData, open_stage_data
from pipelines.core.device import autocast, check_amp, resolve_device
from pipelines.core.distributed import DistContext, all_reduce_sum, barrier, batch_plan, init_distributed, rank_device
from pipelines.core.lock import folder_lock
from pipelines.core.manifest import stage_manifest
from pipelines.core.streams import stream_name

STREAMS = ("flow", "rgb", "mars")


@dataclass
class TrainConfig:
    """Options of ``mars-sta train``; ``None`` means "MARS's value for this stream and start"."""

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
    cache_videos: bool = False  # keep decoded videos in memory after the first epoch (small datasets only)
    workers: int = 4
    device: str = "auto"
    amp: str = "off"  # off | fp16 | bf16
    seed: int = 1
    deterministic: bool | None = None  # None: deterministic kernels on CPU, cuDNN autotuning on CUDA
    accumulate: int = 1  # micro-batches per optimizer step (keeps MARS's batch of 16 on small GPUs)
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)


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
    base = stream.removeprefix("sta-")
    return {**shared, **train_table.get(base, {}), **train_table.get(stream, {})}


def load_train_config(path: Path | None, overrides: dict[str, Any]) -> tuple[TrainConfig, Path | None]:
    """``mars-sta train --config X.toml``: the file's ``[train]`` table for the stream being trained, then options.

    Returns the config and the ``pretrained`` checkpoint the file names for that stream (relative to the file)."""
    from pipelines.core.config import build_config, read_toml

    if path is None:
        return build_config(TrainConfig, {}, overrides), None
    table = read_toml(path).get("train", {})
    stream = overrides.get("stream") or table.get("stream") or TrainConfig.stream
    if overrides.get("sta") or table.get("sta"):
        stream = f"sta-{stream}"
    values = stream_values(table, stream)
    pretrained = values.pop("pretrained", None)
    config = build_config(TrainConfig, values, overrides, source=path)
    return config, (Path(path).parent / pretrained).resolve() if pretrained else None


def _defaults(config: TrainConfig, fine_tuning: bool) -> TrainConfig:
    """Fill the MARS defaults that depend on the stream and on fine-tuning."""
    return dataclasses.replace(
        config,
        batch_size=config.batch_size or (16 if config.stream == "mars" else 32),
        lr=config.lr if config.lr is not None else (0.001 if fine_tuning else 0.1),
        weight_decay=config.weight_decay if config.weight_decay is not None else (1e-5 if fine_tuning else 1e-3),
    )


def _validate(config: TrainConfig, paths: TrainPaths) -> None:
    if config.stream not in STREAMS:
        raise InputError(None, f"--stream {config.stream!r}: expected one of {', '.join(STREAMS)}")
    if config.stream == "mars" and paths.teacher is None:
        raise InputError(None, "--stream mars needs --teacher (a trained flow-stream checkpoint)")
    if config.stream != "mars" and paths.teacher is not None:
        raise InputError(paths.teacher, "--teacher is only used by --stream mars")
    if config.optimizer not in ("sgd", "adamw"):
        raise InputError(None, f"optimizer {config.optimizer!r}: expected sgd or adamw")
    if config.scheduler not in ("plateau", "step", "onecycle", "cosine", "none"):
        raise InputError(None, f"scheduler {config.scheduler!r}: expected plateau, step, onecycle, cosine or none")
    if config.scheduler == "step" and not config.lr_milestones:
        raise InputError(None, "scheduler 'step' needs lr_milestones (epochs after which lr drops tenfold)")
    if config.epochs < 1:
        raise InputError(None, "epochs must be at least 1")
    if config.accumulate < 1:
        raise InputError(None, "accumulate must be at least 1")


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


def _load_teacher(path: Path, data: StageData, device: torch.device) -> torch.nn.Module:
    """The frozen Flow network: eval mode (BN running stats), no gradients, not in the optimizer."""
    teacher, payload = ckpt.model_from_checkpoint(path)
    if payload.get("model_kwargs", {}).get("in_channels") != 2:
        raise InputError(path, f"teacher must be a flow-stream checkpoint (2 input channels), got stream "
                               f"{payload.get('stream')!r}")
    if list(payload.get("classes", [])) != data.classes:
        raise InputError(path, "teacher was trained on other classes than this dataset's")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).eval()


class _Student(torch.nn.Module):
    """Logits and pooled features from one ``forward``, so DistributedDataParallel sees every use of the weights."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.forward_features(x)
        return self.net.forward_head(features), features


def _split_inputs(batch: torch.Tensor, stream: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MARS feeds RGB channels to the student and flow channels to the teacher from one clip."""
    if stream == "mars":
        return batch[:, :3], batch[:, 3:]
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


def _train_epoch(student, teacher, loss_fn, optimizer, scheduler, scaler, dataset, config: TrainConfig,
                 epoch: int, context: DistContext, device: torch.device, amp) -> dict[str, float]:
    """One pass over this rank's share of the epoch's batch plan, stepping once per ``accumulate`` micro-batches."""
    accumulate = config.accumulate
    plan = batch_plan(len(dataset), config.batch_size, context.world_size * accumulate, config.seed, epoch)
    first_part = context.rank * accumulate
    mine = [step[first_part + a] for step in plan for a in range(accumulate)]
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_sampler=mine, num_workers=config.workers,
                        multiprocessing_context="spawn" if config.workers > 0 else None)
    student.train()
    sums = [0.0] * 5  # loss, ce, mse, correct, seen
    for index, (clips, labels) in enumerate(loader):
        step, micro = divmod(index, accumulate)
        torch.manual_seed(_micro_batch_seed(config.seed, epoch, step, first_part + micro))
        clips, labels = clips.to(device), labels.to(device)
        inputs, flow_inputs = _split_inputs(clips, config.stream)
        stepping = micro == accumulate - 1
        sync = contextlib.nullcontext() if stepping or not context.active else student.no_sync()
        with sync:
            with autocast(device, amp):
                logits, features = student(inputs)
                logits = logits.float()
                if teacher is None:
                    loss = ce = F.cross_entropy(logits, labels)
                    mse = torch.zeros((), device=device)
                else:
                    with torch.no_grad():
                        target = teacher.forward_features(flow_inputs)
                    loss, ce, mse = loss_fn(logits, labels, features.float(), target.float())
            scaler.scale(loss / accumulate).backward()
        if stepping:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None and config.scheduler not in ("plateau", "step"):
                scheduler.step()
        n = labels.numel()
        for i, value in enumerate((loss.item() * n, ce.item() * n, mse.item() * n,
                                   (logits.argmax(1) == labels).sum().item(), n)):
            sums[i] += value
    loss, ce, mse, correct, seen = all_reduce_sum(sums, context, device)
    seen = max(seen, 1)
    return {"loss": loss / seen, "ce": ce / seen, "mse": mse / seen, "train_acc": 100.0 * correct / seen}


def train(config: TrainConfig, paths: TrainPaths, progress: Callable[[str], None] | None = None,
          resume: bool = True) -> dict[str, Any]:
    """Train one stream into ``paths.out`` (``last.pth``, ``best.pth``, ``metrics.jsonl``, ``manifest.json``).

    Resumes from ``last.pth`` when it exists and was written by the same config and inputs (with any number of
    processes); with ``resume=False`` an existing checkpoint is an error rather than something to overwrite. Under
    torchrun every rank trains its share and only rank 0 writes.
    """
    _validate(config, paths)
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
        return _train_locked(config, paths, fine_tuning, device, context, say, out, resume)


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


def _train_locked(config: TrainConfig, paths: TrainPaths, fine_tuning: bool, device: torch.device,
                  context: DistContext, say: Callable[[str], None], out: Path, resume: bool) -> dict[str, Any]:
    from mars_sta import MARSLoss, build_model, load_pretrained

    amp = check_amp(config.amp, device)
    torch.manual_seed(config.seed)
    _configure_determinism(config, device)
    data = open_stage_data(paths.store, paths.splits, config.split, config.val_fraction, config.seed)
    if config.val_fraction == 0:
        say("note: val_fraction = 0 selects the best epoch on the test split, as MARS does")
    mode = {"flow": "flow", "rgb": "rgb", "mars": "rgb+flow"}[config.stream]
    train_set = data.clip_dataset(data.train, mode, train=True, config=config)
    val_set = data.clip_dataset(data.val or data.test, mode, train=False, config=config)

    model = build_model(config.arch, num_classes=len(data.classes), in_channels=2 if config.stream == "flow" else 3,
                        sample_size=config.size, sample_duration=config.frames, sta=config.sta)
    if fine_tuning:
        load_pretrained(model, paths.pretrained, adapt_input="average")
    if config.sync_bn:
        if device.type != "cuda":
            raise InputError(None, "sync_bn needs CUDA (SyncBatchNorm does not run on CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config.sta:
        _warn_collapsed_time(config, model.build_kwargs["in_channels"], say)
    teacher = _load_teacher(paths.teacher, data, device) if config.stream == "mars" else None
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()} if teacher is not None else None
    model.to(device)
    groups = parameter_groups(model, config, fine_tuning)
    optimizer = make_optimizer(config, groups)
    steps_per_epoch = max(1, len(train_set) // (config.batch_size * context.world_size * config.accumulate))
    scheduler = _make_scheduler(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    loss_fn = MARSLoss(alpha=config.alpha, normalize=config.mse_normalize) if teacher is not None else None
    student = _Student(model)
    if context.active:
        student = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)

    name = stream_name(config.stream, config.sta)
    manifest = stage_manifest("train", config_to_dict(config), {
        "store_manifest": Path(paths.store) / "manifest.json", "splits": data.splits_path,
        "pretrained": paths.pretrained, "teacher": paths.teacher})
    manifest.update(stream=name, classes=data.classes, train_videos=len(data.train), val_videos=len(data.val),
                    processes=context.world_size, validation=data.val_method, **describe_groups(model, groups))
    start_epoch, best_acc = 0, -math.inf
    last_path, best_path, metrics_path = out / "last.pth", out / "best.pth", out / "metrics.jsonl"
    if last_path.exists() and not resume:
        raise InputError(last_path, "already holds a training run; resume it, or use a new --out folder")
    if last_path.exists():
        state = ckpt.load_checkpoint(last_path)
        if state.get("run_key") != manifest["key"]:
            raise InputError(last_path, "was written by another config or other inputs; use a new --out "
                                        "folder or delete it to start over")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        start_epoch, best_acc = state["epoch"], state["best_val_acc"]
        say(f"resuming {name} from epoch {start_epoch}")
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()[:start_epoch]] \
        if metrics_path.exists() else []
    if context.is_main:
        write_json_atomic(out / "manifest.json", manifest)
        write_text_atomic(out / "val_videos.txt", "".join(f"{video}\n" for video, _ in data.val))

    base_payload = {"arch": config.arch, "model_kwargs": model.build_kwargs, "stream": name,
                    "classes": data.classes, "preprocessing_hash": data.preprocessing_hash,
                    "preprocessing": data.store.preprocessing,
                    "train_config": config_to_dict(config), "split": config.split, "run_key": manifest["key"]}
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update(_train_epoch(student, teacher, loss_fn, optimizer, scheduler, scaler, train_set, config, epoch,
                                context, device, amp))
        if teacher is None:
            row.pop("mse")
        row.update(validate(model, val_set, config, device, amp, context))
        if scheduler is not None and config.scheduler == "plateau":
            scheduler.step(row["val_loss"])
        elif scheduler is not None and config.scheduler == "step":
            scheduler.step()
        row["seconds"] = round(time.perf_counter() - started, 3)
        history.append(row)
        is_best = row["val_acc"] > best_acc
        best_acc = max(best_acc, row["val_acc"])
        if context.is_main:
            payload = {**base_payload, "state_dict": model.state_dict(), "epoch": epoch + 1,
                       "best_val_acc": best_acc, "metrics": row}
            if is_best:
                ckpt.save_checkpoint(best_path, payload)
            ckpt.save_checkpoint(last_path, {**payload, "optimizer": optimizer.state_dict(),
                                             "scheduler": scheduler.state_dict() if scheduler else None,
                                             "sampler": {"epoch": epoch + 1, "position": 0},
                                             "rng": ckpt.rng_state()})
            _write_metrics(metrics_path, history)
        barrier(context)
        say(f"{name} epoch {epoch + 1}/{config.epochs}  loss {row['loss']:.3f}  train {row['train_acc']:.1f}%"
            f"  val {row['val_acc']:.1f}%  ({row['seconds']:.1f}s)")
    unchanged = None if teacher is None else all(
        torch.equal(value, teacher.state_dict()[key]) for key, value in teacher_before.items())
    return {"stream": name, "epochs": len(history), "best_val_acc": best_acc, "best": str(best_path),
            "last": str(last_path), "metrics": str(metrics_path), "teacher_unchanged": unchanged}


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the JSON-lines log whole (atomically), so it always matches the last checkpoint."""
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in history))
