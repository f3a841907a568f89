"""Untrimmed synthetic data: deterministic, both ground-truth formats agree, extract-flow and the store serve it."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import run_cli
from pipelines.data.annotations import read_annotations
from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed, render_video

SMALL = dict(classes=2, val_videos=2, test_videos=1, frames=(40, 56), action_frames=(8, 14), idle_frames=(0, 3),
             instances=(1, 2), size=24, seed=4)


@pytest.fixture(scope="module")
def untrimmed(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrimmed")
    run_cli("synth", "--untrimmed", str(root / "data"), "--classes", "2", "--size", "24", "--seed", "4")
    generate_untrimmed(root / "small", UntrimmedConfig(**SMALL))
    run_cli("extract-flow", str(root / "small" / "videos"), "--out", str(root / "store"), "--short-side", "0",
            "--preset", "cheap", "--workers", "1", "--no-progress")
    return root


def _digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_files(untrimmed, tmp_path):
    generate_untrimmed(tmp_path / "again", UntrimmedConfig(**SMALL))
    assert _digest(tmp_path / "again") == _digest(untrimmed / "small")
    other = render_video(UntrimmedConfig(**{**SMALL, "seed": 5}), "val", 0)[0]
    assert not np.array_equal(other[:10], render_video(UntrimmedConfig(**SMALL), "val", 0)[0][:10])


def test_cli_writes_both_formats_that_agree(untrimmed):
    data = untrimmed / "data"
    assert json.loads((data / "synth.json").read_text())["classes"] == ["left", "right"]
    for subset in ("val", "test"):
        folder, document = read_annotations(data / "annotations", subset), read_annotations(
            data / "annotations.json", subset)
        assert folder.classes == document.classes == ["left", "right"]
        for label in folder.classes:
            a, b = folder.ground_truth(label), document.ground_truth(label)
            assert a.keys() == b.keys() and all(np.allclose(a[v], b[v]) for v in a)


def test_instances_fit_and_objects_move_only_in_them():
    config = UntrimmedConfig(**SMALL)
    frames, objects = render_video(config, "test", 0)
    assert 40 <= len(frames) <= 56 and frames.dtype == np.uint8 and frames.shape[1:] == (24, 24, 3)
    actions = sorted(o.active for o in objects if o.label is not None)
    assert actions and all(a[1] <= b[0] for a, b in zip(actions, actions[1:]))  # no overlap
    assert all(8 <= stop - start <= 14 for start, stop in actions)


def test_store_serves_frame_ranges_of_untrimmed_videos(untrimmed):
    from flow.store import FlowStore

    with FlowStore(untrimmed / "store") as store:
        assert store.video_ids() == ["video_test_0001", "video_val_0001", "video_val_0002"]
        video = "video_val_0001"
        count = store.num_frames(video)
        assert 40 <= count <= 56 and store.attrs(video)["fps"] == 25.0
        assert store.frames(video, 10, 26).shape == (16, 24, 24, 3)
        assert store.flow(video, 10, 26).shape == (16, 24, 24, 2)
        assert np.array_equal(store.frames(video, 10, 26), store.frames(video)[10:26])
        read_annotations(untrimmed / "small" / "annotations", "val").check_videos(store)
