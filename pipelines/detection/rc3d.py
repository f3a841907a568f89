"""STA-R-C3D: R-C3D's proposal and classification subnets over a shared registry backbone (STA where ``sta``
says), trained end to end from the flow store or heads-only on a feature store, and its test.

End to end, the training samples are R-C3D's port's windows: buffers of ``buffer`` frames that overlap by
``buffer_overlap``, each with the ground truth that lies at least ``truth_inside`` in it (clipped to it). Heads-only
training reads the maps ``features`` cached from the frozen backbone, whose buffers do not overlap
(``pipelines.inference.features.buffers``, as the test cuts a video), with the same rule for the ground truth.
``DIR/rc3d.pth`` holds the backbone (as the ``state_dict`` of a registry network, so ``features --checkpoint``
reads it too) and the heads, with optimizer and RNG states for exact resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flow.atomic import write_json_atomic
from flow.errors import InputError
from flow.store import VIDEOS, FlowStore
from mars_sta.rc3d import RC3DHeads, backbone_map, fixed_batchnorm, freeze_before, map_geometry
from pipelines.core.checkpoint import Checkpoint, RC3DExtras, load_checkpoint
from pipelines.core.config import check_at_least, check_choices, check_one_of, config_to_dict
from pipelines.core.device import resolve_device
from pipelines.core.distributed import DistContext, average_gradients, init_distributed, rank_device
from pipelines.core.lock import folder_lock
from pipelines.core.manifest import config_hash, file_sha256, fingerprint, stage_manifest
from pipelines.core.stream_specs import StreamName
from pipelines.core.training import LoopSettings, MicroBatch, resume_if_any, run_epochs
from pipelines.data.clips import NORMALIZATIONS, Normalization
from pipelines.data.annotations import SUBSET_NAMES, Annotations, fps_of
from pipelines.detection.rc3d_targets import anchor_targets, proposals, roi_targets, sample_losses
from pipelines.inference.features import BackboneInput, FeatureStore, buffers

MODEL = "rc3d.pth"
# R-C3D's port on THUMOS'14: anchor scales 2, 4, 5, 6, 8, 9, 10, 12, 14, 16 steps of C3D's 8 frames
THUMOS_ANCHOR_FRAMES = (16, 32, 40, 48, 64, 72, 80, 96, 112, 128)
# the first stage fine-tuned end to end: the port fixes C3D's layers before pool2 and its ResNets' stem
FINE_TUNE_FROM = {"c3d": "conv3"}


@dataclass(frozen=True)
class RC3DConfig:
    """Settings of ``train-detector --detector rc3d`` (TOML table ``[detection.rc3d]``); defaults are those of
    R-C3D's PyTorch port for THUMOS'14 (``cfgs/c3d_thumos14.yml``, ``trainval_net.py``), which the STA paper used."""

    mode: Literal["end-to-end", "heads"] = "end-to-end"  # heads: backbone frozen, maps read from --features
    arch: str = "tiny_resnet"
    stream: Literal["rgb", "flow"] = "flow"
    sta: str | None = None  # STA in the shared backbone (STA-R-C3D)
    size: int = 32  # frame side the backbone reads
    normalization: str = "unit"
    pretrained: str | None = None  # checkpoint the backbone starts from (heads: the features' checkpoint)
    layer: str | None = None  # backbone stage the heads read; None: the last (C3D: conv5, its conv5b map)
    fine_tune_from: str | None = None  # first backbone stage trained end to end; None: c3d conv3, else the first
    stride: int = 1  # grid frames between sampled frames
    buffer: int = 768  # sampled frames per buffer (R-C3D: 768)
    buffer_overlap: float = 0.75  # end to end, training buffers start every buffer x (1 - overlap) frames
    truth_inside: float = 0.7  # a ground-truth segment trains a buffer when this share of it lies inside
    anchor_frames: tuple[float, ...] = THUMOS_ANCHOR_FRAMES  # anchor lengths in sampled frames, at least one
    # feature step (c3d: 8 frames, a 3D ResNet's last stage: 16, tiny_resnet: 1); in steps they may be fractional
    anchor_positive: float = 0.7
    anchor_negative: float = 0.3
    anchor_batch: int = 64
    anchor_fraction: float = 0.5
    anchor_sigma: float = 3.0
    train_pre_nms: int = 12000
    train_post_nms: int = 2000
    test_pre_nms: int = 6000
    test_post_nms: int = 300
    proposal_nms: float = 0.8  # NMS among proposals in training
    test_proposal_nms: float = 0.9  # and at test
    min_length: float = 0.0  # proposals shorter than this many feature steps are dropped
    roi_positive: float = 0.5
    roi_negative: tuple[float, float] = (0.1, 0.5)
    roi_batch: int = 128
    roi_fraction: float = 0.5
    offset_stds: tuple[float, float] = (0.1, 0.2)
    pool: tuple[int, int, int] = (4, 2, 2)
    proposal_hidden: int = 512
    hidden: int = 4096
    dropout: float = 0.5
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.0001
    lr_step: int = 3  # epochs between learning-rate drops; 0: constant
    lr_gamma: float = 0.1  # factor of each drop
    weight_decay: float = 0.0005
    epochs: int = 5
    accumulate: int = 1  # buffers per optimizer step, per process: a step takes processes × accumulate buffers
    subset: str = "val"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choices(self)
        check_one_of(normalization=(self.normalization, NORMALIZATIONS), subset=(self.subset, SUBSET_NAMES))
        check_at_least(stride=(self.stride, 1), buffer=(self.buffer, 1), epochs=(self.epochs, 0),
                       accumulate=(self.accumulate, 1), lr_step=(self.lr_step, 0),
                       anchor_batch=(self.anchor_batch, 1), roi_batch=(self.roi_batch, 1), size=(self.size, 1))
        numbers = (*self.anchor_frames, *self.roi_negative, *self.offset_stds, *self.pool)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
            raise InputError(None, "anchor_frames, roi_negative, offset_stds and pool must hold numbers")
        if (not self.anchor_frames or min(self.anchor_frames) <= 0 or len(self.pool) != 3 or min(self.pool) < 1
                or len(self.roi_negative) != 2 or len(self.offset_stds) != 2 or min(self.offset_stds) <= 0):
            raise InputError(None, "anchor_frames and offset_stds must be positive, roi_negative a pair and pool "
                                   "three positive bin counts")
        if not 0 <= self.anchor_negative <= self.anchor_positive <= 1 or not (
                0 <= self.roi_negative[0] <= self.roi_negative[1] <= self.roi_positive <= 1):
            raise InputError(None, "negative and positive tIoU thresholds must satisfy 0 <= negative <= positive <= 1")
        shares = {"proposal_nms": self.proposal_nms, "test_proposal_nms": self.test_proposal_nms,
                  "anchor_fraction": self.anchor_fraction, "roi_fraction": self.roi_fraction,
                  "truth_inside": self.truth_inside, "lr_gamma": self.lr_gamma}
        outside = [name for name, value in shares.items() if not 0 <= value <= 1]
        if outside or self.min_length < 0:
            raise InputError(None, f"{', '.join(outside) or 'min_length'}: NMS thresholds and fractions lie in "
                                   "[0, 1], min_length is at least 0")
        for name, value in (("dropout", self.dropout), ("buffer_overlap", self.buffer_overlap)):
            if not 0 <= value < 1:
                raise InputError(None, f"{name} must lie in [0, 1), got {value}")


def rc3d_extras(checkpoint: Checkpoint) -> RC3DExtras:
    """An ``rc3d.pth``'s own fields; any other checkpoint is refused."""
    if not isinstance(checkpoint.detector, RC3DExtras):
        raise InputError(checkpoint.path, "is not an R-C3D checkpoint (no heads)")
    return checkpoint.detector


def rc3d_config_of(checkpoint: Checkpoint) -> RC3DConfig:
    """The RC3DConfig an ``rc3d.pth`` was trained with. Older files gave anchors in feature steps
    (``anchor_scales``): they become frames with the backbone's frames per step; settings added since take their
    defaults."""
    extras = rc3d_extras(checkpoint)
    values = dict(extras.rc3d_config)
    if "anchor_scales" in values:
        layer = extras.reads["layer"]
        frames_per_step = map_geometry(checkpoint.build_model(), layer)[1]
        values["anchor_frames"] = [s * frames_per_step for s in values.pop("anchor_scales")]
    tuples = {k: tuple(values[k]) for k in ("anchor_frames", "roi_negative", "offset_stds", "pool")}
    return dataclasses.replace(RC3DConfig(), **{**values, **tuples})


class RC3D:
    """A backbone, its input, the layer the heads read, and the heads: what training and detection share."""

    def __init__(self, backbone: torch.nn.Module, reads: BackboneInput, heads: RC3DHeads) -> None:
        self.backbone, self.reads, self.heads = backbone, reads, heads

    def to(self, device: torch.device) -> RC3D:
        self.backbone.to(device)
        self.heads.to(device)
        return self

    def parameters(self, mode: str) -> list[torch.nn.Parameter]:
        """What training updates: the heads, and end to end the backbone's parameters that are not fixed."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad] if mode == "end-to-end" else []
        return [*self.heads.parameters(), *backbone]

    def train(self, mode: str) -> None:
        """Heads in training mode; the backbone too when it trains end to end, but its BatchNorm layers in eval
        mode, as the port's ``set_bn_fix`` and ``set_bn_eval``."""
        self.heads.train()
        self.backbone.train(mode == "end-to-end")
        for module in fixed_batchnorm(self.backbone):
            module.eval()

    def buffer_map(self, store: FlowStore, video: str, first: int, stop: int, device: torch.device
                   ) -> torch.Tensor:
        """One buffer's map (C, L, h, w), computed by the backbone (with gradients when it trains)."""
        clip = self.reads.buffer_clip(store, video, first, stop)[None].to(device)
        return backbone_map(self.backbone, clip, self.reads.layer)[0]


def build_rc3d(config: RC3DConfig, num_classes: int, store: FlowStore) -> RC3D:
    """The backbone from the registry (``config.sta``; weights from ``config.pretrained``) and fresh heads.

    Args:
        config: the R-C3D settings.
        num_classes: K, the action classes (the heads add background).
        store: the flow store, for its flow bound (input normalization).
    """
    from mars_sta import build_model, load_pretrained

    backbone = build_model(config.arch, num_classes=num_classes + 1, in_channels=3 if config.stream == "rgb" else 2,
                           sample_size=config.size, sample_duration=16, sta=config.sta)
    layer = config.layer or backbone.stage_names[-1]
    first_trained = config.fine_tune_from or FINE_TUNE_FROM.get(config.arch, backbone.stage_names[0])
    for option, stage in (("layer", layer), ("fine_tune_from", first_trained)):
        if stage not in backbone.stage_names:
            raise InputError(None, f"{option} {stage!r}: {config.arch} has the stages "
                                   f"{', '.join(backbone.stage_names)}")
    channels, frames_per_step = map_geometry(backbone, layer)
    short = [frames for frames in config.anchor_frames if frames < frames_per_step]
    if short:
        raise InputError(None, f"anchor_frames {short}: shorter than one feature step of {config.arch} at {layer} "
                               f"({frames_per_step} frames)")
    if config.pretrained:
        load_pretrained(backbone, config.pretrained)
    freeze_before(backbone, first_trained)
    fixed_batchnorm(backbone)
    reads = BackboneInput(config.stream, config.size, Normalization.named(config.normalization, store.bound),
                          config.stride, config.buffer, layer)
    heads = RC3DHeads(channels=channels, num_classes=num_classes + 1,
                      anchor_scales=[frames / frames_per_step for frames in config.anchor_frames], pool=config.pool,
                      proposal_hidden=config.proposal_hidden, hidden=config.hidden, dropout=config.dropout)
    fc6 = getattr(backbone, "fc6", None)
    if fc6 is not None and not heads.start_from_fc6(fc6):
        raise InputError(None, f"pool {list(config.pool)} and hidden {config.hidden}: {config.arch}'s fc6, the RoI "
                               f"head, takes {fc6.in_features} inputs and gives {fc6.out_features}")
    return RC3D(backbone, reads, heads)


@dataclass
class Buffer:
    """One training sample: a buffer of a video, its ground truth in the buffer's feature steps and class ids."""

    video: str
    first: int  # sampled steps [first, stop)
    stop: int
    chunk: int  # which buffer of the video (heads-only: of the cached ones)
    truth: np.ndarray
    classes: np.ndarray


def overlapping_buffers(steps: int, buffer: int, overlap: float) -> list[tuple[int, int]]:
    """R-C3D's port's training windows over ``steps`` sampled frames: a buffer every ``buffer · (1 − overlap)``
    frames from the start while a whole one fits, and as many back from the end, each start once; a video shorter
    than a buffer is one."""
    if steps <= buffer:
        return [(0, steps)]
    step = max(1, round(buffer * (1 - overlap)))
    starts = set(range(0, steps - buffer + 1, step)) | set(range(steps - buffer, -1, -step))
    return [(first, first + buffer) for first in sorted(starts)]


def kept_truth(segments: np.ndarray, first: int, stop: int, inside: float) -> np.ndarray:
    """Which segments (n, 2) in sampled frames train the buffer ``[first, stop)``: those with at least ``inside``
    of their length in it (the port's 0.7), as a mask; the others are left out, not cut to a sliver."""
    length = segments[:, 1] - segments[:, 0]
    within = np.minimum(segments[:, 1], stop) - np.maximum(segments[:, 0], first)
    return (within > 0) & (within >= inside * length)


def training_buffers(store: FlowStore, truth: Annotations, reads: BackboneInput, frames_per_step: int,
                     config: RC3DConfig) -> list[Buffer]:
    """Every buffer of every annotated video that keeps ground truth, its segments clipped to the buffer (by at
    most ``1 − truth_inside`` of them). End to end the buffers overlap; heads-only they are the cached ones."""
    found = []
    for video in sorted(truth.videos):
        frames = truth.in_frames(video, fps_of(store, video))
        segments = np.array([(a, b) for a, b, _ in frames], np.float64).reshape(-1, 2) / reads.stride
        labels = np.array([k for *_, k in frames], np.int64)
        steps = -(-(store.num_frames(video) - 1) // reads.stride)
        spans = (buffers(store.num_frames(video) - 1, reads.stride, reads.buffer) if config.mode == "heads"
                 else overlapping_buffers(steps, reads.buffer, config.buffer_overlap))
        for chunk, (first, stop) in enumerate(spans):
            kept = kept_truth(segments, first, stop, config.truth_inside)
            if kept.any():
                inside = (segments[kept].clip(first, stop) - first) / frames_per_step
                found.append(Buffer(video, first, stop, chunk, inside, labels[kept]))
    return found


def buffer_losses(model: RC3D, feature_map: torch.Tensor, sample: Buffer, config: RC3DConfig,
                  rng: np.random.Generator) -> torch.Tensor:
    """The four R-C3D losses of one buffer, summed with weight 1 each."""
    length = feature_map.shape[1]
    anchors = model.heads.anchors(length)
    scores, offsets = model.heads.proposal(feature_map[None])
    anchor_sample = anchor_targets(anchors.numpy(), sample.truth, length, config.anchor_positive,
                                   config.anchor_negative, config.anchor_batch, config.anchor_fraction, rng)
    rpn_cls, rpn_reg = sample_losses(scores[0], offsets[0], anchor_sample, config.anchor_sigma)
    rois, _ = proposals(scores[0], offsets[0], anchors, length, config.train_pre_nms, config.train_post_nms,
                        config.proposal_nms, config.min_length)
    rois = np.concatenate([rois, sample.truth]) if len(sample.truth) else rois
    roi_sample = roi_targets(rois, sample.truth, sample.classes, config.roi_positive, config.roi_negative,
                             config.roi_batch, config.roi_fraction, config.offset_stds, rng)
    if not len(roi_sample.indices):
        return rpn_cls + rpn_reg
    chosen = torch.as_tensor(rois[roi_sample.indices], dtype=torch.float32, device=feature_map.device)
    logits, class_offsets = model.heads.classify(feature_map, chosen)
    shifted = dataclasses.replace(roi_sample, indices=np.arange(len(roi_sample.indices)))
    cls, reg = sample_losses(logits, class_offsets, shifted, 1.0)
    return rpn_cls + rpn_reg + cls + reg


def train_rc3d(config: RC3DConfig, store_path: Path, truth: Annotations, out: Path, features: Path | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train R-C3D on one annotation subset; writes ``out/rc3d.pth`` every epoch and resumes from it.

    Args:
        config: the R-C3D settings (``mode`` end-to-end or heads).
        store_path: the flow store of the annotated videos (fps, lengths; frames when end to end).
        truth: the annotations of ``config.subset``.
        out: folder for ``rc3d.pth`` and ``manifest.json``.
        features: the feature store heads-only training reads (built from ``config.pretrained``).
        log: where progress lines go.
    """
    store = FlowStore(store_path)
    truth.check_videos(store)
    torch.manual_seed(config.seed)
    model = build_rc3d(config, len(truth.classes), store)
    cache = _heads_features(config, model, features, store) if config.mode == "heads" else None
    context = init_distributed(resolve_device(config.device))
    device = rank_device(resolve_device(config.device), context)
    model.to(device)
    samples = training_buffers(store, truth, model.reads, map_geometry(model.backbone, model.reads.layer)[1],
                               config)
    if not samples:
        raise InputError(truth.source, f"no buffer of the {truth.subset} videos holds ground truth")
    optimizer = _optimizer(config, model.parameters(config.mode))
    manifest = stage_manifest("train-detector", {"detector": "rc3d", **config_to_dict(config)},
                              {"store": store_path, "annotations": truth.source, "features": features})
    parts = context.world_size * config.accumulate
    key = _resume_key(config, manifest, store, features, parts)
    with folder_lock(out) if context.is_main else contextlib.nullcontext():  # creates it: all checks are done
        task = _RC3DTask(model, samples, cache, store, config, optimizer, device, context, truth.classes,
                         out / MODEL, key, features)
        run_epochs(task, LoopSettings(epochs=config.epochs, accumulate=config.accumulate, context=context,
                                      device=device, out=out, say=log if context.is_main else lambda line: None),
                   resume_if_any(task.path, task, config.epochs, key, partial(_load_weights, model)))
        if context.is_main:
            write_json_atomic(out / "manifest.json", {**manifest, "classes": truth.classes,
                                                      "processes": context.world_size,
                                                      "outputs": {"rc3d": str(out / MODEL)}})
    return {"rc3d": str(out / MODEL)} if context.is_main else {}


def _optimizer(config: RC3DConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """R-C3D's SGD with momentum 0.9, or AdamW for small networks trained from scratch."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


class _RC3DTask:
    """R-C3D as the training loop runs it. An optimizer step takes up to processes × accumulate buffers; this rank
    takes its ``accumulate`` of them, each weighted 1 / (processes × accumulate), and the gradients are averaged
    over ranks by hand (the backbone and heads are used piecewise, which DistributedDataParallel cannot wrap).
    Sampling and dropout are seeded by (seed, epoch, buffer), so one process with ``accumulate = 2`` computes the
    gradient two processes do, and a resumed run the one a straight run does."""

    def __init__(self, model: RC3D, samples: list[Buffer], cache: FeatureStore | None,
                 store: FlowStore, config: RC3DConfig, optimizer: torch.optim.Optimizer, device: torch.device,
                 context: DistContext, classes: list[str], path: Path, key: str, features: Path | None) -> None:
        self.model, self.samples, self.cache, self.store, self.config = model, samples, cache, store, config
        self.optimizer, self.device, self.context, self.classes = optimizer, device, context, classes
        self.path, self.key, self.features = path, key, features
        self.name = "rc3d"
        self.scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
                          if config.lr_step else None)
        self.synced: torch.nn.Module | None = None
        self.metrics: tuple[str, ...] = ("loss", "buffers")
        self.epoch = 0

    def steps(self, epoch: int) -> Iterator[list[MicroBatch]]:
        config, rank = self.config, self.context.rank
        self.epoch = epoch
        self.model.train(config.mode)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(self.samples))
        parts = self.context.world_size * config.accumulate
        for first in range(0, len(order), parts):
            group = order[first:first + parts][rank * config.accumulate:(rank + 1) * config.accumulate]
            yield [MicroBatch(int(np.random.SeedSequence([config.seed, epoch, int(index)]).generate_state(1)[0]),
                              lambda index=int(index): index) for index in group]

    def loss(self, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        sample, config = self.samples[index], self.config
        if self.cache is None:
            feature_map = self.model.buffer_map(self.store, sample.video, sample.first, sample.stop, self.device)
        else:
            feature_map = self.cache.read_chunk(sample.video, sample.chunk).to(self.device)
        loss = buffer_losses(self.model, feature_map, sample, config,
                             np.random.default_rng([config.seed, self.epoch, index]))
        return loss, {"loss": float(loss.detach()), "buffers": 1.0}

    def after_backward(self) -> None:
        average_gradients(self.model.parameters(self.config.mode), self.context)

    def after_step(self) -> None:
        pass

    def end_epoch(self, epoch: int, sums: dict[str, float]) -> dict[str, Any]:
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": sums["loss"] / max(sums["buffers"], 1)}

    def checkpoint(self, epochs_done: int, row: dict[str, Any]) -> Checkpoint:
        backbone, heads, reads, config = self.model.backbone, self.model.heads, self.model.reads, self.config
        extras = RC3DExtras(heads.state_dict(), _heads_kwargs(heads),
                            {**dataclasses.asdict(reads), "normalization": vars(reads.normalization)},
                            config_to_dict(config),
                            file_sha256(config.pretrained) if self.features is not None and config.pretrained else "")
        return Checkpoint.make(self.path, arch=backbone.arch, model_kwargs=backbone.build_kwargs,
                               state_dict=backbone.state_dict(),
                               stream=str(StreamName(config.stream, sta=bool(config.sta))),
                               classes=self.classes, epoch=epochs_done, run_key=self.key, detector=extras,
                               train_config={"normalization": config.normalization},
                               preprocessing=self.store.preprocessing,
                               preprocessing_hash=config_hash(self.store.preprocessing))

    def best(self, row: dict[str, Any]) -> Path | None:
        return None

    def describe(self, epochs_done: int, row: dict[str, Any]) -> str:
        return (f"rc3d ({self.config.mode}) epoch {epochs_done}/{self.config.epochs}: loss {row['loss']:.3f} on "
                f"{len(self.samples)} buffers in {row['seconds']:.1f} s")


def _heads_features(config: RC3DConfig, model: RC3D, features: Path | None, store: FlowStore) -> FeatureStore:
    """The cached maps heads-only training reads, after checking they come from this backbone and input."""
    if features is None or config.pretrained is None:
        raise InputError(None, "mode 'heads' trains on cached features: give --features FEATS and --pretrained, "
                               "the checkpoint they were computed with")
    cache = FeatureStore(features)
    recorded = cache.manifest
    wanted = {"checkpoint_sha256": file_sha256(config.pretrained), "arch": config.arch,
              "sta": model.backbone.build_kwargs["sta"], "layer": model.reads.layer, "stride": config.stride,
              "buffer": config.buffer, "size": config.size, "normalization": vars(model.reads.normalization),
              "preprocessing": store.preprocessing}
    found = {**recorded, "sta": recorded.get("model_kwargs", {}).get("sta"),
             "normalization": {k: tuple(v) if isinstance(v, list) else v
                               for k, v in recorded.get("normalization", {}).items()}}
    differ = [name for name, value in wanted.items() if found.get(name) != value]
    if differ:
        raise InputError(features, f"was computed with another {', '.join(differ)} than this training asks for; "
                                   "rebuild it with mars-sta features")
    return cache


def _resume_key(config: RC3DConfig, manifest: dict[str, Any], store: FlowStore, features: Path | None,
                parts: int) -> str:
    """Config but its epoch count (and processes and accumulate, but their product ``parts``), the annotations, the
    bytes of the checkpoint the backbone starts from, the features' key (not their folder, whose manifest every
    rerun of ``features`` rewrites), and the store's video files and preprocessing."""
    inputs = {"annotations": manifest["input_fingerprints"].get("annotations"), "preprocessing": store.preprocessing,
              "videos": fingerprint(store.root / VIDEOS),
              "pretrained": file_sha256(config.pretrained) if config.pretrained else None,
              "features": FeatureStore(features).manifest["key"] if features is not None else None}
    return config_hash({**manifest["config"], "epochs": None, "accumulate": None, "parts": parts, "inputs": inputs})


def _heads_kwargs(heads: RC3DHeads) -> dict[str, Any]:
    return {"channels": heads.proposal.body[0].in_channels, "num_classes": heads.classification.num_classes,
            "anchor_scales": list(heads.anchor_scales), "pool": list(heads.pool),
            "proposal_hidden": heads.proposal.body[0].out_channels,
            "hidden": heads.classification.score.in_features,
            "dropout": heads.classification.body[2].p}


def _load_weights(model: RC3D, checkpoint: Checkpoint) -> None:
    """The backbone's and the heads' weights of a run being continued."""
    model.backbone.load_state_dict(checkpoint.state_dict)
    model.heads.load_state_dict(rc3d_extras(checkpoint).heads)


def load_rc3d(path: Path) -> tuple[RC3D, Checkpoint]:
    """A trained R-C3D (eval mode) and its checkpoint."""
    checkpoint = load_checkpoint(path)
    extras = rc3d_extras(checkpoint)
    reads = dict(extras.reads)
    normalization = Normalization(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in reads.pop("normalization").items()})
    heads = RC3DHeads(**extras.heads_kwargs)
    try:
        heads.load_state_dict(extras.heads)
    except RuntimeError:  # torch's, for missing or misshapen keys
        raise InputError(path, "holds R-C3D heads of another layout (an older version of mars-sta): train it "
                               "again") from None
    model = RC3D(checkpoint.build_model(), BackboneInput(normalization=normalization, **reads), heads.eval())
    return model, checkpoint
