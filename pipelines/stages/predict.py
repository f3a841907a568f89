"""Prediction on new videos: decode, preprocess as the checkpoint's training store did, test, print the top classes.

Each checkpoint records its store's preprocessing (``preprocessing``: short side, frame rate, JPEG quality, TV-L1
parameters, bound, quantisation). A video is decoded and resized as ``extract-flow`` does; RGB frames go through
the same JPEG round trip the store's frames went through; only a Flow checkpoint has TV-L1 computed, with the
recorded parameters and quantisation. RGB, MARS and STA-MARS checkpoints never compute optical flow, which is the
speed MARS is about. Clips are then cut, resized and normalised by the evaluation code itself (``VideoClips``, the
MARS protocol: every non-overlapping clip on the flow-frame grid, centre crop, raw logits averaged), so a
prediction equals the scores ``evaluate`` gives the same video. Several checkpoints are fused as ``fuse`` does by
default: the equal average of raw logits.
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
from flow.importer import has_flow
from flow.progress import progress_bar
from flow.quantize import quantize
from flow.store import FlowStore
from flow.tvl1 import TVL1, preset_params
from flow.video import VideoReader, find_videos
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


class DecodedVideo(FlowStore):
    """One decoded video behind FlowStore's reading methods, so that ``VideoClips`` (the evaluation code) cuts,
    resizes and normalises its clips. Nothing is on disk: ``FlowStore.__init__``, which reads a manifest, is not
    called."""

    VIDEO_ID = "video"

    def __init__(self, rgb: np.ndarray | None, codes: np.ndarray | None, count: int, size: tuple[int, int],
                 preprocessing: dict[str, Any]) -> None:  # noqa: super().__init__ would look for a store folder
        self.root = Path("<decoded video>")
        self.manifest = {"preprocessing": preprocessing}
        self._rgb, self._codes, self._count, self._size = rgb, codes, count, size

    def video_ids(self) -> list[str]:
        return [self.VIDEO_ID]

    def num_frames(self, video_id: str) -> int:
        return self._count

    def frame_size(self, video_id: str) -> tuple[int, int]:
        return self._size

    def frames(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        return self._rgb[start:stop]

    def flow_codes(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        return self._codes[start:stop]


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
        self._groups = list(groups.values())

    def __call__(self, video: str | os.PathLike) -> Prediction:
        logits, clips = [], 0
        for engines in self._groups:
            needs_flow = [engine.checkpoint.spec.needs_flow for engine in engines]
            decoded = decode_video(video, engines[0].checkpoint.preprocessing, rgb=not all(needs_flow),
                                   flow=any(needs_flow))
            for engine in engines:
                videos = engine.video_clips(decoded, [(DecodedVideo.VIDEO_ID, 0)])
                video_clips, _ = videos[0]
                logits.append(engine.video_scores(video_clips)[0].numpy())
                clips = max(clips, len(video_clips))
        fused = fused_scores(logits, [1.0] * len(logits)) if len(logits) > 1 else logits[0].astype(np.float64)
        probabilities = softmax(fused[None])[0]
        top = np.argsort(-fused, kind="stable")[: min(self.config.top_k, len(self.classes))]
        return Prediction(str(video), [self.classes[i] for i in top], [float(probabilities[i]) for i in top],
                          [float(fused[i]) for i in top], clips)


def decode_video(path: str | os.PathLike, preprocessing: dict[str, Any], rgb: bool, flow: bool) -> DecodedVideo:
    """Decode and resize as the store was made; RGB frames through its JPEG coding, flow only when asked."""
    quality = preprocessing.get("jpeg_quality")
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if quality else None
    solver = TVL1(preprocessing.get("tvl1") or preset_params("default")) if flow else None
    frames, codes, previous = [], [], None
    with VideoReader(path, preprocessing.get("short_side") or 0, preprocessing.get("fps")) as reader:
        for bgr in reader:
            if rgb:
                frames.append(cv2.cvtColor(_jpeg_round_trip(bgr, jpeg, path) if jpeg else bgr, cv2.COLOR_BGR2RGB))
            if solver is not None:
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                if previous is not None:
                    codes.append(quantize(solver(previous, gray), float(preprocessing["bound"]),
                                          preprocessing["quantization"]))
                previous = gray
        width, height = reader.size
    number = len(frames) if rgb else len(codes) + 1
    if number < 2:
        raise InputError(path, f"has {number} frame; prediction needs at least 2")
    return DecodedVideo(np.stack(frames) if rgb else None, np.stack(codes) if flow else None, number,
                        (height, width), preprocessing)


def _jpeg_round_trip(bgr: np.ndarray, params: list[int], path: str | os.PathLike) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", bgr, params)
    if not ok:
        raise InputError(path, "a frame could not be JPEG-encoded")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


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
