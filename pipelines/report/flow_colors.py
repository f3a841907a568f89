"""Optical flow as a colour picture: hue is the direction of motion, brightness its magnitude (the HSV wheel).

Image coordinates throughout: x to the right, y downwards, as the store's flow and the frames themselves. The
wheel legend uses the same mapping, so a pixel of the wheel shows the colour of flow pointing from the wheel's
centre to that pixel.
"""
from __future__ import annotations

import cv2
import numpy as np


def flow_magnitude_scale(flow: np.ndarray, percentile: float = 99.0) -> float:
    """The magnitude shown at full brightness: a high percentile, so one outlier does not darken everything."""
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    return max(float(np.percentile(magnitude, percentile)), 1e-6)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) of float flow (..., H, W, 2) in pixels; magnitudes above ``max_magnitude`` saturate."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape[-1] != 2:
        raise ValueError(f"flow must end in 2 channels (x, y), got shape {flow.shape}")
    scale = max_magnitude if max_magnitude is not None else flow_magnitude_scale(flow)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    angle = np.degrees(np.arctan2(flow[..., 1], flow[..., 0])) % 360.0
    hsv = np.empty(flow.shape[:-1] + (3,), np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.uint8) % 180  # OpenCV keeps hue in 0..179 for uint8
    hsv[..., 1] = 255
    hsv[..., 2] = np.round(255.0 * np.clip(magnitude / scale, 0.0, 1.0)).astype(np.uint8)
    flat = hsv.reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_HSV2RGB).reshape(hsv.shape)


def color_wheel(size: int = 64) -> np.ndarray:
    """The legend: uint8 RGB (size, size, 3), white outside the unit disc."""
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) / ((size - 1) / 2)
    x, y = np.meshgrid(coords, coords)
    wheel = flow_to_rgb(np.stack([x, y], axis=-1), max_magnitude=1.0)
    wheel[np.hypot(x, y) > 1.0] = 255
    return wheel
