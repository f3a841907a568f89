"""R-C3D's training targets and proposals: anchor and RoI labels by tIoU, sampled minibatches, offsets, NMS.

Segments are ``[start, end)`` in feature steps of one buffer. Settings and their sources: docs/detection.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mars_sta.rc3d import decode_segments, encode_segments
from pipelines.detection.windows import temporal_nms


def tiou_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU of every row of ``a`` (n, 2) with every row of ``b`` (m, 2): (n, m)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 2), np.asarray(b, np.float64).reshape(-1, 2)
    inter = (np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


@dataclass(frozen=True)
class Sample:
    """A sampled minibatch: indices, their labels (0 background, 1.. action or class + 1) and regression targets
    (rows for the positives, in the same order as ``indices[labels > 0]``)."""

    indices: np.ndarray
    labels: np.ndarray
    targets: np.ndarray


def _sample(positive: np.ndarray, negative: np.ndarray, batch: int, fraction: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``fraction · batch`` positives drawn at random, then negatives to fill the batch."""
    positive = rng.permutation(positive)[:int(round(fraction * batch))]
    negative = rng.permutation(negative)[:batch - len(positive)]
    return np.sort(positive), np.sort(negative)


def anchor_targets(anchors: np.ndarray, truth: np.ndarray, length: int, positive: float, negative: float,
                   batch: int, fraction: float, rng: np.random.Generator) -> Sample:
    """R-C3D's proposal labels: anchors inside the buffer ``[0, length]`` are action at tIoU >= ``positive`` with
    a ground-truth segment, or when they are a segment's best anchor; background below ``negative``; then
    ``batch`` of them sampled with at most ``fraction`` actions. Targets: offsets onto the best segment."""
    inside = np.flatnonzero((anchors[:, 0] >= 0) & (anchors[:, 1] <= length))
    labels = np.full(len(anchors), -1, np.int64)
    if len(truth) == 0:
        labels[inside] = 0
        best = np.zeros(len(anchors), np.int64)
    else:
        table = np.zeros((len(anchors), len(truth)))
        table[inside] = tiou_table(anchors[inside], truth)
        overlap, best = table.max(axis=1), table.argmax(axis=1)
        labels[inside[overlap[inside] < negative]] = 0
        column_best = table[inside].max(axis=0)
        hits = inside[((table[inside] == column_best[None]) & (column_best[None] > 0)).any(axis=1)]
        labels[hits] = 1
        labels[inside[overlap[inside] >= positive]] = 1
    chosen_pos, chosen_neg = _sample(np.flatnonzero(labels == 1), np.flatnonzero(labels == 0), batch, fraction, rng)
    indices = np.concatenate([chosen_pos, chosen_neg])
    targets = encode_segments(torch.as_tensor(truth[best[chosen_pos]], dtype=torch.float32).reshape(-1, 2),
                              torch.as_tensor(anchors[chosen_pos], dtype=torch.float32)).numpy()
    return Sample(indices, np.concatenate([np.ones(len(chosen_pos), np.int64), np.zeros(len(chosen_neg), np.int64)]),
                  targets)


def roi_targets(rois: np.ndarray, truth: np.ndarray, classes: np.ndarray, positive: float,
                negative: tuple[float, float], batch: int, fraction: float, stds: tuple[float, float],
                rng: np.random.Generator) -> Sample:
    """R-C3D's classification labels: a RoI is of its best segment's class at tIoU >= ``positive``, background
    for tIoU in ``[negative[0], negative[1])``; ``batch`` sampled with at most ``fraction`` actions. Targets:
    offsets onto the segment divided by ``stds``."""
    if len(truth) == 0:
        overlap, best = np.zeros(len(rois)), np.zeros(len(rois), np.int64)
    else:
        table = tiou_table(rois, truth)
        overlap, best = table.max(axis=1), table.argmax(axis=1)
    chosen_pos, chosen_neg = _sample(np.flatnonzero(overlap >= positive),
                                     np.flatnonzero((overlap >= negative[0]) & (overlap < negative[1])), batch,
                                     fraction, rng)
    targets = encode_segments(torch.as_tensor(truth[best[chosen_pos]], dtype=torch.float32).reshape(-1, 2),
                              torch.as_tensor(rois[chosen_pos], dtype=torch.float32)).numpy() / np.asarray(stds)
    labels = np.concatenate([np.asarray(classes, np.int64)[best[chosen_pos]] + 1, np.zeros(len(chosen_neg), np.int64)])
    return Sample(np.concatenate([chosen_pos, chosen_neg]), labels, targets.astype(np.float32))


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, sigma: float, count: int) -> torch.Tensor:
    """Faster R-CNN's smooth L1 with ``sigma``, summed and divided by ``count``: σ²x²/2 below |x| = 1/σ², else
    |x| − 1/(2σ²). PyTorch's ``beta = 1/σ²`` is already this form, so nothing more multiplies it."""
    if not len(pred):
        return pred.sum() * 0
    return F.smooth_l1_loss(pred, target, beta=1.0 / sigma ** 2, reduction="sum") / max(count, 1)


def sample_losses(scores: torch.Tensor, offsets: torch.Tensor, sample: Sample, sigma: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the sampled rows and smooth L1 of the positives' offsets (over the sample's size)."""
    if not len(sample.indices):
        return scores.sum() * 0, offsets.sum() * 0
    index = torch.as_tensor(sample.indices, device=scores.device)
    labels = torch.as_tensor(sample.labels, device=scores.device)
    classification = F.cross_entropy(scores[index], labels)
    positive = index[labels > 0]
    chosen = offsets[positive] if offsets.dim() == 2 else offsets[positive, labels[labels > 0]]
    target = torch.as_tensor(sample.targets, device=scores.device).reshape(-1, 2)
    return classification, smooth_l1(chosen, target, sigma, len(sample.indices))


@torch.no_grad()
def proposals(scores: torch.Tensor, offsets: torch.Tensor, anchors: torch.Tensor, length: int, pre_nms: int,
              post_nms: int, nms: float, min_length: float) -> tuple[np.ndarray, np.ndarray]:
    """R-C3D's proposal layer for one buffer: anchors moved by their offsets, clipped to ``[0, length]``, those
    shorter than ``min_length`` dropped, the ``pre_nms`` best by action probability, NMS, the ``post_nms`` best."""
    action = scores.float().softmax(dim=-1)[:, 1].cpu().numpy()
    segments = decode_segments(offsets.float().cpu(), anchors).clamp(0, length).numpy().astype(np.float64)
    keep = np.flatnonzero(segments[:, 1] - segments[:, 0] >= min_length)
    keep = keep[np.argsort(-action[keep], kind="stable")][:pre_nms]
    kept = keep[temporal_nms(segments[keep], action[keep], nms, limit=post_nms)]
    return segments[kept], action[kept]
