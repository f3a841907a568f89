"""The synthetic dataset: real videos, UCF-101-style splits, reproducible bytes, and motions that match the names."""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.data.splits import load_split
from pipelines.data.synth import (ALL_CLASSES, SynthConfig, generate, mirror_label, mirror_maps, motion_windows,
                                  render_clip)

SMALL = SynthConfig(classes=4, videos_per_class=8, frames=9, size=32, seed=5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, SMALL)
    return out


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes(dataset, tmp_path):
    again = tmp_path / "again"
    generate(again, SMALL)
    first, second = all_files(dataset), all_files(again)
    assert len(first) == 4 * 8 + 7 + 2  # videos, split files, clips.csv and synth.json
    assert first == second
    other = tmp_path / "other"
    generate(other, dataclasses.replace(SMALL, seed=6))
    assert all_files(other)["videos/left/left_0001.avi"] != first["videos/left/left_0001.avi"]


def test_videos_are_real_mjpg_files(dataset):
    capture = cv2.VideoCapture(str(dataset / "videos" / "down" / "down_0008.avi"))
    assert capture.isOpened()
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == SMALL.frames and frames[0].shape == (32, 32, 3)
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    assert fourcc.to_bytes(4, "little") == b"MJPG"


def test_three_splits_partition_every_class(dataset):
    videos = {f"{p.parent.name}/{p.stem}" for p in (dataset / "videos").rglob("*.avi")}
    trains = []
    for number in (1, 2, 3):
        split = load_split(dataset / "splits", number)  # the reader also refuses a video in both lists
        assert split.classes == ["left", "right", "up", "down"]
        assert {v for v, _ in split.train} | {v for v, _ in split.test} == videos
        assert all(split.classes[label] == video.split("/")[0] for video, label in split.train + split.test)
        assert [sum(1 for _, label in split.train if label == c) for c in range(4)] == [5, 5, 5, 5]
        trains.append({v for v, _ in split.train})
    assert trains[0] != trains[1] != trains[2] != trains[0]


def test_synth_json_records_config_and_mirrors(dataset):
    info = json.loads((dataset / "synth.json").read_text())
    assert info["config"] == json.loads(json.dumps(dataclasses.asdict(SMALL)))
    assert info["hflip"] == {"left": "right", "right": "left", "up": "up", "down": "down"}
    assert info["vflip"] == {"left": "left", "right": "right", "up": "down", "down": "up"}
    assert mirror_maps(info["classes"], info) == ({0: 1, 1: 0, 2: 2, 3: 3}, {0: 0, 1: 1, 2: 3, 3: 2})
    assert mirror_label("rot_cw", horizontal=True) == mirror_label("rot_cw", horizontal=False) == "rot_ccw"
    assert mirror_label("zoom_in", horizontal=True) == "zoom_in" and mirror_label("osc_h", False) == "osc_h"


def test_cue_probability_decides_how_often_the_pair_colour_is_worn(tmp_path):
    for q, expected in ((1.0, {"1"}), (0.0, {"0"})):
        out = tmp_path / f"q{q}"
        generate(out, dataclasses.replace(SMALL, videos_per_class=3, frames=3, cue_probability=q))
        with open(out / "clips.csv", newline="") as handle:
            assert {row["cue"] for row in csv.DictReader(handle)} == expected


QUIET = dict(pan=0.0, noise=(0.0, 0.0), corrupted_frames=0, brightness=(1.0, 1.0), brightness_offset=0.0)


def flow_moments(clip: np.ndarray) -> np.ndarray:
    """Mean (u, v, curl, divergence) of the moving pixels' Farneback flow; image y points down."""
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clip]
    ys, xs = np.mgrid[0 : clip.shape[1], 0 : clip.shape[2]]
    moments = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 7, 3, 5, 1.1, 0)
        moving = np.hypot(flow[..., 0], flow[..., 1]) > 0.3
        if moving.sum() < 3:
            continue
        u, v = flow[..., 0][moving], flow[..., 1][moving]
        dx, dy = xs[moving] - xs[moving].mean(), ys[moving] - ys[moving].mean()
        moments.append((u.mean(), v.mean(), np.mean(dx * v - dy * u), np.mean(dx * u + dy * v)))
    return np.mean(moments, axis=0)


def test_each_class_moves_the_way_its_name_says():
    config = SynthConfig(**QUIET)
    expected = {  # (moment index, sign)
        "left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1),
        "rot_cw": (2, 1), "rot_ccw": (2, -1), "zoom_in": (3, 1), "zoom_out": (3, -1),
    }
    for name, (which, sign) in expected.items():
        label = ALL_CLASSES.index(name)
        mean = np.mean([flow_moments(render_clip(config, label, i)[0]) for i in range(6)], axis=0)
        assert np.sign(mean[which]) == sign, (name, mean)


def test_motion_window_keeps_the_object_still_outside_it():
    config = SynthConfig(frames=17, motion_window=5, jitter=0.0, **QUIET)
    clip, fact = render_clip(config, ALL_CLASSES.index("right"), 3)
    assert fact["window_stop"] - fact["window_start"] == 5
    changed = [bool(np.any(clip[t] != clip[t + 1])) for t in range(16)]
    assert changed == [fact["window_start"] <= t < fact["window_stop"] for t in range(16)]


def test_motion_windows_are_read_back_only_where_the_data_has_them(dataset, tmp_path):
    assert motion_windows(dataset) == {} and motion_windows(tmp_path) == {}  # full-clip motion; no dataset
    windowed = dataclasses.replace(SMALL, videos_per_class=2, motion_window=3)
    generate(tmp_path / "data", windowed)
    found = motion_windows(tmp_path / "data")
    assert len(found) == 8 and all(stop - start == 3 and 0 <= start <= 5 for start, stop in found.values())
    _, fact = render_clip(windowed, ALL_CLASSES.index("up"), 1)
    assert found[f"up/up_0002"] == (fact["window_start"], fact["window_stop"])


def test_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    from flow.errors import InputError

    with pytest.raises(InputError, match="not a synthetic dataset"):
        generate(tmp_path, SMALL)


def test_cli_synth(tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run(
        [sys.executable, "-m", "cli", "synth", str(out), "--classes", "2", "--videos-per-class", "3", "--frames", "5",
         "--seed", "2", "--motion-window", "2"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote 6 videos of 2 classes" in run.stdout
    info = json.loads((out / "synth.json").read_text())
    assert info["config"]["seed"] == 2 and info["config"]["motion_window"] == 2
    assert len(list((out / "videos").rglob("*.avi"))) == 6
    (out / "foreign.txt").write_text("x")
    refused = subprocess.run([sys.executable, "-m", "cli", "synth", str(out)], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: {out}: folder is not empty")


def test_cli_defaults_match_the_config():
    from cli.data import _DEFAULTS

    defaults = dataclasses.asdict(SynthConfig())
    assert _DEFAULTS == {key: defaults[key] for key in _DEFAULTS}
