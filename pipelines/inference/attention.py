"""The STA weights a trained network gives one video, under the test protocol, ready to be drawn or saved.

Each STA module keeps the gate of its last forward pass (``last_weights``, shape (clips, c, L, 1, 1)), so one
pass over the video's test clips yields everything: the channel × frame map W of every clip, and the temporal
weight of each feature frame (W averaged over channels). The feature map's time axis L can be shorter than the
clip (a strided backbone); the temporal weights are then interpolated back onto the clip's frames, each frame
taking the value at its centre, so that they can be laid over the frames themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow.errors import InputError
from flow.store import FlowStore
from pipelines.core.device import resolve_device
from pipelines.inference.engine import Engine


@dataclass
class ModuleWeights:
    """The gate of one STA module for every test clip of a video: (clips, channels, L)."""

    name: str
    weights: np.ndarray

    def feature_frame_weights(self) -> np.ndarray:
        """(clips, L): the temporal weight of each feature frame, the mean of W over channels."""
        return self.weights.mean(axis=1)


@dataclass
class VideoAttention:
    """A video's test clips, their frames, the network's prediction and the weights of each STA module."""

    video_id: str
    checkpoint: str
    stream: str
    arch: str
    sta: str
    classes: list[str]
    windows: list[np.ndarray]  # per clip: the flow-grid frame indices it covers
    frames: np.ndarray  # (clips, T, H, W, 3) uint8 RGB frames of every clip, as stored
    modules: list[ModuleWeights]
    probabilities: np.ndarray  # softmax of the clip-averaged logits (the test protocol's video score)
    label: int | None = None

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def shown(self) -> ModuleWeights:
        """The module drawn over the frames: the deepest, whose weights act closest to the classifier."""
        return self.modules[-1]

    def frame_weights(self, module: ModuleWeights | None = None) -> np.ndarray:
        """(clips, T): temporal weights interpolated from the feature frames onto the clip's frames."""
        module = module or self.shown
        frames = self.frames.shape[1]
        return np.stack([upsample_weights(row, frames) for row in module.feature_frame_weights()])

    def describe(self) -> str:
        """One line for captions: the video, the prediction and (when known) the true class."""
        text = f"{self.video_id}: predicted {self.classes[self.predicted]} ({100 * self.probabilities.max():.0f}%)"
        if self.label is not None:
            text += f", true {self.classes[self.label]}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "video": self.video_id,
            "checkpoint": self.checkpoint,
            "stream": self.stream,
            "arch": self.arch,
            "sta": self.sta,
            "predicted": self.classes[self.predicted],
            "probability": float(self.probabilities.max()),
            "label": None if self.label is None else self.classes[self.label],
            "shown_module": self.shown.name,
            "clips": [{"frames": window.tolist(), "frame_weights": weights.round(6).tolist()}
                      for window, weights in zip(self.windows, self.frame_weights())],
            "modules": [{"name": m.name, "shape": list(m.weights.shape[1:]),
                         "feature_frame_weights": m.feature_frame_weights().round(6).tolist(),
                         "weights": m.weights.round(6).tolist()} for m in self.modules],
        }


@dataclass(frozen=True)
class WindowSelection:
    """How far one STA module's gate picks a window of frames, over a video's test clips.

    The channel mean alone hides selection: channels can move in opposite directions and cancel. So beside the
    share of the channel-mean weight inside the window (against the share of frames inside, which a uniform gate
    gives), it reports each channel's own contrast: ``W_in − W_out``, its mean weight on frames inside the window
    less its mean weight outside.

    Args:
        channel_mean_share: the share of the channel-mean temporal weight that falls inside the window.
        uniform_share: the share of frames inside the window (what a gate constant in time gives).
        channels_favouring_window: the share of channels (over clips) with ``W_in > W_out``.
        mean_abs_contrast: the mean of ``|W_in − W_out|`` over channels and clips.
        clips: the test clips that have frames both inside and outside the window (the others say nothing).
    """

    channel_mean_share: float
    uniform_share: float
    channels_favouring_window: float
    mean_abs_contrast: float
    clips: int


def window_selection(attention: VideoAttention, start: int, stop: int, module: ModuleWeights | None = None
                     ) -> WindowSelection | None:
    """The selection measures of ``module`` (the shown one by default) for flow-grid frames ``[start, stop)``;
    None when no test clip has frames both inside and outside the window."""
    return gate_selection(*_gates_and_window(attention, start, stop, module))


def window_contrasts(attention: VideoAttention, start: int, stop: int, module: ModuleWeights | None = None
                     ) -> np.ndarray:
    """(clips, channels): each channel's ``W_in − W_out`` in every test clip with frames on both sides of
    ``[start, stop)`` (no rows when there is none)."""
    return channel_contrasts(*_gates_and_window(attention, start, stop, module))


def _gates_and_window(attention: VideoAttention, start: int, stop: int, module: ModuleWeights | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Gates on the clips' frames (clips, channels, T) and the (clips, T) mask of frames inside the window."""
    module = module or attention.shown
    frames = attention.frames.shape[1]
    gates = np.stack([np.stack([upsample_weights(channel, frames) for channel in gate]) for gate in module.weights])
    inside = np.stack([(window >= start) & (window < stop) for window in attention.windows])
    return gates, inside


def channel_contrasts(gates: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """(clips, channels) ``W_in − W_out`` from gates (clips, channels, T) on the clips' frames and each clip's
    (clips, T) mask of frames inside the window; clips without frames on both sides are left out."""
    used = [(gate, mask) for gate, mask in zip(gates, inside) if mask.any() and not mask.all()]
    if not used:
        return np.zeros((0, gates.shape[1]))
    return np.stack([gate[:, mask].mean(axis=1) - gate[:, ~mask].mean(axis=1) for gate, mask in used])


def gate_selection(gates: np.ndarray, inside: np.ndarray) -> WindowSelection | None:
    """The selection measures of gates (clips, channels, T) on the clips' frames, given each clip's frames inside
    the window as a (clips, T) boolean mask; None when no clip has frames both inside and outside."""
    used = np.array([mask.any() and not mask.all() for mask in inside], dtype=bool)
    if not used.any():
        return None
    difference = channel_contrasts(gates, inside)
    mean_weights = gates[used].mean(axis=1)  # (clips, T): the channel mean
    masks = inside[used]
    shares = (mean_weights * masks).sum(axis=1) / mean_weights.sum(axis=1)
    return WindowSelection(float(shares.mean()), float(masks.mean(axis=1).mean()),
                           float((difference > 0).mean()), float(np.abs(difference).mean()), int(used.sum()))


def describe_selection(selection: WindowSelection | None, start: int, stop: int) -> str:
    """One line for the terminal: the channel-mean share beside the per-channel measures."""
    if selection is None:
        return f"window {start}:{stop}: no test clip has frames both inside and outside it"
    return (f"window {start}:{stop}: channel-mean weight inside {selection.channel_mean_share:.3f} (uniform "
            f"{selection.uniform_share:.3f}); channels favouring it {selection.channels_favouring_window:.3f}; "
            f"mean |W_in - W_out| {selection.mean_abs_contrast:.3f} ({selection.clips} clips)")


def upsample_weights(weights: np.ndarray, frames: int) -> np.ndarray:
    """Weights of L feature frames spread over ``frames`` clip frames (linear, by frame centres; ends held)."""
    length = len(weights)
    centres = (np.arange(frames) + 0.5) * length / frames - 0.5
    return np.interp(centres, np.arange(length), weights)


class AttentionProbe:
    """A checkpoint with STA, loaded once, run over the test clips of any video of a store.

    Args:
        checkpoint: a checkpoint trained with ``--sta``.
        store: the flow store whose videos are probed (the checkpoint's preprocessing).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: clips per forward pass.
    """

    def __init__(self, checkpoint: str | Path, store: str | Path, device: str = "auto", batch_size: int = 8) -> None:
        from mars_sta import STA, attention_modules

        self.engine = Engine(checkpoint, resolve_device(device), batch_size)
        loaded = self.engine.checkpoint
        self.stas = [(name, module) for name, module in attention_modules(self.engine.model)
                     if isinstance(module, STA)]
        if not self.stas:
            raise InputError(checkpoint, f"has no STA module (stream {loaded.stream}, sta "
                                         f"{loaded.model_kwargs.get('sta') or 'none'}): attention needs a checkpoint "
                                         "trained with --sta")
        self.store = FlowStore(store)
        loaded.check_input(loaded.reading(self.store.preprocessing), store)
        self.checkpoint = str(checkpoint)

    def video(self, video_id: str, label: int | None = None) -> VideoAttention:
        """Every test clip of ``video_id`` through the network, keeping each STA module's gate."""
        if video_id not in self.store:
            raise InputError(self.store.root, f"has no video {video_id!r}")
        videos = self.engine.video_clips(self.store, [(video_id, -1)])
        clips, _ = videos[0]
        windows = videos.windows(video_id)
        gates: dict[str, list[torch.Tensor]] = {name: [] for name, _ in self.stas}

        def keep_gates() -> None:
            for name, module in self.stas:
                gates[name].append(module.last_weights.float().cpu().flatten(2))  # (n, c, L)

        logits, _ = self.engine.forward(clips, after_chunk=keep_gates)
        everything = self.store.frames(video_id)
        loaded = self.engine.checkpoint
        return VideoAttention(
            video_id=video_id, checkpoint=self.checkpoint, stream=loaded.stream, arch=loaded.arch,
            sta=str(loaded.model_kwargs.get("sta")), classes=loaded.classes, windows=windows,
            frames=np.stack([everything[window] for window in windows]),
            modules=[ModuleWeights(name, torch.cat(gates[name]).numpy()) for name, _ in self.stas],
            probabilities=torch.softmax(logits.mean(0), 0).numpy(), label=label,
        )


def collect_attention(checkpoint: str | Path, store: str | Path, video_id: str, label: int | None = None,
                      device: str = "auto") -> VideoAttention:
    """The STA weights of one video's test clips (see ``AttentionProbe`` to reuse the network for several)."""
    return AttentionProbe(checkpoint, store, device).video(video_id, label)
