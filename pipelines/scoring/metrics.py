"""Video-level accuracy measures, in percent where they are reported, computed by scikit-learn.

Ties between equal scores always go to the lower class index (as ``argmax`` does), for top-1 and top-k alike,
so a number never depends on the order a sort happens to leave equal scores in. Every measure is given the full
list of classes (``labels=``), so a class without videos still has its row and column.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as sk


def predictions(scores: np.ndarray) -> np.ndarray:
    """Predicted class per video (N,) from scores (N, C)."""
    return np.argmax(scores, axis=1)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of videos whose label is among their ``k`` highest scores (100 when ``k`` >= classes)."""
    classes = scores.shape[1]
    if k >= classes:  # every label is among the top k (scikit-learn warns that the score is then meaningless)
        return 100.0
    if k == 1 or classes == 2:  # scikit-learn reads two columns as a binary problem with probabilities
        return 100.0 * float(sk.accuracy_score(labels, predictions(scores)))
    # scikit-learn ranks equal scores higher index first; with the class order reversed that is the lower index
    reversed_labels = classes - 1 - np.asarray(labels)
    return 100.0 * float(sk.top_k_accuracy_score(reversed_labels, scores[:, ::-1], k=k, labels=np.arange(classes)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    return sk.confusion_matrix(labels, predicted, labels=np.arange(num_classes)).astype(np.int64)


def per_class_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Percent correct per true class (C,), the recall of each class; NaN for a class with no videos, so it is
    left out of means."""
    recall = sk.recall_score(labels, predicted, labels=np.arange(num_classes), average=None, zero_division=np.nan)
    return 100.0 * recall


def mean_class_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean of the per-class accuracies over the classes that have videos (scikit-learn's balanced accuracy; can
    exceed top-1 on unbalanced sets)."""
    return float(np.nanmean(per_class_accuracy(labels, predicted, num_classes)))


def summarize(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """The numbers of one report row: top-1, top-5 and mean class accuracy in percent, and the video count."""
    return {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, 5),
        "mean_class": mean_class_accuracy(labels, predictions(scores), scores.shape[1]),
        "videos": int(labels.shape[0]),
    }
