"""A small synthetic action dataset whose classes are motions, written as real videos with UCF-101-style splits.

Why this design (generator v3): ten classes in five direction pairs, so motion alone decides the class and
optical flow sees it; each pair also has a colour that the object wears with probability ``cue_probability``, an
imperfect appearance cue that only the RGB stream can read (at best it names the pair). The cluttered background
is desaturated by ``bg_saturation``, which sets how much the coloured object stands out and so how much RGB can
learn. Motions are in absolute pixels because TV-L1's accuracy is in pixels. The outcome the project's demo
checks is the paper's ordering: Flow above RGB, MARS above RGB, and fusion at least as good as each stream.

Every clip draws from its own random stream seeded by (seed, class, index), so the same seed gives byte-identical
files whatever the order of generation.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.data.synth_files import SynthFiles

GENERATOR_VERSION = 3
# Pairs differ only in the direction of motion; their order fixes the class order (classInd.txt).
PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("up", "down"),
    ("rot_cw", "rot_ccw"),
    ("zoom_in", "zoom_out"),
    ("osc_h", "osc_v"),
)
ALL_CLASSES: tuple[str, ...] = tuple(name for pair in PAIRS for name in pair)
# Where a mirrored clip lands: an image mirror reverses horizontal (or vertical) motion and the turning sense.
HFLIP: dict[str, str] = {"left": "right", "right": "left", "rot_cw": "rot_ccw", "rot_ccw": "rot_cw"}
VFLIP: dict[str, str] = {"up": "down", "down": "up", "rot_cw": "rot_ccw", "rot_ccw": "rot_cw"}
HUE_STEP = 36  # OpenCV hue units (0..180) between the five pair colours

_SPLIT_STREAM = 1  # separates the split draws from the clip draws of the same seed


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of the generator; the defaults are the demo's data (sizes in pixels of the output)."""

    classes: int = 10  # even, 2..10: the first classes/2 direction pairs
    videos_per_class: int = 80
    frames: int = 17  # 17 frames give 16 flow pairs
    size: int = 32  # square frames, pixels
    seed: int = 0
    train_fraction: float = 0.625  # share of each class in the training list, drawn anew for each of the 3 splits
    cue_probability: float = 0.6  # chance that the object wears its pair's hue; otherwise a random pair hue
    bg_saturation: float = 0.7  # 0 = grey clutter, 1 = fully coloured clutter
    hue_jitter: float = 6.0  # OpenCV hue units around the pair's hue
    object_radius: tuple[float, float] = (0.17, 0.25)  # fraction of the frame size
    speed: tuple[float, float] = (1.0, 2.0)  # translation, px per frame
    jitter: float = 0.25  # px per frame, across the direction of translation
    rotation: tuple[float, float] = (6.0, 12.0)  # degrees per frame
    zoom: tuple[float, float] = (1.035, 1.06)  # scale factor per frame
    amplitude: tuple[float, float] = (2.0, 4.0)  # oscillation, px
    period: tuple[float, float] = (8.0, 12.0)  # oscillation, frames
    drift: float = 0.25  # px per frame, largest drift of the classes that do not translate
    pan: float = 0.6  # px per frame, largest background (camera) pan
    motion_window: int = 0  # 0: the class motion runs through the clip; k: only during k random consecutive steps
    distractor: float = 0.0  # px per frame: random-walk motion of the object outside the motion window (no class)
    brightness: tuple[float, float] = (0.7, 1.2)
    brightness_offset: float = 20.0
    noise: tuple[float, float] = (3.0, 8.0)  # sensor noise sigma, grey levels
    corrupted_frames: int = 3  # up to this many blurred (60 %) or dropped (40 %) frames per clip
    fps: float = 25.0

    def __post_init__(self) -> None:
        if self.classes % 2 or not 2 <= self.classes <= len(ALL_CLASSES):
            raise ValueError(f"classes must be even and between 2 and {len(ALL_CLASSES)}, not {self.classes}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, not {self.seed}")
        if self.videos_per_class < 2:
            raise ValueError("videos_per_class must be at least 2 (one train and one test video)")
        if self.frames < 2 or self.size < 8:
            raise ValueError("frames must be at least 2 and size at least 8")
        if not 0 < self.train_fraction < 1:
            raise ValueError("train_fraction must be between 0 and 1")
        if not 0 <= self.cue_probability <= 1 or not 0 <= self.bg_saturation <= 1:
            raise ValueError("cue_probability and bg_saturation must be between 0 and 1")
        if not 0 <= self.motion_window <= self.frames - 1:
            raise ValueError(f"motion_window must be between 0 and frames - 1 = {self.frames - 1}")
        if self.distractor < 0:
            raise ValueError("distractor must be 0 or more")
        if not self.fps > 0:
            raise ValueError(f"fps must be greater than 0, got {self.fps}")

    @property
    def class_names(self) -> list[str]:
        return list(ALL_CLASSES[: self.classes])


def mirror_label(class_name: str, horizontal: bool) -> str:
    """The class a clip of ``class_name`` shows after a horizontal (or vertical) mirror."""
    if class_name not in ALL_CLASSES:
        raise ValueError(f"unknown synthetic class {class_name!r}")
    return (HFLIP if horizontal else VFLIP).get(class_name, class_name)


def mirror_maps(classes: list[str], info: dict) -> tuple[dict[int, int], dict[int, int]]:
    """Label-to-label maps for horizontal and vertical flips, from a ``synth.json`` dict and the split's classes."""
    index = {name: i for i, name in enumerate(classes)}
    maps = []
    for key in ("hflip", "vflip"):
        names = info[key]
        maps.append({i: index[names.get(name, name)] for i, name in enumerate(classes)})
    return maps[0], maps[1]


def motion_windows(data_root: str | Path) -> dict[str, tuple[int, int]]:
    """Each clip's motion window ``(start, stop)`` on the flow grid, by video id, for a synthetic dataset made with
    ``motion_window`` (its ``synth.json`` and ``clips.csv``); empty for any other data, and for synthetic data
    whose class motion fills every clip (nothing to select there)."""
    root = Path(data_root)
    info_path, facts_path = root / "synth.json", root / "clips.csv"
    if not info_path.is_file() or not facts_path.is_file():
        return {}
    info = json.loads(info_path.read_text())
    if not isinstance(info, dict) or not info.get("config", {}).get("motion_window"):
        return {}
    with facts_path.open(newline="") as handle:
        return {row["video"]: (int(row["window_start"]), int(row["window_stop"])) for row in csv.DictReader(handle)}


def generate(out_dir: str | Path, config: SynthConfig = SynthConfig()) -> dict:
    """Write ``videos/<class>/<video>.avi``, ``splits/`` (3 UCF-101-style splits), ``clips.csv`` and ``synth.json``.

    ``synth.json`` is written last, so its presence means the dataset is complete; it lists every file written, so
    a rerun into ``out_dir`` replaces exactly those (``SynthFiles``). Returns its content.
    """
    out = Path(out_dir)
    files = SynthFiles(out)
    classes = config.class_names
    facts = []
    for label, name in enumerate(classes):
        folder = out / "videos" / name
        for index in range(config.videos_per_class):
            video = f"{name}_{index + 1:04d}"
            frames, fact = render_clip(config, label, index)
            files.video(folder / f"{video}.avi", frames, config.fps)
            facts.append({"video": f"{name}/{video}", "label": label, **fact})
    split_sizes = _write_splits(files, out / "splits", config)
    files.text(out / "clips.csv", _facts_csv(facts))
    info = {
        "format": "mars-sta-synth",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "classes": classes,
        "pairs": [list(pair) for pair in PAIRS[: config.classes // 2]],
        "pair_hues": [HUE_STEP * p for p in range(config.classes // 2)],
        "hflip": {name: mirror_label(name, True) for name in classes},
        "vflip": {name: mirror_label(name, False) for name in classes},
        "videos": len(facts),
        "splits": split_sizes,
    }
    return files.finish(info)


def render_clip(config: SynthConfig, label: int, index: int) -> tuple[np.ndarray, dict]:
    """One clip as uint8 (frames, size, size, 3) RGB, and the facts worth keeping about it (cue, window)."""
    rng = np.random.default_rng([config.seed, label, index])
    n, steps = config.size, config.frames - 1
    pair = label // 2
    cue = bool(rng.random() < config.cue_probability)
    hue_pair = pair if cue else int(rng.integers(config.classes // 2))
    hue = (HUE_STEP * hue_pair + rng.uniform(-config.hue_jitter, config.hue_jitter)) % 180

    active = np.ones(steps, bool)
    window = (0, steps)
    if config.motion_window:
        start = int(rng.integers(steps - config.motion_window + 1))
        window = (start, start + config.motion_window)
        active[:] = False
        active[start : start + config.motion_window] = True

    background = _background(rng, n, config.bg_saturation)
    pan = _pan_offsets(rng, n, steps, config.pan)
    radius = n * rng.uniform(*config.object_radius)
    sprite, sprite_radius = _sprite(rng, hue, radius)
    centre, angle, scale = _trajectory(rng, config, ALL_CLASSES[label], active)

    frames = np.empty((config.frames, n, n, 3), np.float32)
    for t in range(config.frames):
        shift = np.float32([[1, 0, -pan[t, 0]], [0, 1, -pan[t, 1]]])
        frame = cv2.warpAffine(background, shift, (n, n), flags=cv2.INTER_LINEAR)
        matrix = _sprite_matrix(centre[t], angle[t], scale[t] * radius / sprite_radius, sprite.shape[0])
        layer = cv2.warpAffine(sprite, matrix, (n, n), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
        frames[t] = frame * (1 - layer[..., 3:]) + layer[..., :3]

    corrupted = _corrupt_and_degrade(rng, frames, config)
    clip = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return clip, {"cue": int(cue), "window_start": window[0], "window_stop": window[1], "corrupted": corrupted}


# ---------------------------------------------------------------- scene parts


def _background(rng: np.random.Generator, n: int, saturation: float) -> np.ndarray:
    """A canvas twice the frame size: low-frequency colour, random shapes and static grain, then desaturated."""
    side = 2 * n
    canvas = cv2.resize(rng.uniform(30, 225, (4, 4, 3)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    count = int(rng.integers(25, 61) * (side / 64) ** 2)
    colours = rng.integers(0, 256, (count, 3)).tolist()
    centres = rng.integers(0, side, (count, 2))
    radii = np.maximum(1, (side * rng.uniform(0.03, 0.12, count)).astype(int))
    kinds = rng.integers(3, size=count).tolist()
    corners = (centres[:, None, :] + rng.uniform(-1, 1, (count, 3, 2)) * radii[:, None, None]).astype(np.int32)
    for (x, y), r, kind, colour, triangle in zip(centres.tolist(), radii.tolist(), kinds, colours, corners):
        if kind == 0:
            cv2.circle(canvas, (x, y), r, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(canvas, (x - r, y - r // 2), (x + r, y + r // 2), colour, -1)
        else:
            cv2.fillPoly(canvas, [triangle], colour, cv2.LINE_AA)
    canvas = canvas.astype(np.float32) + rng.standard_normal(canvas.shape, dtype=np.float32) * 12
    grey = canvas @ np.float32([0.299, 0.587, 0.114])
    return grey[..., None] + saturation * (canvas - grey[..., None])


def _pan_offsets(rng: np.random.Generator, n: int, steps: int, largest: float) -> np.ndarray:
    """Top-left corner of the view in the canvas for every frame: a slow, straight camera pan."""
    speed, direction = rng.uniform(0, largest), rng.uniform(0, 2 * math.pi)
    velocity = speed * np.array([math.cos(direction), math.sin(direction)])
    path = np.arange(steps + 1)[:, None] * velocity
    low, high = -path.min(axis=0), n - path.max(axis=0)
    return path + rng.uniform(low, np.maximum(low, high))


def _sprite(rng: np.random.Generator, hue: float, radius: float) -> tuple[np.ndarray, float]:
    """The object as float32 RGBA, colour premultiplied by alpha (0..1), and its radius in sprite pixels.

    A two-tone texture in a bright and a dark variant of ``hue`` (so grey-level flow still sees texture) and an
    achromatic off-centre marker that makes rotation visible whatever the colour.
    """
    r = max(8.0, 1.25 * radius)  # rendered a little larger than shown, so the warp mostly shrinks it
    side = 2 * int(math.ceil(r)) + 4
    c = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) - c
    rgb = _texture(rng, hue, r, x, y)
    mask = _silhouette(rng, r, side, c)
    marker_angle = rng.uniform(0, 2 * math.pi)
    mx, my = c + 0.5 * r * math.cos(marker_angle), c + 0.5 * r * math.sin(marker_angle)
    ring = (x + c - mx) ** 2 + (y + c - my) ** 2
    rgb[ring <= (0.3 * r) ** 2] = 30.0
    rgb[ring <= (0.18 * r) ** 2] = 250.0
    alpha = mask.astype(np.float32)[..., None] / 255
    return np.dstack([rgb * alpha, alpha]), r


def _texture(rng: np.random.Generator, hue: float, r: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stripes, checker or blotches in a bright and a dark variant of ``hue`` (float32 RGB, 0..255)."""
    saturation = rng.uniform(170, 255)
    hsv = np.uint8([[[hue, saturation, 235], [hue, saturation, 105]]])
    bright, dark = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32)
    side = x.shape[0]
    pattern = int(rng.integers(3))
    if pattern == 0:  # stripes
        theta, period = rng.uniform(0, math.pi), r * rng.uniform(0.5, 0.9)
        on = np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period) > 0
    elif pattern == 1:  # checker
        cell = r * rng.uniform(0.35, 0.6)
        on = (np.floor(x / cell) + np.floor(y / cell)) % 2 == 0
    else:  # blotches
        blobs = cv2.resize(rng.random((4, 4)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
        on = blobs > np.median(blobs)
    return np.where(on[..., None], bright, dark)


def _silhouette(rng: np.random.Generator, r: float, side: int, c: float) -> np.ndarray:
    """An anti-aliased uint8 mask: ellipse, rectangle, polygon or star, drawn with 1/16-pixel precision."""
    mask = np.zeros((side, side), np.uint8)
    shape = int(rng.integers(4))
    shift = 4
    if shape == 0:
        axes = (int(r * 16), int(r * rng.uniform(0.6, 1.0) * 16))
        cv2.ellipse(mask, (int(c * 16), int(c * 16)), axes, 0, 0, 360, 255, -1, cv2.LINE_AA, shift)
        return mask
    if shape == 1:  # rectangle
        w, h = r * rng.uniform(0.75, 0.95), r * rng.uniform(0.5, 0.8)
        corners = [(-w, -h), (w, -h), (w, h), (-w, h)]
    elif shape == 2:  # polygon
        angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(5, 9))))
        radii = r * rng.uniform(0.7, 1.0, angles.size)
        corners = list(zip(radii * np.cos(angles), radii * np.sin(angles)))
    else:  # star
        angles = np.arange(10) * math.pi / 5
        radii = r * np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        corners = list(zip(radii * np.cos(angles), radii * np.sin(angles)))
    points = ((np.array(corners) + c) * 16).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, cv2.LINE_AA, shift)
    return mask


def _trajectory(
    rng: np.random.Generator, config: SynthConfig, motion: str, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object centre (frames, 2), angle (radians) and scale per frame; the class motion runs on ``active`` steps."""
    steps = active.size
    step_xy = np.zeros((steps, 2))
    step_angle = np.zeros(steps)
    step_log_scale = np.zeros(steps)
    wobble = np.zeros((steps + 1, 2))
    if motion in ("left", "right", "up", "down"):
        axis = 0 if motion in ("left", "right") else 1
        sign = -1.0 if motion in ("left", "up") else 1.0
        step_xy[:, axis] = sign * rng.uniform(*config.speed) * active
        step_xy[:, 1 - axis] = rng.uniform(-config.jitter, config.jitter, steps)
    else:
        step_xy += rng.uniform(-config.drift, config.drift, 2)
        if motion in ("rot_cw", "rot_ccw"):
            # Image y points down, so a growing angle turns clockwise on screen.
            sign = 1.0 if motion == "rot_cw" else -1.0
            step_angle = sign * math.radians(rng.uniform(*config.rotation)) * active
        elif motion in ("zoom_in", "zoom_out"):
            sign = 1.0 if motion == "zoom_in" else -1.0
            step_log_scale = sign * math.log(rng.uniform(*config.zoom)) * active
        else:
            axis = 0 if motion == "osc_h" else 1
            amplitude, period = rng.uniform(*config.amplitude), rng.uniform(*config.period)
            phase = rng.uniform(0, 2 * math.pi) + 2 * math.pi / period * np.concatenate([[0], np.cumsum(active)])
            wobble[:, axis] = amplitude * (np.sin(phase) - np.sin(phase[0]))

    if config.distractor > 0:  # drawn only when asked, so that the data of every other setting stays the same
        step_xy += rng.normal(0.0, config.distractor, (steps, 2)) * ~active[:, None]

    def accumulate(step: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1,) + step.shape[1:]), np.cumsum(step, axis=0)])

    # Zoom paths are centred on the base scale so that zoom in and zoom out show the same range of sizes.
    log_scale = accumulate(step_log_scale)
    log_scale += math.log(rng.uniform(0.8, 1.2)) - (log_scale.min() + log_scale.max()) / 2
    angle = rng.uniform(0, 2 * math.pi) + accumulate(step_angle)
    path = accumulate(step_xy) + wobble
    n = config.size
    low, high = 0.2 * n - path.min(axis=0), 0.8 * n - path.max(axis=0)
    start = np.where(high >= low, rng.uniform(low, np.maximum(low, high)), (low + high) / 2)
    return path + start, angle, np.exp(log_scale)


def _sprite_matrix(centre: np.ndarray, angle: float, zoom: float, side: int) -> np.ndarray:
    """Affine map from sprite pixels to frame pixels: rotate and scale about the sprite's centre, then place it."""
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    c = (side - 1) / 2
    return np.float32([
        [cos, -sin, centre[0] - cos * c + sin * c],
        [sin, cos, centre[1] - sin * c - cos * c],
    ])


def _corrupt_and_degrade(rng: np.random.Generator, frames: np.ndarray, config: SynthConfig) -> str:
    """Camera nuisances in place: blurred frames, brightness and offset, sensor noise, dropped frames.

    Returns the corrupted frames as ``b3 d7`` (blurred frame 3, dropped frame 7).
    """
    count = int(rng.integers(config.corrupted_frames + 1))
    chosen = sorted(int(i) for i in rng.choice(config.frames, size=min(count, config.frames), replace=False))
    dropped = []
    marks = []
    for t in chosen:
        if rng.random() < 0.6:
            sigma = rng.uniform(1.5, 3.0) * config.size / 32
            frames[t] = cv2.GaussianBlur(frames[t], (0, 0), sigma)
            marks.append(f"b{t}")
        else:
            dropped.append(t)
            marks.append(f"d{t}")
    gain = rng.uniform(*config.brightness)
    offset = rng.uniform(-config.brightness_offset, config.brightness_offset)
    sigma = rng.uniform(*config.noise)
    frames *= gain
    frames += offset
    frames += rng.standard_normal(frames.shape, dtype=np.float32) * sigma
    for t in dropped:
        frames[t] = 20 + 10 * rng.standard_normal(frames[t].shape, dtype=np.float32)
    return " ".join(marks)


# ---------------------------------------------------------------- files


def _write_splits(files: SynthFiles, folder: Path, config: SynthConfig) -> dict[str, dict[str, int]]:
    """classInd.txt and three seeded train/test partitions in UCF-101's formats (trainlist lines carry labels)."""
    classes = config.class_names
    files.text(folder / "classInd.txt", "".join(f"{i + 1} {name}\n" for i, name in enumerate(classes)))
    per_class_train = min(config.videos_per_class - 1, max(1, round(config.train_fraction * config.videos_per_class)))
    sizes = {}
    for number in (1, 2, 3):
        train, test = [], []
        for label, name in enumerate(classes):
            order = np.random.default_rng([config.seed, _SPLIT_STREAM, number, label]).permutation(
                config.videos_per_class
            )
            chosen = set(order[:per_class_train].tolist())
            for index in range(config.videos_per_class):
                entry = f"{name}/{name}_{index + 1:04d}.avi"
                (train if index in chosen else test).append((entry, label))
        files.text(folder / f"trainlist0{number}.txt", "".join(f"{e} {label + 1}\n" for e, label in train))
        files.text(folder / f"testlist0{number}.txt", "".join(f"{e}\n" for e, _ in test))
        sizes[str(number)] = {"train": len(train), "test": len(test)}
    return sizes


def _facts_csv(facts: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(facts[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(facts)
    return buffer.getvalue()
