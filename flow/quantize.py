"""Flow in pixels to uint8 codes and back, over the range ±bound.

``round`` is TSN/denseflow's coding, ``round(255·(v + bound) / (2·bound))`` after clipping; ``truncate`` is MARS's
uint8 cast of the same value, which biases the codes by half a step (−0.078 px at bound 20). Dequantisation is
consistent with the coding used: a truncated code stands for the middle of its step, so it reads back unbiased.
"""
from __future__ import annotations

import numpy as np

QUANTIZATIONS = ("round", "truncate")


def step(bound: float) -> float:
    """The width of one code in pixels."""
    return 2.0 * bound / 255.0


def quantize(flow: np.ndarray, bound: float, method: str = "round") -> np.ndarray:
    """uint8 codes of ``flow`` (pixels) clipped to ±bound."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    if method == "round":
        return np.rint(scaled).astype(np.uint8)
    if method == "truncate":
        return scaled.astype(np.uint8)
    raise ValueError(f"unknown quantization {method!r} (known: {', '.join(QUANTIZATIONS)})")


def dequantize(codes: np.ndarray, bound: float, method: str = "round") -> np.ndarray:
    """Pixels (float32) that the codes stand for."""
    if method not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {method!r} (known: {', '.join(QUANTIZATIONS)})")
    offset = 0.5 if method == "truncate" else 0.0
    pixels = (codes.astype(np.float32) + np.float32(offset)) * np.float32(step(bound)) - np.float32(bound)
    return np.minimum(pixels, np.float32(bound)) if offset else pixels
