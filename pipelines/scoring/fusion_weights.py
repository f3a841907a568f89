"""Fusion weights learned by maximum likelihood on held-out (never test) videos.

Accuracy is a step function of the weights: on a validation set of a few hundred videos many weight vectors tie
and the winner is noise. The likelihood of the true labels is smooth and concave in the weights, so it has one
well-defined optimum and uses how confident each stream is, not only whether it was right:

* raw logits: the fused logits ``sum_i w_i z_i`` feed a softmax, and ``w >= 0`` is fitted by multinomial
  logistic regression with one coefficient per stream (L-BFGS-B, the solver scikit-learn's LogisticRegression
  uses). A small ridge term keeps the weights finite when every validation video is already right. The weights
  also absorb the streams' different logit scales.
* softmax probabilities: ``sum_i w_i p_i`` is a mixture of the streams' class distributions, and its weights on
  the simplex are fitted by expectation-maximisation, which raises the likelihood at every step.

Both return weights normalised to sum to 1; a positive scale changes neither top-1 nor top-5.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RIDGE = 1e-3  # per-video NLL is O(1); this only matters once the validation videos are separated
EM_ITERATIONS = 2000
EM_TOLERANCE = 1e-10


def fused_scores(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted average ``sum_i w_i a_i / sum_i w_i`` of per-stream scores (logits or probabilities)."""
    weights = np.asarray(weights, dtype=np.float64)
    total = np.zeros(arrays[0].shape, dtype=np.float64)
    for array, weight in zip(arrays, weights):
        total += weight * np.asarray(array, dtype=np.float64)
    return total / weights.sum()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed after subtracting each row's maximum so large logits do not overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _normalised(weights: np.ndarray) -> np.ndarray:
    total = float(weights.sum())
    if not np.isfinite(total) or total <= 1e-12:
        # No stream helps on the held-out videos: equal weights are the honest fallback.
        return np.full(weights.shape, 1.0 / weights.size)
    return weights / total


def learn_logit_weights(logits: Sequence[np.ndarray], labels: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Weights ``w >= 0`` (summing to 1) of ``sum_i w_i * logits[i]`` that maximise the labels' likelihood."""
    from scipy.optimize import minimize

    stacked = np.stack([np.asarray(z, dtype=np.float64) for z in logits])  # (S, N, C)
    rows = np.arange(labels.shape[0])
    true_logits = stacked[:, rows, labels]  # (S, N)

    def loss_and_gradient(weights: np.ndarray) -> tuple[float, np.ndarray]:
        fused = np.tensordot(weights, stacked, axes=1)  # (N, C)
        shifted = fused - fused.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        probs = np.exp(shifted - log_norm[:, None])
        loss = -float(np.mean(shifted[rows, labels] - log_norm)) + 0.5 * ridge * float(weights @ weights)
        expected = np.einsum("snc,nc->sn", stacked, probs)
        gradient = (expected - true_logits).mean(axis=1) + ridge * weights
        return loss, gradient

    count = stacked.shape[0]
    result = minimize(loss_and_gradient, np.full(count, 1.0 / count), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None)] * count)
    return _normalised(np.clip(result.x, 0.0, None))


def learn_softmax_weights(logits: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Mixture weights (summing to 1) of ``sum_i w_i * softmax(logits[i])`` that maximise the labels' likelihood."""
    rows = np.arange(labels.shape[0])
    true_probs = np.stack([softmax(np.asarray(z, dtype=np.float64))[rows, labels] for z in logits])  # (S, N)
    true_probs = np.maximum(true_probs, 1e-300)
    weights = np.full(true_probs.shape[0], 1.0 / true_probs.shape[0])
    for _ in range(EM_ITERATIONS):
        mixture = weights @ true_probs
        updated = weights * (true_probs / mixture).mean(axis=1)
        converged = np.abs(updated - weights).max() < EM_TOLERANCE
        weights = updated
        if converged:
            break
    return _normalised(weights)
