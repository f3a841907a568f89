"""The decoded-frame cache (``cache_mb``): an LRU whose accounted bytes are those of the arrays it holds and never
pass its limit; readers that read only the frames a clip or window samples; training with a cache smaller than its
data trains what training without one does; and the refusals of docs/errors.md."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, share_untrimmed, tiny_train_toml
from flow.store import FlowStore
from pipelines.core.checkpoint import SCNNExtras, load_checkpoint
from pipelines.data.frame_cache import MB, FrameCache
from pipelines.detection.clips import WindowClips
from pipelines.detection.scnn import NETWORKS, detector_config_of
from pipelines.detection.windows import clip_indices
from pipelines.inference.features import read_grid


def test_the_cache_stays_within_its_limit_and_drops_the_least_recently_used_frame(synth_store):
    store = FlowStore(synth_store.store)
    cache = FrameCache(1)
    used: list[tuple[str, str, int]] = []  # keys, the most recently used last
    for video in store.video_ids():
        count = store.num_frames(video)
        assert np.array_equal(cache.read(store, video, "rgb", np.arange(count)), store.frames(video))
        used += [(video, "rgb", k) for k in range(count)]
        held = cache.held()
        assert cache.nbytes == sum(frame.nbytes for _, frame in held) <= MB
        assert all(frame.base is None for _, frame in held)  # each owns its bytes: nbytes is what it occupies
        assert [key for key, _ in held] == used[-len(held):]
    assert len(held) < len(used)  # the store's frames are more than the limit holds: some were dropped

    oldest, second = held[0][0], held[1][0]
    cache.read(store, oldest[0], "rgb", [oldest[2]])  # held: now the most recently used
    dropped = used[0]
    cache.read(store, dropped[0], "rgb", [dropped[2]])  # read again: one frame must go, the least recently used
    keys = [key for key, _ in cache.held()]
    assert keys[-2:] == [oldest, dropped] and second not in keys and len(keys) == len(held)


def test_a_read_returns_the_frames_asked_in_their_order_and_keeps_only_those(synth_store):
    store = FlowStore(synth_store.store)
    video = store.video_ids()[0]
    cache, indices = FrameCache(1), [9, 3, 3, 0, 15]  # unsorted, repeated (a looped clip), with gaps
    for part, whole in (("rgb", store.frames(video)), ("flow", store.flow_codes(video))):
        assert np.array_equal(cache.read(store, video, part, indices), whole[indices])
        assert np.array_equal(cache.read(store, video, part, indices), whole[indices])  # from the cache
        assert np.array_equal(FrameCache(0).read(store, video, part, indices), whole[indices])
    assert sorted(key for key, _ in cache.held()) == sorted((video, part, k) for part in ("flow", "rgb")
                                                            for k in (0, 3, 9, 15))
    assert FrameCache(0).held() == []


def test_a_window_reads_only_the_frames_it_samples_and_its_clip_is_unchanged(untrimmed_store):
    store = FlowStore(untrimmed_store.store)
    video = store.video_ids()[0]
    cached = WindowClips(store, "rgb+flow", 8, 24, "unit", cache_mb=1)
    clip = cached.clip(video, 0, 32)
    sampled = clip_indices(0, 32, 8)
    whole_window = read_grid(store, video, "rgb+flow", np.arange(32), 24, cached.normalization)[sampled]
    assert torch.equal(clip, torch.from_numpy(np.ascontiguousarray(whole_window.transpose(3, 0, 1, 2))))
    assert torch.equal(clip, WindowClips(store, "rgb+flow", 8, 24, "unit").clip(video, 0, 32))
    assert {key for key, _ in cached.cache.held()} == {(video, part, int(k)) for part in ("rgb", "flow")
                                                       for k in sampled}


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_train_with_a_cache_smaller_than_its_clips_trains_as_without_one(synth_store, flow_teacher, tmp_path):
    """The mars stream reads RGB and flow: 16 grid positions of 5 KB for each of the 16+ training videos, more than
    1 MB, so frames are dropped and read again; the clips, and so the run, are those of a run without a cache."""
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_train_toml())
    store = FlowStore(synth_store.store)
    assert 16 * 16 * 5 * 32 * 32 > MB and len(store) >= 16 and store.frame_size(store.video_ids()[0]) == (32, 32)
    runs = {}
    for limit in ("1", "0"):
        out = tmp_path / f"cache-{limit}"
        run_cli("train", "--config", str(config), "--stream", "mars", "--teacher", str(flow_teacher), "--store",
                str(synth_store.store), "--out", str(out), "--cache-mb", limit, "--no-progress")
        runs[limit] = _metrics(out)
    assert len(runs["1"]) == 2 and runs["1"] == runs["0"]


DETECTOR = ["--frames", "4", "--size", "24", "--batch-size", "8", "--seed", "1", "--device", "cpu", "--no-progress"]


def test_train_detector_with_a_tiny_cache_trains_and_resumes_under_another_size(untrimmed_store, tmp_path):
    """The cache's size changes no clip (``test_a_window_reads_only...``), so it is not part of the run: a run
    started with a 1 MB cache continues without one."""
    root = share_untrimmed(untrimmed_store, tmp_path)
    config = root / "detector.toml"
    config.write_text("[detection.train]\nwindow_lengths = [8, 16]\nproposal_positive = 0.5\n")

    def train(epochs: int, limit: str):
        return run_cli("train-detector", "--store", str(root / "store"), "--annotations",
                       str(root / "data" / "annotations"), "--out", str(root / "out"), "--config", str(config),
                       "--epochs", str(epochs), "--cache-mb", limit, *DETECTOR)

    train(1, "1")
    second = train(2, "0")
    for network in ("proposal", "classification"):  # resumed: one more epoch each (localization then restarts
        assert f"{network} epoch 1/2" not in second.stdout  # from the extended classification network)
        assert f"{network} epoch 2/2" in second.stdout
    assert all(load_checkpoint(root / "out" / f"{network}.pth").epoch == 2 for network in NETWORKS)

    checkpoint = load_checkpoint(root / "out" / "localization.pth")  # as one written before cache_mb replaced it
    old = {k: v for k, v in checkpoint.detector.detector_config.items() if k != "cache_mb"}
    older = dataclasses.replace(checkpoint, detector=SCNNExtras("localization", {**old, "cache_videos": True}))
    assert detector_config_of(older) == dataclasses.replace(detector_config_of(checkpoint), cache_mb=1024)


# -- refusals (docs/errors.md) -------------------------------------------------------------------------------------
def _refused(*args: str) -> str:
    result = run_cli(*args, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_cache_too_small_for_one_clip_is_refused_before_training(synth_store, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_train_toml())
    line = _refused("train", "--config", str(config), "--stream", "flow", "--store", str(synth_store.store),
                    "--out", str(tmp_path / "out"), "--frames", "600", "--cache-mb", "1")
    assert line == ("error: --cache-mb: 1 MB holds less than one 600-frame flow clip (600 frames of 2048 bytes need "
                    "2 MB): raise it (cache_mb in a config table), or 0 turns the cache off")
    assert not (tmp_path / "out" / "last.pth").exists()


def test_a_cache_too_small_for_one_window_is_refused_before_training(untrimmed_store, tmp_path):
    root = share_untrimmed(untrimmed_store, tmp_path)
    line = _refused("train-detector", "--store", str(root / "store"), "--annotations",
                    str(root / "data" / "annotations"), "--out", str(root / "out"), "--frames", "1000",
                    "--cache-mb", "1", "--device", "cpu", "--no-progress")
    assert line.startswith("error: --cache-mb: 1 MB holds less than one 1000-frame flow window (1000 frames of "
                           "1152 bytes need 2 MB)")
    assert not (root / "out").exists()


def test_cache_mb_given_to_rc3d_is_refused(untrimmed_store, tmp_path):
    root = share_untrimmed(untrimmed_store, tmp_path)
    line = _refused("train-detector", "--detector", "rc3d", "--store", str(root / "store"), "--annotations",
                    str(root / "data" / "annotations"), "--out", str(root / "out"), "--cache-mb", "64")
    assert line == "error: --cache-mb is for S-CNN (R-C3D keeps no decoded frames: it reads one buffer at a time)"


@pytest.mark.parametrize("table", ["train", "detection.train"])
def test_a_config_with_cache_videos_names_its_replacement(table, tmp_path):
    config = tmp_path / "old.toml"
    config.write_text(f"[{table}]\ncache_videos = true\n")
    command = ["train", "--stream", "rgb"] if table == "train" else ["train-detector", "--annotations", str(tmp_path)]
    line = _refused(*command, "--store", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(config))
    assert line.startswith(f"error: {config}: ") and line.endswith(
        "'cache_videos' was replaced by cache_mb, the MB of decoded frames kept in memory (0: none)")


def test_rgb_and_flow_grids_resize_to_another_size_together(untrimmed_store):
    store = FlowStore(untrimmed_store.store)
    video, indices = store.video_ids()[0], np.arange(4, 12)
    normalization = WindowClips(store, "rgb+flow", 8, 24, "unit").normalization
    side = store.frame_size(video)[0] - 6  # not the stored size: every frame is resized
    both = read_grid(store, video, "rgb+flow", indices, side, normalization)
    apart = [read_grid(store, video, kind, indices, side, normalization) for kind in ("rgb", "flow")]
    assert both.shape == (8, side, side, 5)
    assert np.array_equal(both, np.concatenate(apart, axis=-1))
