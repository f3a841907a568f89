"""STA-S-CNN: S-CNN's three networks on any registered backbone, STA where ``sta`` says.

S-CNN (Shou et al., CVPR 2016) scores multi-scale sliding windows, each sampled to a fixed-length clip, with
networks of one architecture: a *proposal* network (action or background); a *classification* network (K + 1
classes) trained on the proposal network's positives and a sample of its negatives, only to initialise the
*localization* network (K + 1 classes), which is trained with softmax loss plus the overlap loss, so that the true
class's probability follows the window's tIoU. Detection uses the proposal and the localization network. The paper
puts STA into the localization network only, so ``sta`` applies there.

``train_detector`` trains the three in turn on one annotation subset (THUMOS'14 trains on ``val``) and writes
``proposal.pth``, ``classification.pth`` and ``localization.pth``, each in the project's checkpoint format with
exact resume: each epoch's window sample and order come from ``(seed, network, epoch)``, and the optimizer,
schedule and RNG states are saved every epoch. The localization checkpoint also keeps S-CNN's window-length prior
(``windows.length_prior``) learned from the training annotations, which ``detect`` may multiply into its scores.

Streams are those of recognition: ``flow``, ``rgb``, and ``mars``, whose networks read RGB only and are trained
with MARS's loss against a trained flow detector (the teacher): each network's pooled features are pulled towards
those of the teacher's network of the same role on the flow of the same window. Under torchrun every rank trains
its share of each batch (DistributedDataParallel) and only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from flow.atomic import write_json_atomic
from flow.errors import InputError
from flow.progress import LOG_INTERVAL, progress_bar
from flow.store import VIDEOS, FlowStore
from mars_sta.inputs import InputConfig
from pipelines.core.checkpoint import Checkpoint, SCNNExtras, load_checkpoint
from pipelines.core.config import check_above, check_at_least, check_one_of, config_to_dict
from pipelines.core.distributed import DistContext, LogitsAndFeatures, init_distributed, rank_device
from pipelines.core.stream_specs import StreamName, stream_spec
from pipelines.data.clips import NORMALIZATIONS
from pipelines.data.annotations import SUBSET_NAMES, Annotations, fps_of
from pipelines.detection.clips import WindowClips
from pipelines.detection.windows import label_windows, length_prior, sliding_windows
from pipelines.core.device import resolve_device
from pipelines.core.lock import folder_lock
from pipelines.core.manifest import config_hash, fingerprint, stage_manifest
from pipelines.core.training import LoopSettings, MicroBatch, resume_if_any, run_epochs

NETWORKS = ("proposal", "classification", "localization")  # in training order
WITHOUT_STA = ("proposal", "classification")  # the same in S-CNN and STA-S-CNN (STA is in localization only)
STREAMS = ("rgb", "flow", "mars")
OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of ``train-detector`` (TOML table ``[detection.train]``); windows and labels follow S-CNN."""

    arch: str = "tiny_resnet"
    stream: str = "flow"  # rgb, flow, or mars (RGB at test time, distilled from a flow detector: --teacher)
    sta: str | None = None  # STA in the localization network (STA-S-CNN); None is plain S-CNN
    frames: int = 16  # every window is sampled to a clip of this many frames (S-CNN: 16)
    size: int = 32  # clip side, pixels
    window_lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)  # S-CNN's scales, frames
    window_overlap: float = 0.75
    proposal_positive: float = 0.7  # window tIoU that makes a proposal-network positive
    proposal_negative: float = 0.3  # below it, background
    localization_positive: float = 0.5
    localization_negative: float = 0.3
    overlap_alpha: float = 0.25  # S-CNN's alpha: the optimum of softmax + overlap loss is P = tIoU ** (alpha / 2)
    overlap_weight: float = 1.0  # S-CNN's lambda
    background_ratio: float = 1.0  # background windows drawn per action window each epoch
    epochs: int = 8
    batch_size: int = 32
    accumulate: int = 1  # micro-batches per optimizer step, per process
    alpha: float = 50.0  # MARS's feature-matching weight (mars stream)
    mse_normalize: bool = False  # divide MARS's MSE by the teacher features' mean square
    classification_epochs: int | None = None  # the classification network's epochs (None: ``epochs``)
    optimizer: str = "adamw"  # adamw, or sgd (S-CNN's Caffe solvers: SGD with momentum and step decay)
    momentum: float = 0.9  # sgd's (S-CNN: 0.9)
    lr: float = 0.002
    lr_step: int = 0  # epochs between learning-rate decays (S-CNN: a quarter of the training); 0: constant
    lr_gamma: float = 0.5  # each decay multiplies the rate by it (S-CNN's ResNet-18 solvers: 0.5)
    weight_decay: float = 0.01
    normalization: str = "unit"  # "unit" for tiny networks from scratch, "mars" for MARS's input scale
    pretrained: str | None = None  # a recognition checkpoint (trimmed clips) proposal and classification start from
    subset: str = "val"  # annotation subset trained on
    seed: int = 0
    device: str = "auto"
    cache_mb: int = 1024  # decoded frames kept in memory, MB (an LRU); 0: none. Holds a small dataset whole

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise InputError(None, f"detection stream must be one of {', '.join(STREAMS)}, not {self.stream!r}")
        check_one_of(normalization=(self.normalization, NORMALIZATIONS), subset=(self.subset, SUBSET_NAMES),
                     optimizer=(self.optimizer, OPTIMIZERS))
        check_at_least(frames=(self.frames, 1), size=(self.size, 1), epochs=(self.epochs, 1),
                       batch_size=(self.batch_size, 1), weight_decay=(self.weight_decay, 0), seed=(self.seed, 0),
                       background_ratio=(self.background_ratio, 0), overlap_weight=(self.overlap_weight, 0),
                       accumulate=(self.accumulate, 1), alpha=(self.alpha, 0), momentum=(self.momentum, 0),
                       lr_step=(self.lr_step, 0), cache_mb=(self.cache_mb, 0))
        if self.classification_epochs is not None:
            check_at_least(classification_epochs=(self.classification_epochs, 1))
        check_above(lr=(self.lr, 0), overlap_alpha=(self.overlap_alpha, 0), lr_gamma=(self.lr_gamma, 0))

    def epochs_of(self, network: str) -> int:
        """How many epochs ``network`` trains."""
        if network == "classification" and self.classification_epochs is not None:
            return self.classification_epochs
        return self.epochs
        if not 0 <= self.window_overlap < 1 or not self.window_lengths or min(self.window_lengths) < 1:
            raise InputError(None, "window_lengths must be positive and window_overlap in [0, 1)")
        for low, high in ((self.proposal_negative, self.proposal_positive),
                          (self.localization_negative, self.localization_positive)):
            if not 0 <= low <= high <= 1:
                raise InputError(None, "negative and positive tIoU thresholds must satisfy 0 <= negative <= "
                                       "positive <= 1")


@dataclass
class WindowSet:
    """All training windows of a subset: video, [start, stop) on the grid, class label (0 = background), tIoU."""

    videos: list[str]
    spans: np.ndarray
    labels: np.ndarray
    overlaps: np.ndarray


def training_windows(store: FlowStore, truth: Annotations, config: DetectorConfig, positive: float,
                     negative: float) -> WindowSet:
    """The sliding windows of every annotated video, labelled by their best tIoU with its ground truth."""
    videos, spans, labels, overlaps = [], [], [], []
    for video in sorted(truth.videos):
        fps, length = fps_of(store, video), store.num_frames(video) - 1
        windows = sliding_windows(length, config.window_lengths, config.window_overlap)
        frames = truth.in_frames(video, fps)
        segments = np.array([(a, b) for a, b, _ in frames], np.float64).reshape(-1, 2)
        label, overlap = label_windows(windows, segments, np.array([k for *_, k in frames]), positive, negative)
        videos += [video] * len(windows)
        spans.append(windows)
        labels.append(label)
        overlaps.append(overlap)
    return WindowSet(videos, np.concatenate(spans), np.concatenate(labels), np.concatenate(overlaps))


def overlap_loss(logits: torch.Tensor, labels: torch.Tensor, overlaps: torch.Tensor, alpha: float) -> torch.Tensor:
    """S-CNN's overlap loss, ``1/N sum_n 1/2 (P_n(k_n)^2 / v_n^alpha - 1) [k_n > 0]`` over the batch.

    With the softmax loss (weight lambda = 1) its minimum for an action window is at P(k) = v^(alpha/2), so the
    score of the true class grows with the window's tIoU v.
    """
    positive = labels > 0
    if not positive.any():
        return logits.sum() * 0
    probability = logits.softmax(dim=1)[positive, labels[positive]]
    terms = 0.5 * (probability.pow(2) / overlaps[positive].clamp_min(1e-6).pow(alpha) - 1)
    return terms.sum() / len(labels)


def train_detector(config: DetectorConfig, store_path: Path, truth: Annotations, out: Path,
                   log: Callable[[str], None] = print, progress: bool = True,
                   teacher: Path | None = None) -> dict[str, Any]:
    """Train the proposal, the classification and the localization network (started from the classification
    network's weights); returns the paths of the three checkpoints.

    Args:
        config: the settings (architecture, stream, STA, windows, labels, optimisation).
        store_path: the flow store of the annotated videos.
        truth: the annotations of ``config.subset``, already read.
        out: folder for ``proposal.pth``, ``classification.pth``, ``localization.pth``, ``manifest.json``.
        log: where progress lines go (the main process only).
        progress: show a progress bar.
        teacher: a flow detector's folder (``train-detector`` output), required by the ``mars`` stream only.

    Returns ``{network: path}`` on the main process, ``{}`` on the others.
    """
    _check_teacher(config, teacher)
    store = FlowStore(store_path)
    truth.check_videos(store)
    device = resolve_device(config.device)
    context = init_distributed(device)
    device = rank_device(device, context)
    say = log if context.is_main else (lambda message: None)
    manifest = stage_manifest("train-detector", config_to_dict(config), {
        "store": store_path, "annotations": truth.source,
        **{f"teacher_{n}": teacher / f"{n}.pth" for n in NETWORKS if teacher is not None}})
    clips = WindowClips(store, stream_spec(config.stream).train_clips, config.frames, config.size,
                        config.normalization, config.cache_mb)
    windows = _windows_of_networks(store, truth, config)
    prior = window_length_prior(store, truth, config.window_lengths)
    paths: dict[str, Path] = {}
    with folder_lock(out) if context.is_main else contextlib.nullcontext():  # creates it: all checks are done
        for network in NETWORKS:
            run = _Training(network, config, windows[network], clips, truth.classes, device, context, say, progress,
                            length_prior=prior if network == "localization" else None)
            key = _resume_key(network, manifest, store, config.epochs_of("classification"))
            fresh = network == "localization" and _start_moved(out / f"{network}.pth", manifest, store, config, say)
            paths[network] = _train_network(run, out, key, teacher, start_from=paths.get("classification"),
                                            fresh=fresh)
        if context.is_main:
            write_json_atomic(out / "manifest.json", {**manifest, "classes": truth.classes, "processes":
                                                      context.world_size, "outputs": {k: str(v) for k, v in
                                                                                      paths.items()}})
    return {k: str(v) for k, v in paths.items()} if context.is_main else {}


def _check_teacher(config: DetectorConfig, teacher: Path | None) -> None:
    """A mars detector needs a flow detector to learn from; the other streams must not be given one."""
    if StreamName(config.stream).has_teacher and teacher is None:
        raise InputError(None, "the mars stream needs --teacher (a folder written by train-detector --stream flow)")
    if not StreamName(config.stream).has_teacher and teacher is not None:
        raise InputError(teacher, "--teacher is only used by --stream mars")
    missing = [network for network in NETWORKS if teacher is not None and not (teacher / f"{network}.pth").is_file()]
    if missing:
        raise InputError(teacher / f"{missing[0]}.pth", "not found: --teacher must be a folder written by "
                                                        "train-detector --stream flow, with its three networks")


def _windows_of_networks(store: FlowStore, truth: Annotations, config: DetectorConfig) -> dict[str, WindowSet]:
    """Each network's labelled windows, checked for all before any trains; the classification network takes the
    proposal network's windows with their K + 1 labels, as S-CNN."""
    thresholds = {"proposal": (config.proposal_positive, config.proposal_negative),
                  "localization": (config.localization_positive, config.localization_negative)}
    found = {role: training_windows(store, truth, config, *pair) for role, pair in thresholds.items()}
    for role, sample in found.items():
        if not (sample.labels > 0).any():
            raise InputError(truth.source, f"no window reaches tIoU {thresholds[role][0]} with the {truth.subset} "
                                           f"ground truth (window lengths {list(config.window_lengths)})")
    return {**found, "classification": found["proposal"]}


def window_length_prior(store: FlowStore, truth: Annotations, lengths: tuple[int, ...]) -> np.ndarray:
    """S-CNN's window-length prior (classes, lengths) from the annotated instances' durations in grid frames."""
    durations: list[list[float]] = [[] for _ in truth.classes]
    index = {name: i for i, name in enumerate(truth.classes)}
    for video, entry in truth.videos.items():
        fps = fps_of(store, video)
        for segment in entry.segments:
            durations[index[segment.label]].append((segment.end - segment.start) * fps)
    return length_prior(durations, lengths)


def _resume_key(network: str, manifest: dict[str, Any], store: FlowStore, classification_epochs: int) -> str:
    """What a checkpoint must have been trained with to be resumed: the config but its epoch counts (the learning
    rate depends on the epoch only, so a finished run can be extended), the annotations, the teacher, and the
    store's video files and preprocessing (not its manifest, which every rerun of extract-flow rewrites); for the
    localization network also the epochs of the classification network it started from. The proposal and
    classification networks do not depend on STA, so a plain S-CNN's serve STA-S-CNN unchanged (the paper uses the
    provided proposal network and puts STA into the localization network only)."""
    ignored = {"epochs": None, "classification_epochs": None, "cache_mb": None, **({"sta": None} if network in WITHOUT_STA else {})}
    start = {"started_from_epochs": classification_epochs} if network == "localization" else {}
    found = manifest["input_fingerprints"]
    inputs = {"annotations": found.get("annotations"), "preprocessing": store.preprocessing,
              "videos": fingerprint(store.root / VIDEOS)}
    if f"teacher_{network}" in found:
        inputs["teacher"] = found[f"teacher_{network}"]
    return config_hash({**manifest["config"], **ignored, **start, "network": network, "inputs": inputs})


def _start_moved(path: Path, manifest: dict[str, Any], store: FlowStore, config: DetectorConfig,
                 log: Callable[[str], None]) -> bool:
    """Whether the localization checkpoint at ``path`` is of this run but started from a classification network
    that has since trained more epochs (a finished run extended): it then trains anew from the extended one, as a
    run asked for these epochs from the start would have."""
    if not path.is_file():
        return False
    checkpoint = load_checkpoint(path)
    before = detector_config_of(checkpoint).epochs_of("classification")
    moved = before != config.epochs_of("classification") and checkpoint.run_key == _resume_key(
        "localization", manifest, store, before)
    if moved:
        log(f"localization: its classification network now has {config.epochs_of('classification')} epochs, not "
            f"{before}: training it anew from there")
    return moved


def build_network(network: str, config: DetectorConfig, num_classes: int, start_from: Path | None = None
                  ) -> torch.nn.Module:
    """The proposal (2-way), classification or localization (K + 1-way, with ``config.sta``) network from the
    registry, started from ``start_from`` (a checkpoint: S-CNN fine-tunes localization from classification; STA's
    modules keep their initialisation) or else from ``config.pretrained``."""
    from mars_sta import build_model, load_pretrained

    model = build_model(config.arch, num_classes=2 if network == "proposal" else num_classes + 1,
                        in_channels=stream_spec(config.stream).in_channels, sample_size=config.size,
                        sample_duration=config.frames, sta=config.sta if network == "localization" else None)
    if start_from is not None:
        load_pretrained(model, load_checkpoint(start_from).state_dict, adapt_input=None)
    elif config.pretrained:
        load_pretrained(model, config.pretrained)
    return model


def load_teacher(path: Path, config: DetectorConfig, classes: list[str], store: FlowStore,
                 device: torch.device) -> torch.nn.Module:
    """The frozen flow network a MARS detector network distils from: same classes, architecture, clips and flow."""
    if not path.is_file():
        raise InputError(path, "not found: --teacher must be a folder written by train-detector --stream flow")
    checkpoint = load_checkpoint(path)
    if checkpoint.spec.name != "flow":
        raise InputError(path, f"teacher must be a flow-stream detector, got stream {checkpoint.stream!r}")
    trained = detector_config_of(checkpoint)
    if checkpoint.classes != list(classes):
        raise InputError(path, "teacher was trained on other classes than these annotations'")
    if trained.arch != config.arch:
        raise InputError(path, f"teacher is {trained.arch}, this detector {config.arch}: MARS matches features of "
                               "one shape")
    checkpoint.check_input(InputConfig(checkpoint.stream, config.frames, config.size, config.normalization,
                                       store.preprocessing), store.root)  # the clips this detector feeds it
    return checkpoint.build_frozen(device)


@dataclass
class _Training:
    """One network's training: what each step reads, where it runs, and who reports."""

    network: str
    config: DetectorConfig
    windows: WindowSet
    clips: WindowClips
    classes: list[str]
    device: torch.device
    context: DistContext
    log: Callable[[str], None]
    progress: bool
    teacher: torch.nn.Module | None = None
    length_prior: np.ndarray | None = None  # kept in the localization checkpoint for detect


def _train_network(run: _Training, out: Path, key: str, teacher: Path | None, start_from: Path | None = None,
                   fresh: bool = False) -> Path:
    """Train one network epoch by epoch, checkpointing each; a rerun resumes from the last finished epoch (unless
    ``fresh``). The localization network starts from the classification network's checkpoint ``start_from``."""
    config, network = run.config, run.network
    torch.manual_seed(config.seed + NETWORKS.index(network))
    model = build_network(network, config, len(run.classes),
                          start_from if network == "localization" else None).to(run.device)
    if teacher is not None:
        run.teacher = load_teacher(teacher / f"{network}.pth", config, run.classes, run.clips.store, run.device)
    optimizer, scheduler = _optimizer(config, model)
    task = _NetworkTask(run, model, optimizer, out / f"{network}.pth", key)
    task.scheduler = scheduler
    first = 0 if fresh else resume_if_any(task.path, task, config.epochs_of(network), key,
                                          lambda loaded: model.load_state_dict(loaded.state_dict))
    student: torch.nn.Module = LogitsAndFeatures(model)
    if run.context.active:
        student = DistributedDataParallel(student, device_ids=[run.device.index] if run.device.type == "cuda"
                                          else None)
    task.synced = student
    run_epochs(task, LoopSettings(epochs=config.epochs_of(network), accumulate=config.accumulate,
                                  context=run.context, device=run.device, out=out, say=run.log), first)
    return task.path


def _optimizer(config: DetectorConfig, model: torch.nn.Module
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR | None]:
    """AdamW, or S-CNN's SGD with momentum; the rate decays by ``lr_gamma`` every ``lr_step`` epochs."""
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=config.lr,
                                                           momentum=config.momentum,
                                                           weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma) if config.lr_step
                 else None)
    return optimizer, scheduler


class _NetworkTask:
    """One S-CNN network as the training loop runs it: each epoch's window sample cut into steps of
    processes × accumulate micro-batches, seeded by (seed, network, epoch, step, micro-batch), so one process with
    ``accumulate = 2`` computes the gradient of two processes and a resumed run that of one that never stopped."""

    def __init__(self, run: _Training, model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path,
                 key: str) -> None:
        self.run, self.model, self.optimizer, self.path, self.key = run, model, optimizer, path, key
        self.name = run.network
        self.scheduler: torch.optim.lr_scheduler.StepLR | None = None
        self.metrics: tuple[str, ...] = ("loss", "micro_batches")
        self.synced: torch.nn.Module | None = None
        self.windows = 0

    def steps(self, epoch: int) -> Iterator[list[MicroBatch]]:
        run, config = self.run, self.run.config
        self.model.train()
        order = _epoch_sample(run.windows, run.network, config, epoch, len(run.classes))
        self.windows = len(order)
        parts = run.context.world_size * config.accumulate
        batches = np.array_split(order, max(1, min(-(-len(order) // config.batch_size), len(order) // parts)))
        first = run.context.rank * config.accumulate
        for step, batch in enumerate(progress_bar(
                batches, unit="batch", disable=not run.progress or not run.context.is_main, leave=False,
                desc=f"{run.network} {epoch + 1}/{config.epochs_of(run.network)}", log_delay=LOG_INTERVAL)):
            mine = np.array_split(batch, parts)[first:first + config.accumulate]
            network = NETWORKS.index(run.network)
            yield [MicroBatch(_micro_batch_seed(config.seed, network, epoch, step, first + index),
                              lambda part=part: part) for index, part in enumerate(mine)]

    def loss(self, part: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        loss = _loss(self.run, self.synced or self.model, part)
        return loss, {"loss": float(loss.detach()), "micro_batches": 1.0}

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def end_epoch(self, epoch: int, sums: dict[str, float]) -> dict[str, Any]:
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": sums["loss"] / max(sums["micro_batches"], 1), "windows": self.windows}

    def checkpoint(self, epochs_done: int, row: dict[str, Any]) -> Checkpoint:
        config, network, model = self.run.config, self.run.network, self.model
        return Checkpoint.make(
            self.path, arch=model.arch, model_kwargs=model.build_kwargs, state_dict=model.state_dict(),
            stream=str(StreamName(config.stream, sta=network == "localization" and bool(config.sta))),
            classes=self.run.classes, epoch=epochs_done, run_key=self.key,
            detector=SCNNExtras(network, config_to_dict(config), _as_lists(self.run.length_prior)),
            preprocessing=self.run.clips.store.preprocessing,
            preprocessing_hash=config_hash(self.run.clips.store.preprocessing))

    def best(self, row: dict[str, Any]) -> Path | None:
        return None

    def describe(self, epochs_done: int, row: dict[str, Any]) -> str:
        return (f"{self.name} epoch {epochs_done}/{self.run.config.epochs_of(self.name)}: loss {row['loss']:.3f} on "
                f"{row['windows']} windows in {row['seconds']:.1f} s")


def _as_lists(prior: np.ndarray | None) -> list[list[float]] | None:
    return None if prior is None else [[float(v) for v in row] for row in prior]


def _epoch_sample(windows: WindowSet, network: str, config: DetectorConfig, epoch: int, num_classes: int
                  ) -> np.ndarray:
    """Every action window and background ones, shuffled, from (seed, network, epoch): ``background_ratio`` times
    as many as action windows, or for the classification network as many as there are action windows per class
    on average (S-CNN's rule, so that background is about as frequent as one class)."""
    rng = np.random.default_rng([config.seed, NETWORKS.index(network), epoch])
    actions = np.flatnonzero(windows.labels > 0)
    background = np.flatnonzero(windows.labels == 0)
    wanted = len(actions) / num_classes if network == "classification" else config.background_ratio * len(actions)
    count = min(len(background), int(round(wanted)))
    chosen = np.concatenate([actions, rng.choice(background, count, replace=False)])
    return rng.permutation(chosen)


def _micro_batch_seed(seed: int, network: int, epoch: int, step: int, part: int) -> int:
    return (seed * 1_000_003 + network * 100_003 + epoch * 10_007 + step * 101 + part) % (2**63)


def _loss(run: _Training, student: torch.nn.Module, part: np.ndarray) -> torch.Tensor:
    """Softmax loss (proposal: action or not; else K + 1 classes), S-CNN's overlap loss (localization), MARS's MSE
    (mars stream)."""
    from mars_sta import MARSLoss

    config, windows = run.config, run.windows
    clips = torch.stack([run.clips.clip(windows.videos[i], *windows.spans[i]) for i in part]).to(run.device)
    labels = torch.as_tensor(windows.labels[part], device=run.device)
    targets = (labels > 0).long() if run.network == "proposal" else labels
    in_channels = stream_spec(config.stream).in_channels
    logits, features = student(clips[:, :in_channels].contiguous())
    if run.teacher is None:
        loss = F.cross_entropy(logits, targets)
    else:
        with torch.no_grad():
            target = run.teacher.forward_features(clips[:, in_channels:].contiguous())
        loss = MARSLoss(config.alpha, normalize=config.mse_normalize)(logits, targets, features, target).total
    if run.network == "localization":
        overlaps = torch.as_tensor(windows.overlaps[part], dtype=torch.float32, device=run.device)
        loss = loss + config.overlap_weight * overlap_loss(logits, labels, overlaps, config.overlap_alpha)
    return loss


def detector_config_of(checkpoint: Checkpoint) -> DetectorConfig:
    """The DetectorConfig an S-CNN checkpoint was trained with."""
    if not isinstance(checkpoint.detector, SCNNExtras):
        raise InputError(checkpoint.path, "is not an S-CNN detector checkpoint")
    values = dict(checkpoint.detector.detector_config)
    values["window_lengths"] = tuple(values["window_lengths"])
    values.pop("cache_videos", None)  # cache_mb's predecessor, in checkpoints written before it
    return dataclasses.replace(DetectorConfig(), **values)
