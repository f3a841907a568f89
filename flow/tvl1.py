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


# -- backends ------------------------------------------------------------------------------------------------------
BACKENDS = ("opencv", "torch")
DEVICES = ("auto", "cpu", "cuda")
BACKEND_CLASSES = {"opencv": "cv2.optflow.DualTVL1OpticalFlow", "torch": "flow.tvl1_torch.TorchTVL1"}


def resolve_device(backend: str, device: str) -> str:
    """The device kind a backend runs on, ``"cpu"`` or ``"cuda"``; ``"auto"`` takes CUDA when torch sees one.

    Imports torch only for the torch backend.
    """
    if backend == "opencv":
        if device == "cuda":
            raise InputError(None, "device cuda needs backend torch (OpenCV's DualTVL1OpticalFlow runs on CPU)")
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "device cuda: torch sees no CUDA device (use --device cpu or auto)")
    return device


class PairFlows:
    """Flow between consecutive frames of one video, fed frame by frame and solved ``batch_pairs`` pairs at a time.

    Args:
        backend: ``"opencv"`` (one pair at a time, a fresh OpenCV object per video) or ``"torch"`` (batched).
        params: TV-L1 parameters under OpenCV's names.
        device: ``"cpu"`` or ``"cuda"`` for the torch backend.
        batch_pairs: pairs per torch call (the opencv backend solves each pair as it comes).
    """

    def __init__(self, backend: str, params: dict[str, Any], device: str = "cpu", batch_pairs: int = 1) -> None:
        if backend == "torch":
            from flow.tvl1_torch import TorchTVL1

            self._solve = TorchTVL1(params, device)
            self._batch_pairs = batch_pairs
        else:
            solver = TVL1(params)
            self._solve = lambda previous, following: solver(previous[0], following[0])[None]
            self._batch_pairs = 1
        self._frames: list[np.ndarray] = []

    def push(self, gray: np.ndarray) -> np.ndarray:
        """Add the next frame; returns the flows (N, H, W, 2) that became ready (N may be 0)."""
        self._frames.append(gray)
        return self.flush() if len(self._frames) > self._batch_pairs else np.empty((0, *gray.shape, 2), np.float32)

    def flush(self) -> np.ndarray:
        """Solve the pairs still waiting; the last frame stays, as the first of the next pair."""
        if len(self._frames) < 2:
            return np.empty((0, *self._frames[0].shape, 2) if self._frames else (0, 0, 0, 2), np.float32)
        frames = np.stack(self._frames)
        self._frames = self._frames[-1:]
        return self._solve(frames[:-1], frames[1:])
