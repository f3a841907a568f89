"""Video-level accuracy measures, in percent where they are reported.

Ties between equal scores always go to the lower class index (as ``argmax`` does), for top-1 and top-k alike,
so a number never depends on the order a sort happens to leave equal scores in.
"""
from __future__ import annotations

import numpy as np


def predictions(scores: np.ndarray) -> np.ndarray:
    """Predicted class per video (N,) from scores (N, C)."""
    return np.argmax(scores, axis=1)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of videos whose label is among their ``k`` highest scores (100 when ``k`` >= classes).

    The label's rank counts the classes scored above it, and equal scores of lower-index classes, so k = 1
    agrees with ``argmax``; counting is linear in the classes where a sort is not.
    """
    true = scores[np.arange(labels.shape[0]), labels][:, None]
    lower_index = np.arange(scores.shape[1])[None, :] < labels[:, None]
    rank = (scores > true).sum(axis=1) + ((scores == true) & lower_index).sum(axis=1)
    return 100.0 * float(np.mean(rank < k))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Percent correct per true class (C,); NaN for a class with no videos, so it is left out of means."""
    totals = confusion.sum(axis=1)
    correct = np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * correct / np.maximum(totals, 1), np.nan)


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean of the per-class accuracies over the classes that have videos (can exceed top-1 on unbalanced sets)."""
    return float(np.nanmean(per_class_accuracy(confusion)))


def summarize(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """The numbers of one report row: top-1, top-5 and mean class accuracy in percent, and the video count."""
    confusion = confusion_matrix(labels, predictions(scores), scores.shape[1])
    return {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, 5),
        "mean_class": mean_class_accuracy(confusion),
        "videos": int(labels.shape[0]),
    }
