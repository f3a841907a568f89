"""R-C3D's test: per buffer, proposals → RoI pooling → class scores and per-class offsets → per-class NMS.

The maps come from the backbone (end to end, from the flow store) or from a feature store computed with the same
backbone; both give the same maps. A video is detected in buffer by buffer, so only one buffer's map is held
however long the video is.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow.atomic import write_json_atomic
from flow.errors import InputError
from flow.store import FlowStore
from mars_sta.rc3d import decode_segments
from pipelines.core.config import config_to_dict
from pipelines.core.device import resolve_device
from pipelines.core.manifest import file_sha256, stage_manifest
from pipelines.data.annotations import fps_of
from pipelines.detection.rc3d import MODEL, RC3D, RC3DConfig, load_rc3d, rc3d_config_of, rc3d_extras
from pipelines.detection.rc3d_targets import proposals
from pipelines.detection.windows import (check_parent_classes, check_parent_classes_known, temporal_nms,
                                        with_parent_classes)
from pipelines.inference.features import FeatureStore, buffer_maps


@dataclass(frozen=True)
class RC3DDetectConfig:
    """Settings of ``detect`` for an R-C3D model (TOML table ``[detection.rc3d_detect]``)."""

    nms_threshold: float = 0.4  # per-class NMS (R-C3D's port: 0.4; 0.1 below the evaluation tIoU)
    score_threshold: float = 0.005  # class probabilities below it are not detections
    device: str = "auto"
    parent_classes: dict[str, str] = field(default_factory=dict)  # each detection of a key class also as its value

    def __post_init__(self) -> None:
        if not 0 <= self.nms_threshold <= 1 or not 0 <= self.score_threshold <= 1:
            raise InputError(None, "nms_threshold and score_threshold must be in [0, 1]")
        check_parent_classes(self.parent_classes)


@torch.no_grad()
def buffer_detections(model: RC3D, feature_map: torch.Tensor, trained: RC3DConfig, config: RC3DDetectConfig
                      ) -> list[tuple[float, float, int, float]]:
    """``(start, end, class index, score)`` in feature steps of one buffer's map (C, L, h, w)."""
    length = feature_map.shape[1]
    scores, offsets = model.heads.proposal(feature_map[None])
    rois, _ = proposals(scores[0], offsets[0], model.heads.anchors(length), length, trained.test_pre_nms,
                        trained.test_post_nms, trained.test_proposal_nms, trained.min_length)
    if not len(rois):
        return []
    roi_tensor = torch.as_tensor(rois, dtype=torch.float32, device=feature_map.device)
    logits, class_offsets = model.heads.classify(feature_map, roi_tensor)
    probability = logits.float().softmax(dim=1).cpu()
    stds = torch.as_tensor(trained.offset_stds, dtype=torch.float32)
    found = []
    for label in range(1, probability.shape[1]):
        segments = decode_segments(class_offsets[:, label].float().cpu() * stds, roi_tensor.cpu()).clamp(0, length)
        score = probability[:, label].numpy()
        keep = np.flatnonzero(score >= config.score_threshold)
        segments = segments.numpy().astype(np.float64)[keep]
        for index in temporal_nms(segments, score[keep], config.nms_threshold):
            found.append((segments[index, 0], segments[index, 1], label - 1, float(score[keep][index])))
    return found


def detect_rc3d(model_dir: Path, videos: list[str], out: Path, config: RC3DDetectConfig = RC3DDetectConfig(),
                store_path: Path | None = None, features: Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Detect actions with ``model_dir/rc3d.pth``, end to end from the flow store or on cached features.

    Args:
        model_dir: folder written by ``train-detector --detector rc3d``.
        videos: ids to detect in.
        out: results JSON to write (ActivityNet's format).
        config: thresholds and device.
        store_path: the flow store (end to end); not read when ``features`` is given.
        features: a feature store computed with this model's backbone: only the heads run.
        log: where the summary line goes.
    """
    device = resolve_device(config.device)
    model, checkpoint = load_rc3d(model_dir / MODEL)
    model.to(device)
    trained = rc3d_config_of(checkpoint)
    source = _map_source(model, model_dir / MODEL, rc3d_extras(checkpoint).features_checkpoint_sha256, store_path,
                         features, device)
    preprocessing = source[0].preprocessing if isinstance(source[0], FlowStore) else \
        source[0].manifest.get("preprocessing")
    checkpoint.check_input(checkpoint.reading(preprocessing), store_path if features is None else features)
    missing = [v for v in videos if v not in source[0]]
    if missing:
        raise InputError(features or store_path, f"{len(missing)} video(s) to detect in are not in it, e.g. "
                                                 f"{missing[0]!r}")
    if isinstance(source[0], FlowStore):  # each file opens and is whole before the first is detected in
        for video in videos:
            source[0].num_frames(video)
    check_parent_classes_known(config.parent_classes, checkpoint.classes, checkpoint.path)
    started, results = time.perf_counter(), {}
    for video in videos:
        results[video] = with_parent_classes(_video_detections(model, *source[1](video), trained, config,
                                                               checkpoint.classes, device), config.parent_classes)
    manifest = stage_manifest("detect", {"detector": "rc3d", **config_to_dict(config)},
                              {"model": model_dir / MODEL, "store": store_path, "features": features})
    write_json_atomic(out, {"version": "VERSION 1.3", "results": results,
                            "external_data": {"used": False, "details": "mars-sta R-C3D", "manifest": manifest}})
    count = sum(map(len, results.values()))
    log(f"{count} detections in {len(videos)} videos in {time.perf_counter() - started:.1f} s -> {out}")
    return {"detections": count, "videos": len(videos), "seconds": time.perf_counter() - started}


def _map_source(model: RC3D, path: Path, features_sha256: str, store_path: Path | None, features: Path | None,
                device: torch.device):
    """(what holds the videos, video -> (its buffers' maps one by one, grid frames per feature step, fps, grid
    length))."""
    if features is not None:
        cache = FeatureStore(features)
        recorded = cache.manifest
        if recorded["checkpoint_sha256"] not in (features_sha256, file_sha256(path)):
            raise InputError(features, "was computed with another backbone than this model's; run mars-sta "
                                       f"features --checkpoint {path}")
        if (recorded["layer"], recorded["stride"], recorded["buffer"]) != (
                model.reads.layer, model.reads.stride, model.reads.buffer):
            raise InputError(features, "was computed with another layer, stride or buffer than this model reads")

        def cached(video: str):
            attrs, chunks = cache.read_chunks(video)
            return chunks, float(attrs["feature_stride"]), float(attrs["fps"]), int(attrs["grid_length"])
        return cache, cached
    if store_path is None:
        raise InputError(None, "give --store (end to end) or --features (heads on cached features)")
    store = FlowStore(store_path)

    def computed(video: str):
        chunks = buffer_maps(model.backbone, store, video, model.reads, device)
        first = next(chunks)  # the first buffer is whole, so its steps measure the backbone's frames per step
        first_steps = min(model.reads.buffer, -(-(store.num_frames(video) - 1) // model.reads.stride))
        return (itertools.chain([first], chunks), model.reads.stride * first_steps / first.shape[1],
                fps_of(store, video), store.num_frames(video) - 1)
    return store, computed


def _video_detections(model: RC3D, chunks: Iterator[torch.Tensor], frames_per_step: float, fps: float, grid: int,
                      trained: RC3DConfig, config: RC3DDetectConfig, classes: list[str],
                      device: torch.device) -> list[dict[str, Any]]:
    """Every buffer's detections in seconds, best first; each buffer's map is let go before the next is read."""
    found, first = [], 0
    for chunk in chunks:
        for start, end, label, score in buffer_detections(model, chunk.to(device), trained, config):
            begin, finish = (min((first + x) * frames_per_step, grid) / fps for x in (start, end))
            if finish > begin:
                found.append({"label": classes[label], "score": round(score, 6),
                              "segment": [round(begin, 3), round(finish, 3)]})
        first += chunk.shape[1]
    return sorted(found, key=lambda d: -d["score"])
