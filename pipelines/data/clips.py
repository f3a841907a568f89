"""The clip loader: torch Datasets that cut clips from a flow store, augment them as MARS does and normalise them.

Modes: ``rgb`` (3 channels), ``flow`` (2: x, y) and ``rgb+flow`` (5: R, G, B, flow x, flow y; MARS's RGB_Flow), all
as float32 (C, T, H, W). In ``rgb+flow`` both parts share one crop, one flip and one time window, which is what
lets a MARS student and its flow teacher see the same clip.

Every stream lives on the flow-frame grid: a video of N frames has N − 1 flow frames, and RGB frame k pairs with
flow k, so clip indices run over 0..N−2 for every mode and the RGB, Flow and MARS scores of a video cover the same
frames.

Randomness: each training clip draws from ``numpy.random.default_rng([seed, epoch, index])``, so a clip depends on
nothing but those three numbers: not on worker count, worker start method or what was drawn before. A resumed run
that calls ``set_epoch`` replays the same clips.

The store is opened lazily: the Dataset holds a ``FlowStore``, which reads only its manifest when built and opens
HDF5 files on first use in whichever process uses it, so the Dataset pickles (spawn workers) and every worker
has its own file handles.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from flow.errors import InputError
from flow.importer import has_flow
from flow.store import FlowStore
from pipelines.data.frame_cache import FrameCache, frame_bytes

MODES: dict[str, int] = {"rgb": 3, "flow": 2, "rgb+flow": 5}


class ClipSource(Protocol):
    """What the clip datasets read videos from: a ``FlowStore``, or one video decoded in memory
    (``flow.decode.DecodedVideo``, prediction); ``root`` names it in errors."""

    root: Path

    @property
    def preprocessing(self) -> dict[str, Any]: ...

    @property
    def bound(self) -> float: ...

    def video_ids(self) -> list[str]: ...

    def num_frames(self, video_id: str) -> int: ...

    def frame_size(self, video_id: str) -> tuple[int, int]: ...

    def frames(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray: ...

    def flow_codes(self, video_id: str, start: int | None = None, stop: int | None = None) -> np.ndarray: ...
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)  # R, G, B on the 0..255 scale; MARS subtracts it, no std
SCALES = (1.0, 2**-0.25, 2**-0.5, 2**-0.75, 0.5)  # MARS multi-scale crop, fractions of the short side
POSITIONS = ("c", "tl", "tr", "bl", "br")
NORMALIZATIONS = ("mars", "unit")  # the names ``Normalization.named`` takes


@dataclass(frozen=True)
class Normalization:
    """``(rgb − rgb_mean) · rgb_scale`` and ``(code − flow_center) · flow_scale``; the defaults are MARS's.

    MARS keeps pixels in 0..255 and flow in quantisation codes (1 code = 2·bound/255 px). Tiny networks trained
    from scratch prefer inputs near unit scale: ``Normalization.named("unit", bound)`` gives RGB ≈ (x − mean)/64
    and flow in quarter pixels.
    """

    rgb_mean: tuple[float, float, float] = ACTIVITYNET_MEAN
    rgb_scale: float = 1.0
    flow_center: float = 127.5
    flow_scale: float = 1.0

    @classmethod
    def named(cls, name: str, bound: float = 20.0) -> Normalization:
        if name == "mars":
            return cls()
        if name == "unit":
            return cls(rgb_scale=1 / 64, flow_scale=(2 * bound / 255) / 4)
        raise ValueError(f"unknown normalization {name!r} (expected 'mars' or 'unit')")


# ---------------------------------------------------------------- where clips lie in time


def grid_length(num_frames: int) -> int:
    """Frames a clip can use: one per flow frame."""
    return num_frames - 1


def looped(start: int, duration: int, length: int) -> np.ndarray:
    """``duration`` consecutive grid indices from ``start``, wrapping around a video shorter than the clip."""
    return (start + np.arange(duration)) % length


def train_window(length: int, duration: int, rng: np.random.Generator) -> np.ndarray:
    """A random window: any start that fits (MARS's rule, which also excludes the last start, is off by one);
    a shorter video loops from a random start."""
    if length >= duration:
        return looped(int(rng.integers(length - duration + 1)), duration, length)
    return looped(int(rng.integers(length)), duration, length)


def centre_window(length: int, duration: int) -> np.ndarray:
    return looped(max(0, (length - duration) // 2), duration, length)


def test_windows(length: int, duration: int) -> list[np.ndarray]:
    """The MARS test protocol: every non-overlapping window, the remainder dropped; one looped window if short."""
    count = max(1, length // duration)
    return [looped(k * duration, duration, length) for k in range(count)]


def spread_windows(length: int, duration: int, count: int) -> list[np.ndarray]:
    """``count`` windows whose starts are spread evenly over the video (the ``views`` protocol)."""
    starts = np.linspace(0, max(0, length - duration), count).round().astype(int)
    return [looped(int(s), duration, length) for s in starts]


# ---------------------------------------------------------------- where clips lie in space


def corner_crop(height: int, width: int, scale: float, position: str) -> tuple[int, int, int]:
    """(top, left, side) of MARS's square multi-scale corner crop."""
    side = int(min(height, width) * scale)
    if position == "c":
        return height // 2 - side // 2, width // 2 - side // 2, side
    top = 0 if position[0] == "t" else height - side
    left = 0 if position[1] == "l" else width - side
    return top, left, side


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging when shrinking (close to PIL's antialiased bilinear, which MARS used), bilinear otherwise."""
    if (height, width) == frame.shape[:2]:
        return frame
    shrink = width < frame.shape[1] or height < frame.shape[0]
    resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return resized.reshape(height, width, frame.shape[2])


def _short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``size``."""
    if height <= width:
        return size, max(size, round(width * size / height))
    return max(size, round(height * size / width)), size


# ---------------------------------------------------------------- datasets


class _StoreClips(Dataset):
    """What every clip dataset shares: the store, the (video id, label) list and the per-clip pipeline."""

    def __init__(
        self,
        store: ClipSource | str | Path,
        items: Sequence[tuple[str, int]],
        mode: str,
        sample_duration: int,
        sample_size: int,
        normalization: Normalization,
        cache: FrameCache | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if sample_duration < 1 or sample_size < 1:
            raise ValueError("sample_duration and sample_size must be positive")
        self.store: ClipSource = FlowStore(store) if isinstance(store, (str, Path)) else store
        if mode != "rgb" and not has_flow(self.store.preprocessing):
            raise InputError(self.store.root, f"holds RGB frames only ({self.store.preprocessing.get('source_layout')} "
                                              f"layout); {mode} clips need flow (import a layout with flow, or "
                                              "extract-flow)")
        self.items = [(str(video), int(label)) for video, label in items]
        self.mode = mode
        self.sample_duration = sample_duration
        self.sample_size = sample_size
        self.normalization = normalization
        self.cache = cache or FrameCache()
        known = set(self.store.video_ids())
        missing = [video for video, _ in self.items if video not in known]
        if missing:
            raise InputError(self.store.root, f"has no video {missing[0]!r} ({len(missing)} of {len(self.items)} "
                                              "listed videos are missing: extracted from another dataset?)")
        # Opening every file here checks it (datasets, dtypes, shapes) in this process, where a damaged one is a
        # one-line InputError; found in a DataLoader worker, it would come back as the worker's traceback.
        self._shapes: dict[str, tuple[int, int, int]] = {}
        for video, _ in self.items:
            self._shape(video)
        if self._shapes:
            largest = max(frame_bytes(height, width, mode.split("+")) for _, height, width in self._shapes.values())
            self.cache.check_fits(sample_duration, largest, f"{sample_duration}-frame {mode} clip")

    @property
    def channels(self) -> int:
        return MODES[self.mode]

    def __len__(self) -> int:
        return len(self.items)

    def _shape(self, video: str) -> tuple[int, int, int]:
        """(frames, height, width) of a video, remembered: asking the store may reopen its HDF5 file."""
        if video not in self._shapes:
            self._shapes[video] = (self.store.num_frames(video), *self.store.frame_size(video))
        return self._shapes[video]

    def _read(self, video: str, indices: np.ndarray) -> list[np.ndarray]:
        """The uint8 parts of a clip, (T, H, W, 3) RGB and/or (T, H, W, 2) flow codes, at the stored size: only
        the frames asked, through the frame cache (``cache_mb``), which spares decoding them again next epoch."""
        return [self.cache.read(self.store, video, part, indices) for part in self.mode.split("+")]

    def _finish(self, parts: list[np.ndarray], hflip: bool = False, vflip: bool = False) -> torch.Tensor:
        """Normalise, flip (a mirror negates the flow component across it), and lay out as (C, T, H, W).

        Each channel is written once, straight into the output: at 64 frames the clip is 16 MB of float32, and
        whole-clip temporaries (cast, centre, scale, concatenate, transpose) cost more than reading it.
        """
        norm = self.normalization
        frames, height, width = parts[0].shape[:3]
        out = np.empty((sum(part.shape[-1] for part in parts), frames, height, width), np.float32)
        channel = 0
        for part in parts:
            rgb = part.shape[-1] == 3
            centres = norm.rgb_mean if rgb else (norm.flow_center,) * part.shape[-1]
            scale = np.float32(norm.rgb_scale if rgb else norm.flow_scale)
            view = part[:, ::-1] if vflip else part
            view = view[:, :, ::-1] if hflip else view
            for index, centre in enumerate(centres):
                target = out[channel]
                np.subtract(view[..., index], np.float32(centre), out=target, dtype=np.float32)
                target *= scale
                if not rgb and ((index == 0 and hflip) or (index == 1 and vflip)):
                    np.negative(target, out=target)
                channel += 1
        return torch.from_numpy(out)

    def _centre_views(self, parts: list[np.ndarray], crops: int) -> list[list[np.ndarray]]:
        """Resize the short side to ``sample_size``, then ``crops`` square crops along the long side (1: centre)."""
        size = self.sample_size
        height, width = parts[0].shape[1:3]
        new_h, new_w = _short_side_size(height, width, size)
        resized = [np.stack([_resize(frame, new_w, new_h) for frame in part]) for part in parts]
        long_extra = max(new_h, new_w) - size
        offsets = [round(long_extra / 2)] if crops == 1 else [0, round(long_extra / 2), long_extra]
        views = []
        for offset in offsets:
            top, left = (offset, round((new_w - size) / 2)) if new_h > new_w else (round((new_h - size) / 2), offset)
            views.append([part[:, top : top + size, left : left + size] for part in resized])
        return views


class ClipDataset(_StoreClips):
    """One clip per video per visit: random and augmented (``train=True``), or the centred clip for validation.

    Training augmentation is MARS's: a random window, a square crop of a random scale (1, 2^-¼, 2^-½, 2^-¾, ½ of
    the short side) at a random position (centre or a corner) resized to ``sample_size``, and a horizontal flip
    with p = ½ that negates flow x. With ``hflip_map`` (label → label) a flip also relabels the clip, for classes
    that a mirror turns into each other (left/right); with ``vflip_map`` a vertical flip (negating flow y) is
    drawn as well. ``flip=False`` turns flips off. ``scales`` replaces MARS's crop scales; ``(1.0,)`` keeps the
    whole short side, which suits frames already at the network's size (the synthetic 32 px clips).
    """

    def __init__(
        self,
        store: ClipSource | str | Path,
        items: Sequence[tuple[str, int]],
        mode: str,
        sample_duration: int = 16,
        sample_size: int = 112,
        train: bool = True,
        normalization: Normalization = Normalization(),
        flip: bool = True,
        hflip_map: Mapping[int, int] | None = None,
        vflip_map: Mapping[int, int] | None = None,
        seed: int = 0,
        scales: Sequence[float] = SCALES,
        cache: FrameCache | None = None,
    ) -> None:
        super().__init__(store, items, mode, sample_duration, sample_size, normalization, cache)
        if seed < 0:
            raise ValueError(f"seed must be 0 or more, not {seed}")
        if not scales or not all(0 < scale <= 1 for scale in scales):
            raise ValueError(f"crop scales must lie in (0, 1], got {scales}")
        self.scales = tuple(float(scale) for scale in scales)
        self.train = train
        self.flip = flip
        self.hflip_map = None if hflip_map is None else {int(k): int(v) for k, v in hflip_map.items()}
        self.vflip_map = None if vflip_map is None else {int(k): int(v) for k, v in vflip_map.items()}
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose clips ``__getitem__`` returns."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        video, label = self.items[index]
        length = grid_length(self._shape(video)[0])
        if not self.train:
            parts = self._read(video, centre_window(length, self.sample_duration))
            return self._finish(self._centre_views(parts, 1)[0]), label

        rng = np.random.default_rng([self.seed, self.epoch, index])
        indices = train_window(length, self.sample_duration, rng)
        scale, position = self.scales[rng.integers(len(self.scales))], POSITIONS[rng.integers(len(POSITIONS))]
        hflip = self.flip and bool(rng.random() < 0.5)
        vflip = self.flip and self.vflip_map is not None and bool(rng.random() < 0.5)
        _, height, width = self._shape(video)
        top, left, side = corner_crop(height, width, scale, position)
        size = self.sample_size
        parts = [
            np.stack([_resize(frame[top : top + side, left : left + side], size, size) for frame in part])
            for part in self._read(video, indices)
        ]
        if hflip and self.hflip_map is not None:
            label = self.hflip_map[label]
        if vflip:
            label = self.vflip_map[label]
        return self._finish(parts, hflip, vflip), label


class VideoClips(_StoreClips):
    """All test clips of one video per item, as (K·M, C, T, H, W) with K clips of M crops each.

    ``clips=None`` is the MARS protocol: every non-overlapping ``sample_duration`` window (remainder dropped, a
    short video looped), short side resized to ``sample_size``, centre crop. ``clips=K`` spreads K windows evenly
    over the video instead; ``crops=3`` takes three squares along the long side (start, centre, end).
    """

    def __init__(
        self,
        store: ClipSource | str | Path,
        items: Sequence[tuple[str, int]],
        mode: str,
        sample_duration: int = 16,
        sample_size: int = 112,
        normalization: Normalization = Normalization(),
        clips: int | None = None,
        crops: int = 1,
    ) -> None:
        super().__init__(store, items, mode, sample_duration, sample_size, normalization)
        if crops not in (1, 3) or (clips is not None and clips < 1):
            raise ValueError("crops must be 1 or 3 and clips None or positive")
        self.clips = clips
        self.crops = crops

    def windows(self, video: str) -> list[np.ndarray]:
        length = grid_length(self._shape(video)[0])
        if self.clips is None:
            return test_windows(length, self.sample_duration)
        return spread_windows(length, self.sample_duration, self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        video, label = self.items[index]
        windows = self.windows(video)
        everything = np.concatenate(windows)
        first = int(everything.min())
        whole = self._read(video, np.arange(first, int(everything.max()) + 1))
        clips = []
        for window in windows:
            parts = [part[window - first] for part in whole]
            clips.extend(self._finish(view) for view in self._centre_views(parts, self.crops))
        return torch.stack(clips), label
