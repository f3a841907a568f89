"""TV-L1 optical flow in PyTorch, batched over frame pairs: OpenCV's CPU ``DualTVL1OpticalFlow``, step for step.

The dual TV-L1 of Zach, Pock and Bischof with Wedel et al.'s median filtering, in the layout OpenCV's
``modules/optflow/src/tvl1flow.cpp`` uses, so that a store computed here can stand in for one computed with OpenCV:

- pyramid: ``cv::resize`` INTER_LINEAR by ``scaleStep`` (sizes rounded, coordinates ``(d + 0.5) / scaleStep - 0.5``,
  edges clamped); levels under 16 px are dropped; the flow is resized to the finer level and multiplied by
  ``1 / scaleStep`` (not by the exact size ratio);
- per level: centred differences of I1 (half one-sided at the borders), dual variables reset to zero;
- per warp: I1 and its gradient sampled at x + u by Keys bicubic (a = -0.75), taps outside the image reading 0 (the
  default BORDER_CONSTANT of ``cv::remap``), without the 1/32 px map quantisation of OpenCV 4's remap;
- per outer iteration: a ``medianFiltering`` x ``medianFiltering`` median of u1 and u2 (replicated border);
- per inner iteration: thresholding, primal step with the backward-difference divergence (zero outside), dual step
  with forward differences (zero on the last column / row);
- stop a warp once the squared flow change summed over the level is at most epsilon² · H · W.

OpenCV stops each pair on its own; here a pair that has converged leaves the batch until the next warp, so a batch
gives each pair the flow it gets alone. Parameters go by the keyword names of ``cv2.optflow.DualTVL1OpticalFlow.create``
(``lambda_``, ``innnerIterations``), so one dict serves both backends and the store's manifest.

This is the only module of ``flow`` that imports torch; extraction imports it only for ``--backend torch``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flow.errors import InputError
from flow.tvl1 import OPENCV_DEFAULTS

MIN_LEVEL_SIZE = 16  # OpenCV drops a pyramid level narrower or lower than this
FLT_TINY = float(np.finfo(np.float32).tiny)
CUBIC_A = -0.75  # the Keys coefficient of cv::remap's INTER_CUBIC
GROUP_PIXELS = 1 << 18  # frame pixels of the pairs solved together on CPU: 3 pairs at 320x240 or 340x256
CHUNK_ELEMENTS = 1 << 17  # pixels of the images filtered together by the median network, kept in cache


@dataclass(frozen=True)
class TVL1Params:
    """Validated TV-L1 parameters (OpenCV's meaning; intensities on the 0..255 scale)."""

    tau: float
    lambda_: float
    theta: float
    nscales: int
    warps: int
    epsilon: float
    innnerIterations: int
    outerIterations: int
    scaleStep: float
    gamma: float
    medianFiltering: int
    useInitialFlow: bool = False

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any] | None = None) -> TVL1Params:
        """OpenCV's defaults overridden by ``params``; every problem is reported in one ``InputError``."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(OPENCV_DEFAULTS))
        if unknown:
            raise InputError(None, f"TV-L1: unknown parameter(s) {', '.join(unknown)} "
                                   f"(known: {', '.join(OPENCV_DEFAULTS)})")
        merged = {**OPENCV_DEFAULTS, **given}
        problems = _problems(merged)
        if problems:
            raise InputError(None, "TV-L1: " + "; ".join(problems))
        return cls(**merged)

    @property
    def steps(self) -> tuple[float, float, float, float]:
        """lambda·theta, theta, tau/theta and gamma rounded to float32, as OpenCV passes them to its loops."""
        lambda_theta, theta, tau_over_theta, gamma = (
            float(np.float32(value)) for value in (self.lambda_ * self.theta, self.theta, self.tau / self.theta,
                                                   self.gamma))
        return lambda_theta, theta, tau_over_theta, gamma


def _problems(p: dict[str, Any]) -> list[str]:
    checks = [
        ("tau", p["tau"] > 0, "> 0"), ("lambda_", p["lambda_"] >= 0, "≥ 0"), ("theta", p["theta"] > 0, "> 0"),
        ("nscales", _is_int(p["nscales"]) and p["nscales"] >= 1, "an integer ≥ 1"),
        ("warps", _is_int(p["warps"]) and p["warps"] >= 1, "an integer ≥ 1"),
        ("epsilon", p["epsilon"] >= 0, "≥ 0"),
        ("innnerIterations", _is_int(p["innnerIterations"]) and p["innnerIterations"] >= 1, "an integer ≥ 1"),
        ("outerIterations", _is_int(p["outerIterations"]) and p["outerIterations"] >= 1, "an integer ≥ 1"),
        ("scaleStep", 0 < p["scaleStep"] < 1, "in (0, 1)"), ("gamma", p["gamma"] >= 0, "≥ 0"),
        # cv::medianBlur filters float images only with 3 or 5; 0 or 1 switch the filter off.
        ("medianFiltering", _is_int(p["medianFiltering"]) and p["medianFiltering"] in (0, 1, 3, 5), "0, 1, 3 or 5"),
        ("useInitialFlow", p["useInitialFlow"] is False or p["useInitialFlow"] == 0, "False (not supported)"),
    ]
    problems = []
    for name, ok, rule in checks:
        if not ok:
            problems.append(f"{name} must be {rule}, got {p[name]!r}")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class TorchTVL1:
    """OpenCV's ``DualTVL1OpticalFlow`` on a batch of gray frame pairs, on one torch device.

    Args:
        params: parameters under OpenCV's keyword names; missing ones take OpenCV's defaults.
        device: a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        compile: fuse the inner iteration with ``torch.compile`` (faster after a one-off compilation of tens of
            seconds; results differ from eager ones by float rounding only).
    """

    def __init__(self, params: Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
                 compile: bool = False) -> None:
        self.params = TVL1Params.from_mapping(params)
        self.device = torch.device(device)
        self.compile = compile

    def __call__(self, previous: Any, following: Any) -> np.ndarray:
        """Flow (B, H, W, 2) float32, channel 0 = x, with previous(x, y) ≈ following(x + u, y + v).

        ``previous`` and ``following`` are (B, H, W) or (H, W) arrays or tensors: uint8 as 0..255, floats as 0..1
        (OpenCV multiplies float input by 255). A 2-D input gives a (H, W, 2) result.
        """
        single = np.ndim(previous) == 2
        first, second = self._as_batch(previous), self._as_batch(following)
        if first.shape != second.shape:
            raise InputError(None, f"TV-L1: frame shapes differ: {tuple(first.shape)} and {tuple(second.shape)}")
        if min(first.shape[-2:]) < 3:
            raise InputError(None, f"TV-L1: frames must be at least 3x3, got {tuple(first.shape[-2:])}")
        with torch.no_grad():
            flow = solve(first, second, self.params, self.compile)
        result = flow.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return result[0] if single else result

    def _as_batch(self, frames: Any) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3:
            raise InputError(None, f"TV-L1: frames must be (B, H, W) or (H, W), got shape {tuple(tensor.shape)}")
        scale = 1.0 if tensor.dtype == torch.uint8 else 255.0
        return tensor.to(self.device, torch.float32) * scale


# -- the pyramid --------------------------------------------------------------------------------------------------
def solve(first: torch.Tensor, second: torch.Tensor, params: TVL1Params, compile: bool = False) -> torch.Tensor:
    """Flow (B, 2, H, W) between two batches of float frames (B, H, W) on the 0..255 scale.

    On CPU the pairs go through in groups of about ``GROUP_PIXELS`` pixels a frame: each inner iteration makes tens
    of passes over a level's state, which then come from cache rather than memory. A GPU takes the whole batch.
    """
    batch, (height, width) = first.shape[0], first.shape[-2:]
    if batch == 0:
        return first.new_zeros((0, 2, height, width))
    size = max(1, GROUP_PIXELS // (height * width)) if first.device.type == "cpu" else batch
    groups = zip(first.split(size), second.split(size))
    return torch.cat([_solve_group(*group, params, compile) for group in groups])


def _solve_group(first: torch.Tensor, second: torch.Tensor, params: TVL1Params, compile: bool) -> torch.Tensor:
    """The pyramid of one group of pairs, coarsest level first."""
    iterate = _compiled_iterate() if compile else _iterate
    pyramid = _pyramid(first, second, params.nscales, params.scaleStep)
    components = 3 if params.gamma != 0 else 2  # the illumination term adds a third "flow" component u3
    batch, (height, width) = first.shape[0], pyramid[-1][0].shape[-2:]
    flow = first.new_zeros(batch, components, height, width)
    for level in range(len(pyramid) - 1, -1, -1):
        flow = _solve_level(*pyramid[level], flow, params, iterate)
        if level:
            finer_height, finer_width = pyramid[level - 1][0].shape[-2:]
            flow = _resize_linear(flow, (finer_height, finer_width))
            flow[:, :2] *= float(np.float32(1 / params.scaleStep))  # u3 is not a displacement and keeps its scale
    return flow[:, :2]


def _pyramid(first: torch.Tensor, second: torch.Tensor, nscales: int,
             scale_step: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Levels finest first; cv::resize with a scale factor maps coordinates by the factor, not the size ratio."""
    levels = [(first, second)]
    for _ in range(1, nscales):
        height, width = levels[-1][0].shape[-2:]
        size = (round(height * scale_step), round(width * scale_step))  # cvRound: half to even, as round()
        if min(size) < MIN_LEVEL_SIZE:
            break
        first_level, second_level = (_resize_linear(image, size, 1 / scale_step) for image in levels[-1])
        levels.append((first_level, second_level))
    return levels


def _resize_linear(images: torch.Tensor, size: tuple[int, int], inverse_scale: float | None = None) -> torch.Tensor:
    """cv::resize INTER_LINEAR over the last two axes, as two interpolation-matrix products (rows, then columns)."""
    rows = _interpolation_matrix(images.shape[-2], size[0], inverse_scale, images.device)
    cols = _interpolation_matrix(images.shape[-1], size[1], inverse_scale, images.device)
    return rows @ (images @ cols.T)


def _interpolation_matrix(source: int, target: int, inverse_scale: float | None, device: torch.device) -> torch.Tensor:
    """(target, source) weights of cv::resize's linear filter along one axis, coordinates and weights in float32.

    Written out because torch's ``interpolate`` uses the size ratio and other edge rules, which cv::resize does not
    when given a scale factor.
    """
    step = source / target if inverse_scale is None else inverse_scale
    position = ((np.arange(target) + 0.5) * step - 0.5).astype(np.float32)
    left = np.floor(position).astype(np.int64)
    weight = (position - left).astype(np.float32)
    weight[left < 0], left[left < 0] = 0, 0
    at_end = left >= source - 1
    weight[at_end], left[at_end] = 0, source - 1
    matrix = np.zeros((target, source), np.float32)
    index = np.arange(target)
    matrix[index, left] = 1 - weight
    inside = ~at_end
    matrix[index[inside], left[inside] + 1] += weight[inside]
    return torch.from_numpy(matrix).to(device)


# -- one pyramid level ----------------------------------------------------------------------------------------------
def _solve_level(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor, params: TVL1Params,
                 iterate: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Run the warps of one level; ``flow`` is (B, C, H, W) with C = 2, or 3 with the illumination term."""
    batch, components, height, width = flow.shape
    # state = [u_1..u_C, p_x1..p_xC, p_y1..p_yC]: one tensor, so that leaving the batch is one index operation
    state = torch.cat([flow, flow.new_zeros(batch, 2 * components, height, width)], dim=1)
    gradient = _centred_gradient(second)
    samples = torch.stack([second, *gradient], dim=1)
    threshold = np.float32(params.epsilon * params.epsilon * height * width)
    for _ in range(params.warps):
        warped = _warp_data(first, samples, state[:, :2], params.gamma, components)
        _run_warp(state, warped, params, threshold, iterate)
    return state[:, :components].contiguous()


def _centred_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of (B, H, W); a replicated border gives OpenCV's half one-sided differences there."""
    padded = F.pad(image[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return dx, dy


def _warp_data(first: torch.Tensor, samples: torch.Tensor, flow: torch.Tensor, gamma: float,
               components: int) -> torch.Tensor:
    """Per warp constants [I1wx, I1wy, (gamma), -grad, rho_c] (B, C + 2, H, W) linearised at the current flow."""
    warped, warped_x, warped_y = _bicubic_sample(samples, flow).unbind(1)
    u1, u2 = flow[:, 0], flow[:, 1]
    grad = warped_x * warped_x + warped_y * warped_y
    rho_c = warped - warped_x * u1 - warped_y * u2 - first
    # rho / -grad is clamped to ±lambda·theta in each iteration: a tiny floor keeps flat regions (grad = 0) finite,
    # and the stored sign saves a negation per iteration (x / -g equals -(x / g) exactly). Where grad ≤ FLT_EPSILON
    # OpenCV's middle case steps by 0 instead; as |I1w'| ≤ 3.5e-4 there, that moves u by under 2e-5 px.
    directions = [warped_x, warped_y] + ([torch.full_like(grad, gamma)] if components == 3 else [])
    return torch.stack([*directions, grad.clamp_min_(FLT_TINY).neg_(), rho_c], dim=1)


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys cubic convolution weights of the taps at offsets -1, 0, 1, 2 from floor(x), for fraction t."""
    a = CUBIC_A
    near = [t, 1 - t]  # distances to the taps at 0 and 1
    far = [t + 1, 2 - t]  # distances to the taps at -1 and 2
    w_near = [((a + 2) * d - (a + 3)) * d * d + 1 for d in near]
    w_far = [((a * d - 5 * a) * d + 8 * a) * d - 4 * a for d in far]
    return [w_far[0], w_near[0], w_near[1], w_far[1]]


def _bicubic_sample(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (B, K, H, W) images at (x + u1, y + u2), taps outside the image reading 0 (cv::remap INTER_CUBIC).

    Written as 16 gathers rather than ``grid_sample``, which normalises coordinates and so loses float precision.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (1, 1, 1, 1)).reshape(batch, channels, -1)  # a zero ring: clamped far taps read 0
    ys, xs = torch.meshgrid(torch.arange(height, device=images.device, dtype=torch.float32),
                            torch.arange(width, device=images.device, dtype=torch.float32), indexing="ij")
    map_x, map_y = xs + flow[:, 0], ys + flow[:, 1]
    x0, y0 = torch.floor(map_x), torch.floor(map_y)
    weights_x, weights_y = _cubic_weights(map_x - x0), _cubic_weights(map_y - y0)
    x0, y0 = x0.long(), y0.long()
    result = images.new_zeros(batch, channels, height * width)
    for row, weight_y in enumerate(weights_y):
        offset = ((y0 + row - 1).clamp(-1, height) + 1) * (width + 2)
        line = images.new_zeros(batch, channels, height * width)
        for col, weight_x in enumerate(weights_x):
            index = (offset + (x0 + col - 1).clamp(-1, width) + 1).reshape(batch, 1, -1).expand(-1, channels, -1)
            line += padded.gather(2, index) * weight_x.reshape(batch, 1, -1)
        result += line * weight_y.reshape(batch, 1, -1)
    return result.reshape(batch, channels, height, width)


def _median(images: torch.Tensor, size: int) -> torch.Tensor:
    """cv::medianBlur of float (B, C, H, W) images: the median of each size x size window, border replicated.

    Min/max comparators on shifted views, not a sort of unfolded windows (25 copies of the images and a selection
    per pixel): each column of ``size`` values is sorted once and shared by the ``size`` windows that contain it.
    The images go through in groups of about ``CHUNK_ELEMENTS`` pixels, so that the hundred or so intermediate
    images of a group stay in cache. On other devices, the median of the unfolded windows in one call. Both
    select values, so they agree exactly.
    """
    height, width = images.shape[-2:]
    if images.device.type != "cpu":  # a GPU has no such cache to fit and pays per launch: one selection
        padded = F.pad(images, (size // 2,) * 4, mode="replicate")
        windows = padded.unfold(2, size, 1).unfold(3, size, 1)
        return windows.reshape(*images.shape, size * size).median(dim=-1).values
    planes = images.reshape(-1, 1, height, width)
    groups = planes.split(max(1, CHUNK_ELEMENTS // (height * width)))
    return torch.cat([_median_group(group, size) for group in groups]).reshape(images.shape)


def _median_group(images: torch.Tensor, size: int) -> torch.Tensor:
    radius, (height, width) = size // 2, images.shape[-2:]
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    columns = [padded[..., row:row + height, :] for row in range(size)]
    _compare_exchange(columns, _COLUMN_SORT[size])
    windows = [columns[rank][..., col:col + width] for rank in range(size) for col in range(size)]
    _compare_exchange(windows, _WINDOW_MEDIAN[size])
    return windows[size * size // 2]


def _compare_exchange(wires: list[torch.Tensor], network: tuple[tuple[int, int, str], ...]) -> None:
    """Apply comparators (low, high, kept) to the list: ``low`` gets the minimum, ``high`` the maximum of the two.

    ``kept`` ("min", "max" or "both") names the outputs that later comparators or the result read; only those are
    computed.
    """
    for low, high, kept in network:
        first, second = wires[low], wires[high]
        if kept != "max":
            wires[low] = torch.minimum(first, second)
        if kept != "min":
            wires[high] = torch.maximum(first, second)


# Sorting networks of 3 and 5 values (optimal: 3 and 9 comparators).
_COLUMN_SORT = {
    3: ((0, 1, "both"), (1, 2, "both"), (0, 1, "both")),
    5: ((0, 1, "both"), (3, 4, "both"), (2, 4, "both"), (2, 3, "both"), (1, 4, "both"), (0, 3, "both"),
        (0, 2, "both"), (1, 3, "both"), (1, 2, "both")),
}
# The median of a window whose columns are sorted, wire = rank in column · size + column; the result is on the
# centre wire. Built as: sort each row of ranks (rows and columns are then both sorted), keep the window entries
# with at most half the window on either side of them in that order (13 of 25, the anti-diagonal 3 of 9) and sort
# those with Batcher's odd-even merge network; comparators whose order the sorted columns already imply and outputs
# nothing reads were then dropped. Checked on every 0/1 window with sorted columns (the 0/1 principle).
_WINDOW_MEDIAN = {
    3: (
        (0, 1, "max"), (1, 2, "max"), (3, 4, "both"), (4, 5, "min"), (3, 4, "max"), (6, 7, "both"), (7, 8, "min"),
        (6, 7, "min"), (2, 4, "both"), (2, 6, "max"), (4, 6, "min"),
    ),
    5: (
        (0, 1, "both"), (3, 4, "both"), (2, 4, "both"), (2, 3, "max"), (1, 4, "both"), (0, 3, "max"), (1, 3, "max"),
        (5, 6, "both"), (8, 9, "both"), (7, 9, "both"), (7, 8, "both"), (6, 9, "both"), (5, 8, "both"), (5, 7, "max"),
        (6, 8, "both"), (6, 7, "max"), (10, 11, "both"), (13, 14, "both"), (12, 14, "both"), (12, 13, "both"),
        (11, 14, "min"), (10, 13, "both"), (10, 12, "max"), (11, 13, "both"), (11, 12, "both"), (15, 16, "both"),
        (18, 19, "both"), (17, 19, "both"), (17, 18, "both"), (16, 19, "min"), (15, 18, "both"), (15, 17, "both"),
        (16, 18, "min"), (16, 17, "both"), (20, 21, "both"), (23, 24, "both"), (22, 24, "both"), (22, 23, "both"),
        (21, 24, "min"), (20, 23, "both"), (20, 22, "both"), (21, 23, "min"), (21, 22, "min"), (9, 11, "both"),
        (17, 20, "both"), (3, 7, "both"), (4, 8, "both"), (11, 13, "min"), (4, 7, "both"), (11, 12, "both"),
        (16, 17, "both"), (3, 9, "both"), (4, 11, "both"), (7, 9, "both"), (8, 11, "both"), (4, 7, "both"),
        (8, 9, "both"), (11, 12, "both"), (20, 21, "both"), (3, 15, "max"), (4, 16, "max"), (7, 17, "max"),
        (8, 20, "min"), (9, 21, "min"), (9, 15, "max"), (11, 16, "min"), (12, 17, "min"), (8, 11, "max"),
        (12, 15, "min"), (11, 12, "max"),
    ),
}


# -- the iterations of one warp ---------------------------------------------------------------------------------------
def _run_warp(state: torch.Tensor, warped: torch.Tensor, params: TVL1Params, threshold: np.float32,
              iterate: Callable[..., torch.Tensor]) -> None:
    """Iterate every pair until its flow change is at most ``threshold``; converged pairs leave the working set.

    ``state`` is updated in place. The working set is ``state`` itself while every pair is still running, and a
    gathered copy (written back when it shrinks or the warp ends) once some have stopped.
    """
    active = torch.arange(state.shape[0], device=state.device)
    work, data = state, warped
    for _ in range(params.outerIterations):
        if params.medianFiltering > 1:
            work[:, :2] = _median(work[:, :2], params.medianFiltering)
        for _ in range(params.innnerIterations):
            running = iterate(work, data, params.steps) > threshold
            if bool(running.all()):
                continue
            if work is not state:
                state.index_copy_(0, active, work)
            active, work, data = active[running], work[running], data[running]
            if not active.numel():
                return
    if work is not state:
        state.index_copy_(0, active, work)


def _iterate(state: torch.Tensor, data: torch.Tensor, steps: tuple[float, float, float, float]) -> torch.Tensor:
    """One thresholding, primal and dual step, in place; returns each pair's summed squared flow change."""
    l_t, theta, taut, gamma = steps
    components = data.shape[1] - 2
    flow = state[:, :components]
    dual_x, dual_y = state[:, components:2 * components], state[:, 2 * components:]
    directions, negative_grad, rho_c = data[:, :components], data[:, components], data[:, components + 1]

    rho = directions[:, 0] * flow[:, 0]
    rho.addcmul_(directions[:, 1], flow[:, 1]).add_(rho_c)
    if components == 3:
        rho.add_(flow[:, 2], alpha=gamma)
    step = rho.div_(negative_grad).clamp_(-l_t, l_t)  # the three cases of the thresholding in one expression
    updated = torch.addcmul(flow, step[:, None], directions)
    updated.add_(_divergence(dual_x, dual_y), alpha=theta)
    difference = (updated - flow).flatten(1)
    change = torch.linalg.vecdot(difference, difference)
    flow.copy_(updated)

    grad_x, grad_y = _forward_gradient(updated)
    norm = torch.hypot(grad_x, grad_y).mul_(taut).add_(1)
    dual_x.add_(grad_x, alpha=taut).div_(norm)
    dual_y.add_(grad_y, alpha=taut).div_(norm)
    return change


@cache
def _compiled_iterate() -> Callable[..., torch.Tensor]:
    """``_iterate`` fused by torch.compile; shapes marked dynamic, so levels and shrinking batches reuse one kernel."""
    return torch.compile(_iterate, dynamic=True)


def _divergence(dual_x: torch.Tensor, dual_y: torch.Tensor) -> torch.Tensor:
    """Backward differences with the dual variable 0 outside the image (the adjoint of ``_forward_gradient``)."""
    along_x = dual_x.clone()
    along_x[..., 1:].sub_(dual_x[..., :-1])
    along_y = dual_y.clone()
    along_y[..., 1:, :].sub_(dual_y[..., :-1, :])
    return along_x.add_(along_y)


def _forward_gradient(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, 0 on the last column (x) and the last row (y)."""
    # a copy then an in-place difference: two passes, and torch.compile traces it (``out=`` views it does not)
    grad_x = torch.empty_like(flow)
    grad_x[..., :-1].copy_(flow[..., 1:]).sub_(flow[..., :-1])
    grad_x[..., -1] = 0
    grad_y = torch.empty_like(flow)
    grad_y[..., :-1, :].copy_(flow[..., 1:, :]).sub_(flow[..., :-1, :])
    grad_y[..., -1, :] = 0
    return grad_x, grad_y
