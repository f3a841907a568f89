"""Prediction on new videos: decode, preprocess as the checkpoint's training store did, test, print the top classes.

Each checkpoint records its store's preprocessing (``preprocessing``: short side, frame rate, JPEG quality, TV-L1
backend and parameters, bound, quantisation). A video goes through the code ``extract-flow`` runs
(``flow.decode``) with that recorded coding: RGB frames through the same JPEG round trip, and only for a Flow
checkpoint TV-L1 with the recorded backend (OpenCV or torch, on the device kind it ran on) and quantisation. RGB,
MARS and STA-MARS checkpoints never compute optical flow, which is the speed MARS is about. Clips are then cut,
resized and normalised by the evaluation code itself (``VideoClips``, the MARS protocol: every non-overlapping clip
on the flow-frame grid, centre crop, raw logits averaged), so a prediction equals the scores ``evaluate`` gives the
same video. Several checkpoints are fused as ``fuse`` does by default: the equal average of raw logits.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from flow.errors import InputError
from flow.decode import DecodedVideo, FrameCoding, decode_video
from flow.importer import has_flow
from flow.progress import progress_bar
from flow.video import find_videos
from pipelines.core import checkpoint as ckpt
from pipelines.core.checkpoint import Checkpoint
from pipelines.core.device import resolve_device
from pipelines.inference.engine import Engine
from pipelines.scoring.fusion_weights import fused_scores, softmax
from pipelines.core.manifest import config_hash
from pipelines.core.streams import fusion_name

@dataclass
class PredictConfig:
    """Options of ``mars-sta predict``."""

    top_k: int = 5  # classes printed per video
    device: str = "auto"
    batch_size: int = 32  # clips per forward pass

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.batch_size < 1:
            raise InputError(None, f"--top-k and --batch-size must be at least 1 (got {self.top_k}, "
                                   f"{self.batch_size})")


@dataclass(frozen=True)
class Prediction:
    """The top classes of one video: names, softmax probabilities and (fused) raw logits, best first; ``clips``
    is the number of test clips (of the stream with the most)."""

    video: str
    classes: list[str]
    probabilities: list[float]
    logits: list[float]
    clips: int

    def to_json(self) -> str:
        return json.dumps({"video": self.video, "clips": self.clips, "top": [
            {"class": name, "probability": round(p, 6), "logit": round(v, 6)}
            for name, p, v in zip(self.classes, self.probabilities, self.logits)]})


@dataclass
class PredictSummary:
    model: str  # fusion name of the streams, e.g. "mars+rgb"
    predictions: list[Prediction] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # video -> reason
    seconds: float = 0.0


def checkpoint_preprocessing(checkpoint: Checkpoint) -> dict[str, Any]:
    """The store preprocessing a checkpoint was trained on, checked against its recorded hash."""
    preprocessing = checkpoint.preprocessing
    if not isinstance(preprocessing, dict):
        raise InputError(checkpoint.path, "records no store preprocessing ('preprocessing'), so new videos cannot be "
                                          "prepared as its training data were; retrain it with this version")
    if checkpoint.preprocessing_hash not in (None, config_hash(preprocessing)):
        raise InputError(checkpoint.path, "its 'preprocessing' does not match its 'preprocessing_hash' (edited "
                                          "checkpoint?)")
    return preprocessing


def load_streams(checkpoints: Sequence[str | os.PathLike], device: torch.device = torch.device("cpu"),
                 batch_size: int = 32) -> tuple[list[Engine], list[str]]:
    """Every checkpoint as an Engine, and their common class names (checkpoints of other classes are refused)."""
    if not checkpoints:
        raise InputError(None, "give at least one --checkpoint")
    engines: list[Engine] = []
    for path in map(Path, checkpoints):
        loaded = ckpt.load_checkpoint(path)
        if not loaded.classes:
            raise InputError(path, "records no class names")
        if engines and loaded.classes != engines[0].checkpoint.classes:
            raise InputError(path, f"has other classes than {engines[0].checkpoint.path} ({len(loaded.classes)} vs "
                                   f"{len(engines[0].checkpoint.classes)}); only checkpoints of the same classes can "
                                   "be fused")
        preprocessing = checkpoint_preprocessing(loaded)
        if loaded.spec.needs_flow and not has_flow(preprocessing):
            raise InputError(path, "is a flow network trained on a store without flow")
        engines.append(Engine(loaded, device, batch_size))
    return engines, engines[0].checkpoint.classes


@dataclass(frozen=True)
class VideoDecoder:
    """Decodes a video for checkpoints of one training store: with the store's preprocessing and flow coding (its
    TV-L1 backend and parameters), RGB frames only when a network reads them, TV-L1 only when one reads flow."""

    engines: list[Engine]
    preprocessing: dict[str, Any]
    coding: FrameCoding
    rgb: bool
    flow: bool

    @classmethod
    def of(cls, engines: list[Engine]) -> VideoDecoder:
        checkpoint = engines[0].checkpoint
        preprocessing = checkpoint_preprocessing(checkpoint)
        needs_flow = [engine.checkpoint.spec.needs_flow for engine in engines]
        try:
            coding = FrameCoding.of_store(preprocessing, flow=any(needs_flow))
        except InputError as exc:
            raise InputError(checkpoint.path, exc.problem) from None
        return cls(engines, preprocessing, coding, rgb=not all(needs_flow), flow=any(needs_flow))

    def __call__(self, video: str | os.PathLike) -> DecodedVideo:
        return decode_video(video, self.preprocessing, self.coding, rgb=self.rgb, flow=self.flow)


def list_videos(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder stands for every video below it (searched recursively by extension)."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos.extend(entry.path for entry in find_videos(item).entries)
        else:
            videos.append(item)
    if not videos:
        raise InputError(None, "no videos given")
    return videos


class Predictor:
    """Checkpoints loaded once; calling it on a video path returns its Prediction.

    Args:
        checkpoints: one checkpoint per stream; several are fused by the equal average of raw logits.
        config: top-k, device and batch size.
    """

    def __init__(self, checkpoints: Sequence[str | os.PathLike], config: PredictConfig = PredictConfig()) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.engines, self.classes = load_streams(checkpoints, self.device, config.batch_size)
        self.model = fusion_name(engine.checkpoint.stream for engine in self.engines)
        groups: dict[str, list[Engine]] = {}
        for engine in self.engines:  # checkpoints of one store share one decoding of each video
            groups.setdefault(json.dumps(engine.checkpoint.preprocessing, sort_keys=True), []).append(engine)
        self.decoders = [VideoDecoder.of(engines) for engines in groups.values()]

    def decode(self, video: str | os.PathLike) -> list[DecodedVideo]:
        """The video as each group of checkpoints' training store would hold it."""
        return [decoder(video) for decoder in self.decoders]

    def __call__(self, video: str | os.PathLike) -> Prediction:
        logits, clips = [], 0
        for decoder in self.decoders:  # one decoded video in memory at a time
            decoded = decoder(video)
            for engine in decoder.engines:
                video_clips, _ = engine.video_clips(decoded, [(decoded.video_id, 0)])[0]
                logits.append(engine.video_scores(video_clips)[0].numpy())
                clips = max(clips, len(video_clips))
        fused = fused_scores(logits, [1.0] * len(logits)) if len(logits) > 1 else logits[0].astype(np.float64)
        probabilities = softmax(fused[None])[0]
        top = np.argsort(-fused, kind="stable")[: min(self.config.top_k, len(self.classes))]
        return Prediction(str(video), [self.classes[i] for i in top], [float(probabilities[i]) for i in top],
                          [float(fused[i]) for i in top], clips)


def predict(config: PredictConfig, inputs: Sequence[str | os.PathLike], checkpoints: Sequence[str | os.PathLike],
            progress: bool = True, on_prediction: Callable[[Prediction], None] | None = None,
            on_failure: Callable[[str, str], None] | None = None) -> PredictSummary:
    """Predict every video of ``inputs`` (files, or folders searched recursively); a bad video fails alone.

    Args:
        config: top-k, device and batch size.
        inputs: video files, or folders searched recursively for videos.
        checkpoints: one per stream; several are fused by the equal average of raw logits.
        progress: show a progress bar.
        on_prediction: receives each video's Prediction as it is made.
        on_failure: receives (video, reason) for each video that could not be predicted.
    """
    started = time.perf_counter()
    predictor = Predictor(checkpoints, config)
    videos = list_videos(inputs)
    summary = PredictSummary(model=predictor.model)
    for video in progress_bar(videos, desc=f"predict {predictor.model}", unit="video", disable=not progress,
                      dynamic_ncols=True):
        try:
            prediction = predictor(video)
        except InputError as exc:
            reason = exc.problem
        except cv2.error as exc:
            reason = f"OpenCV error: {str(exc).strip().splitlines()[-1]}"
        else:
            summary.predictions.append(prediction)
            if on_prediction:
                on_prediction(prediction)
            continue
        summary.failures[str(video)] = reason
        if on_failure:
            on_failure(str(video), reason)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
