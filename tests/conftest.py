"""Shared, session-scoped data: small synthetic datasets (trimmed and untrimmed), their flow stores and one tiny trained
Flow teacher; and helpers that run the real command line."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# The settings tests train with: the demo's recipe, shrunk to seconds.
TINY_TRAIN = dict(arch="tiny_resnet", frames=16, size=32, epochs=2, batch_size=8, optimizer="adamw", lr=0.002,
                  weight_decay=0.01, scheduler="none", normalization="unit", crop_scales=[1.0], workers=0,
                  val_fraction=0.2, seed=0)


def tiny_train_toml() -> str:
    """TINY_TRAIN as a ``[train]`` TOML table."""
    def value(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(str(x) for x in v) + "]"
        return str(v)
    return "[train]\n" + "".join(f"{k} = {value(v)}\n" for k, v in TINY_TRAIN.items())


def write_video(path, frames, fps=25.0):
    """Frames (T, H, W, 3) BGR uint8 to an MJPG .avi."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def immutable_folder(path: Path) -> Path | None:
    """A folder nobody can write into, root included (``chattr +i``), holding ``kept.txt``; None where the file
    system refuses. The caller runs ``chattr -i`` on it when done."""
    path.mkdir()
    (path / "kept.txt").write_text("written before\n")
    made = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    return path if made else None


def run_cli(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                            env=env, cwd=kwargs.pop("cwd", REPO), **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"mars-sta {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory) -> SimpleNamespace:
    """4 synthetic classes x 6 videos of 17 frames at 32 px, extracted with the cheap TV-L1 preset."""
    from flow.extract import ExtractConfig, extract_flow
    from pipelines.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root / "data", SynthConfig(classes=4, videos_per_class=6, frames=17, size=32, seed=3))
    summary = extract_flow(ExtractConfig(short_side=0, preset="cheap", workers=2), root / "data" / "videos",
                           root / "store", progress=False)
    assert summary.extracted == 24, summary.failures
    return SimpleNamespace(root=root, videos=root / "data" / "videos", splits=root / "data" / "splits",
                           store=root / "store")


# The untrimmed videos the detection tests train and detect on: 3 val and 2 test videos of 40-56 frames at 24 px.
UNTRIMMED = dict(classes=2, val_videos=3, test_videos=2, frames=(40, 56), action_frames=(8, 16), idle_frames=(0, 3),
                 instances=(1, 2), size=24, seed=2)


@pytest.fixture(scope="session")
def untrimmed_store(tmp_path_factory) -> SimpleNamespace:
    """UNTRIMMED videos (``data/``: videos, THUMOS'14 ``annotations/``, ``annotations.json``) and their flow store,
    extracted with the cheap TV-L1 preset. Shared by every detection test: read it, or copy it to change it."""
    from flow.extract import ExtractConfig, extract_flow
    from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed

    root = tmp_path_factory.mktemp("untrimmed")
    generate_untrimmed(root / "data", UntrimmedConfig(**UNTRIMMED))
    summary = extract_flow(ExtractConfig(short_side=0, preset="cheap", workers=1), root / "data" / "videos",
                           root / "store", progress=False)
    assert summary.extracted == 5, summary.failures
    data = root / "data"
    return SimpleNamespace(root=root, data=data, store=root / "store", annotations=data / "annotations",
                           annotations_json=data / "annotations.json")


def share_untrimmed(untrimmed_store: SimpleNamespace, root: Path) -> Path:
    """``root/data`` and ``root/store`` as links to the shared untrimmed videos and store; returns ``root``."""
    for name in ("data", "store"):
        (root / name).symlink_to(getattr(untrimmed_store, name), target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def flow_teacher(synth_store, tmp_path_factory) -> Path:
    """A tiny Flow stream trained for two epochs: the teacher every MARS test distils from."""
    from pipelines.stages.train import TrainConfig, TrainPaths, train

    out = tmp_path_factory.mktemp("teacher")
    config = TrainConfig(stream="flow", **TINY_TRAIN)
    summary = train(config, TrainPaths(store=synth_store.store, out=out))
    return Path(summary["best"])


@pytest.fixture
def tiny_config():
    """A TrainConfig factory with the tiny settings."""
    from pipelines.stages.train import TrainConfig

    def make(**changes):
        return dataclasses.replace(TrainConfig(**TINY_TRAIN), **changes)
    return make
