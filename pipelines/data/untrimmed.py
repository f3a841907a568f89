"""Untrimmed synthetic videos for detection: a few action instances among background that moves but is no class.

Each video is a panning camera over clutter. Its action instances are objects that appear, idle a little, run a
class motion of the trimmed generator (``pipelines.data.synth``) for a random number of frames, and idle again before
they vanish; only the class motion is the ground truth, so a detector must find when the motion runs, not when an
object is in view. Distractor objects drift without any class motion, and the camera pans throughout. Some
instances are written as ``Ambiguous`` (as THUMOS'14 marks unclear ones). Every video draws from its own random
stream seeded by (seed, subset, index): the same seed gives the same files in any order of generation.

Written: ``videos/<video>.avi``, the ground truth as a THUMOS'14 folder (``annotations/<Class>_<subset>.txt``,
``Ambiguous_<subset>.txt``, ``detclasslist.txt``) and as an ActivityNet-style ``annotations.json``, and
``synth.json`` last (its presence means the dataset is complete; it lists every file written, so a rerun into the
same folder replaces exactly those: ``pipelines.data.synth_files``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from pipelines.data.synth import (
    ALL_CLASSES, SynthConfig, _background, _corrupt_and_degrade, _pan_offsets, _sprite, _sprite_matrix, _trajectory,
)
from pipelines.data.synth_files import SynthFiles

UNTRIMMED_VERSION = 1
SUBSETS = {"val": "validation", "test": "testing"}  # THUMOS'14 trains detectors on val and reports on test


@dataclass(frozen=True)
class UntrimmedConfig:
    """Parameters of the untrimmed generator; the trimmed generator's settings draw each object and its motion."""

    classes: int = 4  # the first ``classes`` synthetic motions (left, right, up, down, ...)
    val_videos: int = 24  # training videos (THUMOS'14's "val")
    test_videos: int = 12
    frames: tuple[int, int] = (120, 240)  # video length, frames
    instances: tuple[int, int] = (0, 4)  # action instances per video
    action_frames: tuple[int, int] = (16, 48)  # frames during which the class motion runs
    idle_frames: tuple[int, int] = (0, 12)  # the object is in view, still, this long before and after
    distractors: tuple[int, int] = (0, 2)  # drifting objects per video that do no class motion
    ambiguous_probability: float = 0.1
    size: int = 32
    seed: int = 0
    pan: float = 0.4  # px per frame, largest camera pan
    bg_saturation: float = 0.7
    cue_probability: float = 0.6
    fps: float = 25.0

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(ALL_CLASSES):
            raise ValueError(f"classes must be between 2 and {len(ALL_CLASSES)}, not {self.classes}")
        if min(self.val_videos, self.test_videos) < 1:
            raise ValueError("val_videos and test_videos must be at least 1")
        if self.size < 8 or not self.fps > 0:
            raise ValueError(f"size must be at least 8 and fps greater than 0, got {self.size} and {self.fps}")
        low, high = self.frames
        if not 2 <= low <= high or self.action_frames[0] < 2 or self.instances[0] < 0:
            raise ValueError("frames must be a range of at least 2, action_frames at least 2, instances >= 0")
        if self.action_frames[1] + 2 * self.idle_frames[1] > low:
            raise ValueError(f"an instance of {self.action_frames[1]} frames (plus idle) does not fit in {low} frames")

    @property
    def class_names(self) -> list[str]:
        return list(ALL_CLASSES[: self.classes])

    def trimmed(self, frames: int) -> SynthConfig:
        """The trimmed generator's settings for objects and camera, at this video's length."""
        even = self.classes + self.classes % 2
        return SynthConfig(classes=even, frames=frames, size=self.size, seed=self.seed, pan=self.pan,
                           bg_saturation=self.bg_saturation, cue_probability=self.cue_probability,
                           corrupted_frames=0, fps=self.fps)


@dataclass(frozen=True)
class Instance:
    """One object in a video: in view ``shown``, class motion during ``active`` (frames), label or None."""

    shown: tuple[int, int]
    active: tuple[int, int]
    label: int | None  # None: a distractor
    ambiguous: bool = False


def generate_untrimmed(out_dir: str | Path, config: UntrimmedConfig = UntrimmedConfig()) -> dict:
    """Write the videos and both ground-truth formats to ``out_dir``; returns ``synth.json``'s content."""
    out = Path(out_dir)
    files = SynthFiles(out)
    database = {}
    for subset, count in (("val", config.val_videos), ("test", config.test_videos)):
        for index in range(count):
            video = f"video_{subset}_{index + 1:04d}"
            frames, instances = render_video(config, subset, index)
            files.video(out / "videos" / f"{video}.avi", frames, config.fps)
            database[video] = _json_entry(config, subset, len(frames), instances)
    _write_annotations(files, out, config, database)
    info = {"format": "mars-sta-synth-untrimmed", "generator_version": UNTRIMMED_VERSION, "config": asdict(config),
            "classes": config.class_names, "videos": len(database),
            "instances": sum(len(entry["annotations"]) for entry in database.values())}
    return files.finish(info)


def render_video(config: UntrimmedConfig, subset: str, index: int) -> tuple[np.ndarray, list[Instance]]:
    """One untrimmed video as uint8 (T, size, size, 3) RGB, and its objects (instances and distractors)."""
    rng = np.random.default_rng([config.seed, list(SUBSETS).index(subset), index])
    length = int(rng.integers(config.frames[0], config.frames[1] + 1))
    trimmed = config.trimmed(length)
    n = config.size
    instances = _place_instances(rng, config, length)
    # A canvas wide enough that the view never leaves it, whatever the pan over the whole video.
    half = int(math.ceil((n + config.pan * length) / 2)) + 1
    canvas = _background(rng, half, config.bg_saturation)
    pan = _pan_offsets(rng, 2 * half - n, length - 1, config.pan)
    frames = np.empty((length, n, n, 3), np.float32)
    for t in range(length):
        shift = np.float32([[1, 0, -pan[t, 0]], [0, 1, -pan[t, 1]]])
        frames[t] = cv2.warpAffine(canvas, shift, (n, n), flags=cv2.INTER_LINEAR)
    for instance in instances:
        _draw_object(rng, trimmed, instance, frames)
    _corrupt_and_degrade(rng, frames, trimmed)  # brightness, offset and sensor noise of the whole video
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), instances


def _place_instances(rng: np.random.Generator, config: UntrimmedConfig, length: int) -> list[Instance]:
    """Non-overlapping action instances at random times (fewer when the video is full), then distractors anywhere."""
    objects: list[Instance] = []
    taken = np.zeros(length, bool)
    for _ in range(int(rng.integers(config.instances[0], config.instances[1] + 1))):
        action = int(rng.integers(config.action_frames[0], config.action_frames[1] + 1))
        before, after = (int(v) for v in rng.integers(config.idle_frames[0], config.idle_frames[1] + 1, 2))
        span = before + action + after
        starts = [s for s in range(length - span + 1) if not taken[s:s + span].any()]
        if not starts:
            continue
        start = int(rng.choice(starts))
        taken[start:start + span] = True
        label = int(rng.integers(config.classes))
        objects.append(Instance((start, start + span), (start + before, start + before + action), label,
                                bool(rng.random() < config.ambiguous_probability)))
    for _ in range(int(rng.integers(config.distractors[0], config.distractors[1] + 1))):
        span = int(rng.integers(config.action_frames[0], min(length, 3 * config.action_frames[1]) + 1))
        start = int(rng.integers(length - span + 1))
        objects.append(Instance((start, start + span), (start, start), None))
    return objects


def _draw_object(rng: np.random.Generator, config: SynthConfig, instance: Instance, frames: np.ndarray) -> None:
    """Composite one object onto ``frames`` in place: the trimmed generator's sprite and trajectory."""
    first, stop = instance.shown
    label = instance.label if instance.label is not None else int(rng.integers(config.classes))
    hue_pair = label // 2 if rng.random() < config.cue_probability else int(rng.integers(config.classes // 2))
    hue = (36 * hue_pair + rng.uniform(-config.hue_jitter, config.hue_jitter)) % 180
    radius = config.size * rng.uniform(*config.object_radius)
    sprite, sprite_radius = _sprite(rng, hue, radius)
    active = np.zeros(stop - first - 1, bool)
    active[instance.active[0] - first:instance.active[1] - first - 1] = True
    motion = replace(config, frames=stop - first)
    centre, angle, scale = _trajectory(rng, motion, ALL_CLASSES[label], active)
    n = config.size
    for k, t in enumerate(range(first, stop)):
        matrix = _sprite_matrix(centre[k], angle[k], scale[k] * radius / sprite_radius, sprite.shape[0])
        layer = cv2.warpAffine(sprite, matrix, (n, n), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
        frames[t] = frames[t] * (1 - layer[..., 3:]) + layer[..., :3]


# ---------------------------------------------------------------- ground truth


def _json_entry(config: UntrimmedConfig, subset: str, length: int, instances: list[Instance]) -> dict:
    """The ActivityNet-style entry of one video; an instance spans its class motion, in seconds."""
    names = config.class_names
    annotations = [{"segment": [round(i.active[0] / config.fps, 2), round(i.active[1] / config.fps, 2)],
                    "label": "Ambiguous" if i.ambiguous else names[i.label]}
                   for i in sorted(instances, key=lambda i: i.active) if i.label is not None]
    return {"subset": SUBSETS[subset], "duration": round(length / config.fps, 2), "annotations": annotations}


def _write_annotations(files: SynthFiles, out: Path, config: UntrimmedConfig, database: dict) -> None:
    """The same ground truth as a THUMOS'14 folder and as an ActivityNet-style JSON."""
    folder = out / "annotations"
    lines: dict[str, list[str]] = {f"{label}_{subset}.txt": [] for subset in SUBSETS
                                   for label in [*config.class_names, "Ambiguous"]}
    for video, entry in database.items():
        subset = next(short for short, long in SUBSETS.items() if long == entry["subset"])
        for item in entry["annotations"]:
            start, end = item["segment"]
            lines[f"{item['label']}_{subset}.txt"].append(f"{video} {start:.2f} {end:.2f}\n")
    for name, rows in lines.items():
        files.text(folder / name, "".join(rows))
    files.text(folder / "detclasslist.txt", "".join(f"{i + 1} {n}\n" for i, n in enumerate(config.class_names)))
    taxonomy = [{"nodeName": name, "parentName": "Root", "nodeId": i + 1, "parentId": 0}
                for i, name in enumerate(config.class_names)]
    payload = {"version": "mars-sta synthetic untrimmed", "taxonomy": taxonomy, "database": database}
    files.text(out / "annotations.json", json.dumps(payload, indent=1) + "\n")
