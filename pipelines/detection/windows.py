"""S-CNN's segments: multi-scale sliding windows, their labels from the ground truth, clip sampling, the window-length
prior and NMS.

Windows lie on the flow-frame grid (a video of N frames has N - 1 grid positions; RGB frame k pairs with flow k),
so the RGB and Flow streams see the same frames, as for recognition. A window is ``[start, stop)`` in grid frames.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flow.errors import InputError
from pipelines.scoring.detection_map import segment_tiou

SCNN_LENGTHS = (16, 32, 64, 128, 256, 512)  # S-CNN's window lengths, frames
SCNN_OVERLAP = 0.75


def sliding_windows(length: int, lengths: Sequence[int] = SCNN_LENGTHS, overlap: float = SCNN_OVERLAP) -> np.ndarray:
    """Every window of each length that fits, sliding by ``(1 - overlap)`` of its length: int64 (n, 2).

    A video shorter than the smallest length gets one window over all of it, so every video is scored.
    """
    windows = []
    for size in sorted(lengths):
        if size > length:
            break
        stride = max(1, int(round(size * (1 - overlap))))
        starts = np.arange(0, length - size + 1, stride)
        if starts[-1] != length - size:  # the end of the video gets a window too
            starts = np.append(starts, length - size)
        windows.append(np.stack([starts, starts + size], axis=1))
    if not windows:
        return np.array([[0, length]], np.int64)
    return np.concatenate(windows).astype(np.int64)


def clip_indices(start: int, stop: int, frames: int) -> np.ndarray:
    """``frames`` grid indices spread evenly over ``[start, stop)`` (S-CNN samples every window to 16 frames)."""
    size = stop - start
    return start + np.minimum(((np.arange(frames) + 0.5) * size / frames).astype(np.int64), size - 1)


def best_overlaps(windows: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each window, its highest tIoU with any ground-truth segment (n, 2) and that segment's index (-1: none)."""
    if len(truth) == 0:
        return np.zeros(len(windows)), np.full(len(windows), -1)
    table = np.stack([segment_tiou(segment, windows.astype(np.float64)) for segment in truth], axis=1)
    return table.max(axis=1), table.argmax(axis=1)


def label_windows(windows: np.ndarray, truth: np.ndarray, classes: np.ndarray, positive: float,
                  negative: float) -> tuple[np.ndarray, np.ndarray]:
    """Class label per window (0 background, k + 1 for class k, -1 ignored) and its best tIoU.

    A window is of its best-overlapping segment's class at tIoU >= ``positive``, background below ``negative``,
    and left out of training in between.
    """
    overlap, which = best_overlaps(windows, truth)
    labels = np.full(len(windows), -1, np.int64)
    labels[overlap < negative] = 0
    hit = overlap >= positive
    labels[hit] = np.asarray(classes, np.int64)[which[hit]] + 1
    return labels, overlap


def length_prior(durations: Sequence[Sequence[float]], lengths: Sequence[int]) -> np.ndarray:
    """S-CNN's window-length prior (``cal_weight.py``), (classes, lengths): per class, the share of the suits of its
    training instances that fall on each window length, where an instance of ``d`` frames suits length ``L`` when
    ``L / 2 <= d <= 2 L`` (one instance may suit several). A class no instance of which suits any length gets a flat
    prior instead of S-CNN's 0 / 0, so that the prior never silences a class."""
    limits = np.asarray(lengths, np.float64)
    counts = np.zeros((len(durations), len(limits)))
    for row, found in enumerate(durations):
        frames = np.asarray(found, np.float64).reshape(-1, 1)
        counts[row] = ((frames >= limits / 2) & (frames <= limits * 2)).sum(axis=0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1), 1 / len(limits))


def prior_columns(windows: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """Each window's column of the prior: the nearest of ``lengths`` on a log scale (the one window of a video
    shorter than every length takes the shortest)."""
    sizes = np.log2(np.maximum(windows[:, 1] - windows[:, 0], 1).astype(np.float64))
    return np.abs(sizes[:, None] - np.log2(np.asarray(lengths, np.float64))[None, :]).argmin(axis=1)


def temporal_nms(segments: np.ndarray, scores: np.ndarray, threshold: float, limit: int | None = None
                 ) -> np.ndarray:
    """Indices kept by greedy NMS: in decreasing score, drop any segment whose tIoU with a kept one exceeds
    ``threshold``; stop after ``limit`` kept. Written here because torchvision's ``nms`` is for boxes and not a
    dependency; each kept segment suppresses all later ones in one vectorised pass, so the Python loop runs once
    per kept segment, not once per candidate (R-C3D ranks up to 12,000 proposals per buffer)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = np.asarray(segments, np.float64).reshape(-1, 2)[order]
    alive = np.ones(len(order), bool)
    kept: list[int] = []
    position = 0
    while position < len(order) and (limit is None or len(kept) < limit):
        kept.append(int(order[position]))
        with np.errstate(invalid="ignore", divide="ignore"):  # a zero-length pair's tIoU is nan: suppressed
            alive[position + 1:] &= segment_tiou(ranked[position], ranked[position + 1:]) <= threshold
        following = np.flatnonzero(alive[position + 1:])
        position = position + 1 + int(following[0]) if len(following) else len(order)
    return np.asarray(kept, np.int64)


def check_parent_classes(parents: Mapping[str, str]) -> None:
    """``parent_classes`` maps a class to another (``{CliffDiving = "Diving"}``), never to itself."""
    if any(not isinstance(value, str) or value == key for key, value in parents.items()):
        raise InputError(None, f"parent_classes must map a class name to another class name, got {dict(parents)}")


def check_parent_classes_known(parents: Mapping[str, str], classes: Sequence[str], model: Path) -> None:
    """Every class ``parent_classes`` names must be one the detector knows (a typo would silently do nothing)."""
    unknown = [name for pair in parents.items() for name in pair if name not in classes]
    if unknown:
        raise InputError(model, f"parent_classes names {unknown[0]!r}, which is not one of its classes "
                                f"({', '.join(classes)})")


def with_parent_classes(found: list[dict[str, Any]], parents: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each detection of a class in ``parents`` also as one of its parent, best score first: THUMOS'14 annotates
    every CliffDiving instance as a Diving instance too, so its practice scores each CliffDiving detection for
    Diving as well."""
    extra = [{**found_one, "label": parents[found_one["label"]]} for found_one in found
             if found_one["label"] in parents]
    return sorted(found + extra, key=lambda d: -d["score"]) if extra else found
