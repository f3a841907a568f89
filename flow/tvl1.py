"""TV-L1 optical flow between two gray frames with OpenCV's CPU ``DualTVL1OpticalFlow``.

Parameters are kept under the keyword names of ``cv2.optflow.DualTVL1OpticalFlow_create`` (OpenCV's own spelling,
``lambda_`` and ``innnerIterations`` included), so a store's manifest can be passed straight back to OpenCV.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from flow.errors import InputError

# The values DualTVL1OpticalFlow_create() uses when given no arguments (OpenCV 4.x and 5.0).
OPENCV_DEFAULTS: dict[str, Any] = {
    "tau": 0.25,
    "lambda_": 0.15,
    "theta": 0.3,
    "nscales": 5,
    "warps": 5,
    "epsilon": 0.01,
    "innnerIterations": 30,
    "outerIterations": 10,
    "scaleStep": 0.8,
    "gamma": 0.0,
    "medianFiltering": 5,
    "useInitialFlow": False,
}

# ``default`` is what published pipelines call TV-L1; ``mid`` and ``cheap`` trade accuracy for speed on small
# frames (``cheap`` keeps two pyramid levels: one level underestimates motion by about 40 %).
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(OPENCV_DEFAULTS),
    "mid": {**OPENCV_DEFAULTS, "nscales": 3, "warps": 2, "innnerIterations": 30, "outerIterations": 5},
    "cheap": {**OPENCV_DEFAULTS, "nscales": 2, "warps": 1, "innnerIterations": 20, "outerIterations": 3},
}


def preset_params(name: str) -> dict[str, Any]:
    """A copy of a preset's parameters under OpenCV's names."""
    if name not in PRESETS:
        raise InputError(None, f"unknown TV-L1 preset {name!r} (known: {', '.join(PRESETS)})")
    return dict(PRESETS[name])


class TVL1:
    """One TV-L1 solver per video.

    OpenCV's ``calc()`` overwrites the object's ``nscales`` when a pyramid level would be under 16 px, and a reused
    object keeps the reduced value for every later (larger) input. A solver therefore serves one video only (all its
    frames have one size), and each new video gets a fresh OpenCV object.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self._solver = cv2.optflow.DualTVL1OpticalFlow_create(**params)

    def __call__(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        """Flow (H, W, 2) float32 in pixels, channel 0 = x, 1 = y, with previous(x, y) ≈ following(x + u, y + v)."""
        return self._solver.calc(previous, following, None)
