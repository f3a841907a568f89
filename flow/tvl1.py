"""TV-L1 optical flow between two gray frames with OpenCV's CPU ``DualTVL1OpticalFlow``.

Parameters are kept under the keyword names of ``cv2.optflow.DualTVL1OpticalFlow.create`` (OpenCV's own spelling,
``lambda_`` and ``innnerIterations`` included), so a store's manifest can be passed straight back to OpenCV.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from flow.errors import InputError

# The values DualTVL1OpticalFlow.create() uses when given no arguments (OpenCV 4.x and 5.0).
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
        # The module-level factory is the one name a test can replace to prove that no solver is made (the class's
        # own ``create`` cannot be replaced); it builds the same object, but OpenCV's stubs do not list it.
        create = cv2.optflow.DualTVL1OpticalFlow_create  # type: ignore[attr-defined]
        self._solver: cv2.optflow.DualTVL1OpticalFlow = create(**params)

    def __call__(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        """Flow (H, W, 2) float32 in pixels, channel 0 = x, 1 = y, with previous(x, y) ≈ following(x + u, y + v)."""
        # OpenCV's stubs type the flow argument as a required array; None lets calc allocate it.
        return self._solver.calc(previous, following, None)  # type: ignore[call-overload]


# -- backends ------------------------------------------------------------------------------------------------------
BACKENDS = ("opencv", "torch")
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N", one GPU by its index
BACKEND_CLASSES = {"opencv": "cv2.optflow.DualTVL1OpticalFlow", "torch": "flow.tvl1_torch.TorchTVL1"}


def check_device_name(name: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, as every command's ``--device`` takes; checked without torch."""
    kind, colon, index = name.partition(":")
    if name in DEVICES or (kind == "cuda" and colon and index.isdigit()):
        return name
    raise InputError(None, f"--device {name!r}: expected auto, cpu, cuda or cuda:N")


def device_kind(device: str) -> str:
    """``"cpu"`` or ``"cuda"``: what a store records (flow differs slightly between them, not between GPUs)."""
    return device.partition(":")[0]


def resolve_device(backend: str, device: str) -> str:
    """The device a backend runs on: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``"auto"`` takes CUDA when torch sees
    one. A GPU that is not there is refused here, before any work. Imports torch only to look for a GPU.
    """
    check_device_name(device)
    if backend == "opencv" and device_kind(device) == "cuda":
        raise InputError(None, f"--device {device}: OpenCV's TV-L1 runs on the CPU only; add --backend torch to run "
                               "on a GPU")
    if backend == "opencv" or device == "cpu":
        return "cpu"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda" if count else "cpu"
    if count == 0:
        raise InputError(None, f"--device {device}: no CUDA device is available (use --device cpu or auto)")
    if int(device.partition(":")[2] or 0) >= count:
        raise InputError(None, f"--device {device}: no such CUDA device (torch sees {count}: cuda:0 to "
                               f"cuda:{count - 1})")
    return device


class PairFlows:
    """Flow between consecutive frames of one video, fed frame by frame and solved ``batch_pairs`` pairs at a time.

    Args:
        backend: ``"opencv"`` (one pair at a time, a fresh OpenCV object per video) or ``"torch"`` (batched).
        params: TV-L1 parameters under OpenCV's names.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for the torch backend.
        batch_pairs: pairs per torch call (the opencv backend solves each pair as it comes).
    """

    def __init__(self, backend: str, params: dict[str, Any], device: str = "cpu", batch_pairs: int = 1) -> None:
        self._solve: Callable[[np.ndarray, np.ndarray], np.ndarray]
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
