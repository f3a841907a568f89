"""Pictures of what STA weighs and of the flow it learns from: weight curves, channel × frame maps, the frames
with their temporal weights laid over them (the paper's Fig. 1, top row), and colour-coded optical flow.

matplotlib is imported lazily through ``pipelines.report.figures``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flow.atomic import write_json_atomic
from pipelines.inference.attention import VideoAttention, window_contrasts, window_selection
from pipelines.report.figures import new_figure, save
from pipelines.report.flow_colors import color_wheel, flow_magnitude_scale, flow_to_rgb

MAX_MODULES = 4  # STA in every block of a deep stage gives dozens of modules: draw the deepest few
MAX_MAP_CLIPS = 4  # channel × frame maps drawn per module
MAX_STRIP_CLIPS = 3  # rows of frames in the overlay
MAX_STRIP_FRAMES = 16  # frames per row (evenly spaced when the clip is longer)
STRIP_WIDTH = 1150  # pixels a row of frames may take, so that the figure fits a page without shrinking
MAX_THUMB_HEIGHT = 96  # pixels of each frame in the overlay, at most
BORDER = 4  # pixels of the coloured frame border
GAP = 4  # white pixels between frames


def _drawn_modules(attention: VideoAttention) -> tuple[list, str]:
    """The deepest ``MAX_MODULES`` modules, and a title note when some are left out (all are in the JSON)."""
    modules = attention.modules[-MAX_MODULES:]
    left_out = len(attention.modules) - len(modules)
    return modules, f"\n(the deepest {len(modules)} of {len(attention.modules)} STA modules)" if left_out else ""


def frame_weight_curves(attention: VideoAttention) -> Any:
    """Temporal weight (W averaged over channels) of every frame, one curve per test clip, per STA module."""
    modules, note = _drawn_modules(attention)
    figure = new_figure(8.0, 2.4 * len(modules) + 0.6)
    axes_list = np.atleast_1d(figure.subplots(len(modules), 1, squeeze=False)[:, 0])
    for axes, module in zip(axes_list, modules):
        for number, (window, weights) in enumerate(zip(attention.windows, attention.frame_weights(module)), 1):
            order = np.argsort(window, kind="stable")  # a looped (short) video wraps around
            axes.plot(window[order], weights[order], marker="o", markersize=3, label=f"clip {number}")
        axes.set_title(f"{module.name}: temporal weight (mean of W over {module.weights.shape[1]} channels)",
                       fontsize=9)
        axes.set_xlabel("frame of the video")
        axes.set_ylabel("weight")
        axes.grid(alpha=0.3)
        if len(attention.windows) <= 10:
            axes.legend(fontsize=7, ncol=min(5, len(attention.windows)))
    figure.suptitle(attention.describe() + note, fontsize=10)
    return figure


def channel_frame_maps(attention: VideoAttention) -> Any:
    """W of each STA module as a heatmap, channels × feature frames, for the first few clips (shared colours)."""
    modules, note = _drawn_modules(attention)
    clips = min(MAX_MAP_CLIPS, len(attention.windows))
    figure = new_figure(max(2.9 * clips + 1.2, 5.0), 3.0 * len(modules) + 0.7)
    from matplotlib.ticker import MaxNLocator

    grid = figure.subplots(len(modules), clips, squeeze=False)
    for row, module in zip(grid, modules):
        low, high = float(module.weights.min()), float(module.weights.max())
        image = None
        for column, axes in enumerate(row):
            image = axes.imshow(module.weights[column], aspect="auto", cmap="viridis", vmin=low, vmax=high,
                                interpolation="nearest")
            axes.set_title(f"{module.name}, clip {column + 1}", fontsize=8)
            axes.set_xlabel("feature frame")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            if column == 0:
                axes.set_ylabel("channel")
        figure.colorbar(image, ax=list(row), label="W", shrink=0.9)
    figure.suptitle(attention.describe() + note, fontsize=10)
    return figure


def window_contrast(attention: VideoAttention, window: tuple[int, int]) -> Any:
    """Per STA module, how each channel weighs the window: a histogram of ``W_in − W_out`` over channels and
    clips. The channel mean can sit at the uniform share while channels select in opposite directions; this shows
    them one by one."""
    modules, note = _drawn_modules(attention)
    figure = new_figure(6.5, 2.3 * len(modules) + 0.7)
    axes_list = np.atleast_1d(figure.subplots(len(modules), 1, squeeze=False)[:, 0])
    for axes, module in zip(axes_list, modules):
        contrasts = window_contrasts(attention, *window, module)
        if contrasts.size == 0:
            axes.text(0.5, 0.5, "no clip has frames both inside and outside the window", ha="center", va="center",
                      transform=axes.transAxes, fontsize=8)
            axes.set_axis_off()
            continue
        axes.hist(contrasts.ravel(), bins=40, color="tab:blue")
        axes.axvline(0.0, color="black", linewidth=0.8)
        axes.set_title(f"{module.name}: W_in − W_out per channel, {len(contrasts)} clip(s) (channels favouring the "
                       f"window {(contrasts > 0).mean():.3f}, mean |W_in − W_out| {np.abs(contrasts).mean():.3f})",
                       fontsize=8)
        axes.set_xlabel("W_in − W_out")
        axes.set_ylabel("channels × clips")
    figure.suptitle(f"{attention.describe()}\nwindow: frames {window[0]}–{window[1] - 1}" + note, fontsize=9)
    return figure


def _thumbnail(frame: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(frame.shape[1] * height / frame.shape[0]))
    interpolation = cv2.INTER_AREA if frame.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def _thumb_height(count: int, height: int, width: int) -> int:
    """The frame height at which ``count`` bordered frames fill at most ``STRIP_WIDTH`` pixels."""
    per_frame = STRIP_WIDTH / count - 2 * BORDER - GAP
    return int(np.clip(per_frame * height / width, 16, MAX_THUMB_HEIGHT))


def _strip(frames: np.ndarray, emphasis: np.ndarray, colors: np.ndarray, height: int) -> np.ndarray:
    """Frames side by side, each dimmed by (1 − emphasis)/2 and framed by its colour, with white gaps."""
    tiles = []
    for frame, level, color in zip(frames, emphasis, colors):
        thumb = _thumbnail(frame, height).astype(np.float32) * (0.5 + 0.5 * level)
        tile = np.empty((height + 2 * BORDER, thumb.shape[1] + 2 * BORDER, 3), np.float32)
        tile[:] = 255.0 * color[:3]
        tile[BORDER:-BORDER, BORDER:-BORDER] = thumb
        tiles.append(tile)
        tiles.append(np.full((tile.shape[0], GAP, 3), 255.0, np.float32))
    return np.concatenate(tiles[:-1], axis=1).round().astype(np.uint8)


def attention_overlay(attention: VideoAttention) -> Any:
    """A row of frames per clip, each bordered in the colour of its temporal weight and dimmed as it falls,
    with the weights as bars below: the frames STA leans on stand out."""
    weights = attention.frame_weights()
    clips = min(MAX_STRIP_CLIPS, len(weights))
    length = weights.shape[1]
    picks = np.unique(np.linspace(0, length - 1, min(MAX_STRIP_FRAMES, length)).round().astype(int))
    shown = weights[:clips, picks]
    low, high = float(shown.min()), float(shown.max())
    spread = high - low
    emphasis = (shown - low) / spread if spread > 1e-6 else np.ones_like(shown)
    height, width = attention.frames.shape[2:4]
    thumb = _thumb_height(len(picks), height, width)
    strip_inches = len(picks) * (thumb * width / height + 2 * BORDER + GAP) / 100
    bar_pixels = 45
    figure = new_figure(float(np.clip(strip_inches + 1.0, 6.0, 13.0)),
                        (thumb + 2 * BORDER + bar_pixels + 45) / 100 * clips + 0.6)
    import matplotlib  # present: new_figure checked

    colormap = matplotlib.colormaps["plasma"]
    grid = figure.subplots(2 * clips, 1, squeeze=False, height_ratios=[thumb + 2 * BORDER, bar_pixels] * clips)[:, 0]
    for clip in range(clips):
        strip = _strip(attention.frames[clip, picks], emphasis[clip], colormap(0.15 + 0.85 * emphasis[clip]),
                       thumb)
        image_axes, bar_axes = grid[2 * clip], grid[2 * clip + 1]
        image_axes.imshow(strip, interpolation="nearest", aspect="auto")  # columns line up with the bars
        image_axes.set_axis_off()
        frames = attention.windows[clip][picks]
        image_axes.set_title(f"clip {clip + 1}: frames {frames[0]}–{frames[-1]}", fontsize=8, loc="left")
        bar_axes.bar(np.arange(len(picks)), shown[clip], color=colormap(0.15 + 0.85 * emphasis[clip]), width=0.8)
        bar_axes.set_xlim(-0.5, len(picks) - 0.5)
        margin = max(spread * 0.15, 1e-3)
        bar_axes.set_ylim(low - margin, high + margin)
        bar_axes.set_xticks(np.arange(len(picks)), [str(f) for f in frames], fontsize=6)
        bar_axes.tick_params(axis="y", labelsize=6)
        bar_axes.set_ylabel("weight", fontsize=7)
    if spread > 1e-6:
        digits = int(np.clip(np.ceil(-np.log10(spread)) + 1, 3, 7))  # enough to tell low from high
        scale = f"border colour and brightness from {low:.{digits}f} to {high:.{digits}f}"
    else:
        scale = f"every frame weighs {low:.3f}"
    figure.suptitle(f"{attention.describe()}\ntemporal weights of {attention.shown.name} ({scale})", fontsize=9)
    return figure


def flow_strip(frames: np.ndarray, flow: np.ndarray, indices: np.ndarray, title: str) -> Any:
    """Frames k (top) and the colour-coded flow from k to k+1 (bottom), with the colour wheel as the legend."""
    scale = flow_magnitude_scale(flow)
    colours = flow_to_rgb(flow[indices], max_magnitude=scale)
    aspect = frames.shape[2] / frames.shape[1]
    columns = len(indices) + 1
    figure = new_figure(float(np.clip(1.6 * aspect * columns, 6.0, 20.0)), 4.0)
    grid = figure.subplots(2, columns, squeeze=False)
    for column, index in enumerate(indices):
        grid[0, column].imshow(frames[index])
        grid[0, column].set_title(f"frame {index}", fontsize=8)
        grid[1, column].imshow(colours[column])
        grid[1, column].set_title(f"flow {index}→{index + 1}", fontsize=8)
    for axes in grid.ravel():
        axes.set_axis_off()
    grid[1, -1].imshow(color_wheel(128))
    grid[1, -1].set_title("direction (hue)", fontsize=8)
    grid[0, -1].text(0.5, 0.5, f"brightness:\nmagnitude,\nfull at\n{scale:.2f} px", ha="center", va="center",
                     fontsize=8, transform=grid[0, -1].transAxes)
    figure.suptitle(title, fontsize=10)
    return figure


def write_attention(attention: VideoAttention, out_dir: str | Path, prefix: str = "",
                    window: tuple[int, int] | None = None) -> dict[str, Path]:
    """The three pictures and the weights as JSON, into ``out_dir``; returns ``{kind: path}``. With ``window``
    (flow-grid frames ``[start, stop)``), the JSON also holds how far each STA module's gate selects it, and a
    fourth picture shows each channel's selection (``window_contrast``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "frame_weights": save(frame_weight_curves(attention), out_dir / f"{prefix}frame_weights.png"),
        "channel_frame": save(channel_frame_maps(attention), out_dir / f"{prefix}channel_frame.png"),
        "overlay": save(attention_overlay(attention), out_dir / f"{prefix}overlay.png"),
    }
    paths["json"] = out_dir / f"{prefix}attention.json"
    found = attention.to_json()
    if window is not None:
        paths["window_contrast"] = save(window_contrast(attention, window), out_dir / f"{prefix}window_contrast.png")
        found["window"] = list(window)
        for module, entry in zip(attention.modules, found["modules"]):
            selection = window_selection(attention, *window, module)
            entry["window_selection"] = None if selection is None else asdict(selection)
    write_json_atomic(paths["json"], found)
    return paths
