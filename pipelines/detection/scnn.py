"""STA-S-CNN: S-CNN's proposal and localization networks on any registered backbone, STA where ``sta`` says.

S-CNN (Shou et al., CVPR 2016) scores multi-scale sliding windows, each sampled to a fixed-length clip, with two
networks of one architecture: a *proposal* network (action or background) and a *localization* network (K + 1
classes) trained with softmax loss plus the overlap loss, which makes the true class's probability follow the
window's tIoU. The paper puts STA into the localization network only, so ``sta`` applies there.

``train_detector`` trains both networks on one annotation subset (THUMOS'14 trains on ``val``) and writes
``proposal.pth`` and ``localization.pth``, each in the project's checkpoint format with exact resume: each epoch's
window sample and order come from ``(seed, epoch)``, and the optimizer and RNG states are saved every epoch.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from flow.atomic import write_json_atomic
from flow.errors import InputError
from flow.store import VIDEOS, FlowStore
from pipelines.core.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from pipelines.core.config import check_above, check_at_least, config_to_dict
from pipelines.detection.annotations import Annotations
from pipelines.detection.clips import WindowClips, fps_of
from pipelines.detection.windows import label_windows, sliding_windows
from pipelines.core.device import resolve_device
from pipelines.core.manifest import config_hash, fingerprint, stage_manifest

NETWORKS = ("proposal", "localization")
STREAMS = ("rgb", "flow")


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of ``train-detector`` (TOML table ``[detection.train]``); windows and labels follow S-CNN."""

    arch: str = "tiny_resnet"
    stream: str = "flow"  # rgb or flow
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
    lr: float = 0.002
    weight_decay: float = 0.01
    normalization: str = "unit"  # "unit" for tiny networks from scratch, "mars" for MARS's input scale
    pretrained: str | None = None  # a recognition checkpoint (trimmed clips) both networks start from
    subset: str = "val"  # annotation subset trained on
    seed: int = 0
    device: str = "auto"
    cache_videos: bool = True  # keep each video's frames in memory after the first read

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise InputError(None, f"detection stream must be one of {', '.join(STREAMS)}, not {self.stream!r}")
        check_at_least(frames=(self.frames, 1), size=(self.size, 1), epochs=(self.epochs, 1),
                       batch_size=(self.batch_size, 1), weight_decay=(self.weight_decay, 0), seed=(self.seed, 0),
                       background_ratio=(self.background_ratio, 0), overlap_weight=(self.overlap_weight, 0))
        check_above(lr=(self.lr, 0), overlap_alpha=(self.overlap_alpha, 0))
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
                   log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Train the proposal and the localization network; returns the paths of both checkpoints.

    Args:
        config: the settings (architecture, stream, STA, windows, labels, optimisation).
        store_path: the flow store of the annotated videos.
        truth: the annotations of ``config.subset``, already read.
        out: folder for ``proposal.pth``, ``localization.pth``, ``manifest.json``.
        log: where progress lines go.
        progress: show a progress bar.
    """
    store = FlowStore(store_path)
    truth.check_videos(store)
    out.mkdir(parents=True, exist_ok=True)
    manifest = stage_manifest("train-detector", config_to_dict(config), {"store": store_path, "annotations":
                                                                         truth.source})
    clips = WindowClips(store, config.stream, config.frames, config.size, config.normalization, config.cache_videos)
    device = resolve_device(config.device)
    thresholds = {"proposal": (config.proposal_positive, config.proposal_negative),
                  "localization": (config.localization_positive, config.localization_negative)}
    windows = {network: training_windows(store, truth, config, *thresholds[network]) for network in NETWORKS}
    for network, found in windows.items():  # checked for both before either trains
        if not (found.labels > 0).any():
            raise InputError(truth.source, f"no window reaches tIoU {thresholds[network][0]} with the {truth.subset} "
                                           f"ground truth (window lengths {list(config.window_lengths)})")
    paths = {network: _train_network(network, config, windows[network], clips, truth.classes, device, out,
                                     _resume_key(network, manifest, store), log, progress) for network in NETWORKS}
    write_json_atomic(out / "manifest.json", {**manifest, "classes": truth.classes, "outputs": {
        k: str(v) for k, v in paths.items()}})
    return {k: str(v) for k, v in paths.items()}


def _resume_key(network: str, manifest: dict[str, Any], store: FlowStore) -> str:
    """What a checkpoint must have been trained with to be resumed: the config but its epoch count (the LR is
    constant, so a finished run can be extended), the annotations, and the store's video files and preprocessing
    (not its manifest, which every rerun of extract-flow rewrites). The proposal network does not depend on STA,
    so a plain S-CNN's proposal network serves STA-S-CNN unchanged, as in the paper."""
    ignored = {"epochs": None, **({"sta": None} if network == "proposal" else {})}
    inputs = {"annotations": manifest["input_fingerprints"].get("annotations"), "preprocessing": store.preprocessing,
              "videos": fingerprint(store.root / VIDEOS)}
    return config_hash({**manifest["config"], **ignored, "network": network, "inputs": inputs})


def build_network(network: str, config: DetectorConfig, num_classes: int) -> torch.nn.Module:
    """The proposal (2-way) or localization (K + 1-way, with ``config.sta``) network from the registry."""
    from mars_sta import build_model, load_pretrained

    model = build_model(config.arch, num_classes=2 if network == "proposal" else num_classes + 1,
                        in_channels=3 if config.stream == "rgb" else 2, sample_size=config.size,
                        sample_duration=config.frames, sta=config.sta if network == "localization" else None)
    if config.pretrained:
        load_pretrained(model, config.pretrained)
    return model


def _train_network(network: str, config: DetectorConfig, windows: WindowSet, clips: WindowClips,
                   classes: list[str], device: torch.device, out: Path, key: str, log: Callable[[str], None],
                   progress: bool) -> Path:
    """Train one network epoch by epoch, checkpointing each; a rerun resumes from the last finished epoch."""
    torch.manual_seed(config.seed + NETWORKS.index(network))
    model = build_network(network, config, len(classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    path = out / f"{network}.pth"
    first = _resume(path, key, model, optimizer)
    for epoch in range(first, config.epochs):
        started = time.perf_counter()
        model.train()
        order = _epoch_sample(windows, network, config, epoch)
        losses = []
        for batch in tqdm(np.array_split(order, max(1, -(-len(order) // config.batch_size))), disable=not progress,
                          desc=f"{network} {epoch + 1}/{config.epochs}", leave=False):
            losses.append(_step(network, model, optimizer, windows, clips, batch, config, device))
        _save(path, network, model, optimizer, config, classes, epoch, key)
        log(f"{network} epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses):.3f} on {len(order)} windows "
            f"in {time.perf_counter() - started:.1f} s")
    return path


def _epoch_sample(windows: WindowSet, network: str, config: DetectorConfig, epoch: int) -> np.ndarray:
    """Every action window and ``background_ratio`` times as many background ones, shuffled, from (seed, epoch)."""
    rng = np.random.default_rng([config.seed, NETWORKS.index(network), epoch])
    actions = np.flatnonzero(windows.labels > 0)
    background = np.flatnonzero(windows.labels == 0)
    count = min(len(background), int(round(config.background_ratio * len(actions))))
    chosen = np.concatenate([actions, rng.choice(background, count, replace=False)])
    return rng.permutation(chosen)


def _step(network: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, windows: WindowSet,
          clips: WindowClips, batch: np.ndarray, config: DetectorConfig, device: torch.device) -> float:
    inputs = torch.stack([clips.clip(windows.videos[i], *windows.spans[i]) for i in batch]).to(device)
    labels = torch.as_tensor(windows.labels[batch], device=device)
    logits = model(inputs)
    if network == "proposal":
        loss = F.cross_entropy(logits, (labels > 0).long())
    else:
        overlaps = torch.as_tensor(windows.overlaps[batch], dtype=torch.float32, device=device)
        loss = F.cross_entropy(logits, labels) + config.overlap_weight * overlap_loss(
            logits, labels, overlaps, config.overlap_alpha)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _save(path: Path, network: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          config: DetectorConfig, classes: list[str], epoch: int, key: str) -> None:
    save_checkpoint(path, {
        "arch": model.arch, "model_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict(),
        "stream": ("sta-" if network == "localization" and config.sta else "") + config.stream,
        "network": network, "classes": list(classes), "detector_config": json.dumps(config_to_dict(config)),
        "optimizer": optimizer.state_dict(), "epoch": epoch, "epochs": config.epochs, "rng": rng_state(),
        "run_key": key,
    })


def _resume(path: Path, key: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """The first epoch still to train: after the checkpoint's, when it was written by the same config and inputs."""
    if not path.is_file():
        return 0
    payload = load_checkpoint(path).payload
    if payload.get("run_key") != key:
        raise InputError(path, "was trained with another config or other inputs; use another --out or delete it")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    restore_rng_state(payload["rng"])
    return int(payload["epoch"]) + 1


def detector_config_of(payload: dict[str, Any]) -> DetectorConfig:
    """The DetectorConfig a detector checkpoint was trained with."""
    values = json.loads(payload["detector_config"])
    values["window_lengths"] = tuple(values["window_lengths"])
    return dataclasses.replace(DetectorConfig(), **values)
