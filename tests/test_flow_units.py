"""Quantisation, TV-L1 presets, resizing, frame-rate resampling, video discovery and sharding."""
from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from conftest import write_video

from cli import flowcmds
from flow.errors import InputError
from flow.extract import ExtractConfig, VideoJob, extract_video
from flow.quantize import QUANTIZATIONS, dequantize, quantize, step
from flow.shard import parse_shard, resolve_shard, shard_from_environment
from flow.tvl1 import BACKENDS, OPENCV_DEFAULTS, PRESETS, preset_params
from flow.video import VideoReader, find_videos, output_size

BOUND = 20.0


# -- quantisation ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_flow():
    return np.random.default_rng(0).uniform(-25, 25, size=(200_000, 2)).astype(np.float32)


def test_round_codes_read_back_within_half_a_step_without_bias(random_flow):
    clipped = np.clip(random_flow, -BOUND, BOUND)
    error = dequantize(quantize(random_flow, BOUND, "round"), BOUND, "round") - clipped
    assert np.abs(error).max() <= step(BOUND) / 2 + 1e-5
    assert abs(error.mean()) < 0.002


def test_truncated_codes_are_biased_by_half_a_step_unless_read_as_truncated(random_flow):
    inside = random_flow[np.abs(random_flow) < BOUND]
    codes = quantize(inside, BOUND, "truncate")
    read_as_rounded = dequantize(codes, BOUND, "round") - inside  # what reading MARS's codes naively gives
    assert read_as_rounded.mean() == pytest.approx(-step(BOUND) / 2, abs=0.003)  # −0.078 px
    assert read_as_rounded.max() <= 1e-5
    read_consistently = dequantize(codes, BOUND, "truncate") - inside
    assert abs(read_consistently.mean()) < 0.002
    assert np.abs(read_consistently).max() <= step(BOUND) / 2 + 1e-5


def test_quantisation_clips_at_the_bound_and_maps_it_to_the_end_codes():
    flow = np.array([-100.0, -BOUND, 0.0, BOUND, 100.0], np.float32)
    for method in QUANTIZATIONS:
        codes = quantize(flow, BOUND, method)
        assert codes[0] == codes[1] == 0 and codes[3] == codes[4] == 255
        assert dequantize(codes, BOUND, method)[[0, 4]].tolist() == pytest.approx([-BOUND, BOUND], abs=step(BOUND))
    assert quantize(flow, BOUND, "round")[2] == 128  # 127.5 rounds to even, as cvRound does


# -- TV-L1 -------------------------------------------------------------------------------------------------------
def test_default_preset_is_what_opencv_creates_without_arguments():
    created = cv2.optflow.DualTVL1OpticalFlow_create()
    getters = {"tau": "Tau", "lambda_": "Lambda", "theta": "Theta", "nscales": "ScalesNumber",
               "warps": "WarpingsNumber", "epsilon": "Epsilon", "innnerIterations": "InnerIterations",
               "outerIterations": "OuterIterations", "scaleStep": "ScaleStep", "gamma": "Gamma",
               "medianFiltering": "MedianFiltering", "useInitialFlow": "UseInitialFlow"}
    assert set(getters) == set(OPENCV_DEFAULTS)
    for name, getter in getters.items():
        assert getattr(created, f"get{getter}")() == pytest.approx(PRESETS["default"][name]), name
    assert preset_params("cheap")["nscales"] == 2 and preset_params("mid")["warps"] == 2


def test_cli_choices_match_the_library():
    assert set(flowcmds.PRESET_NAMES) == set(PRESETS)
    assert set(flowcmds.QUANTIZATION_NAMES) == set(QUANTIZATIONS)
    assert set(flowcmds.BACKEND_NAMES) == set(BACKENDS)


def _panning_clip(width, height, frames, shift, seed):
    texture = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 256, (height, width + shift * frames, 3),
                                                                       dtype=np.uint8), (5, 5), 0)
    return np.stack([texture[:, shift * t: shift * t + width] for t in range(frames)])


def test_a_tiny_video_does_not_change_the_flow_of_the_next_one(tmp_path):
    """OpenCV's calc() lowers nscales for tiny frames and keeps it; each video must get its own solver."""
    tiny = write_video(tmp_path / "tiny.avi", _panning_clip(20, 20, 3, 1, seed=1))
    large = write_video(tmp_path / "large.avi", _panning_clip(96, 72, 3, 3, seed=2))
    params = preset_params("default")

    def job(path, name):
        return VideoJob(name, str(path), path.name, str(tmp_path / "store" / "videos" / f"{name}.h5"), 0, None,
                        BOUND, "round", params, 95)

    assert extract_video(job(tiny, "tiny")).failure is None
    assert extract_video(job(large, "large")).failure is None
    with h5py.File(tmp_path / "store" / "videos" / "large.h5") as stored_file:
        stored = stored_file["flow"][:]

    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in VideoReader(large, 0)]
    fresh = [quantize(cv2.optflow.DualTVL1OpticalFlow_create(**params).calc(a, b, None), BOUND)
             for a, b in zip(gray, gray[1:])]
    np.testing.assert_array_equal(stored, np.stack(fresh))

    reused = cv2.optflow.DualTVL1OpticalFlow_create(**params)
    tiny_gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in VideoReader(tiny, 0)]
    reused.calc(tiny_gray[0], tiny_gray[1], None)
    assert reused.getScalesNumber() < params["nscales"]  # the pitfall is real in this OpenCV
    stale = quantize(reused.calc(gray[0], gray[1], None), BOUND)
    assert not np.array_equal(stale, fresh[0])


# -- decoding ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, short_side, expected", [
    ((320, 240), 256, (320, 240)),  # never upscale
    ((640, 480), 256, (341, 256)),
    ((480, 640), 256, (256, 341)),
    ((640, 480), 0, (640, 480)),
    ((40, 30), 20, (27, 20)),
])
def test_output_size_scales_the_short_side_down_only(size, short_side, expected):
    assert output_size(*size, short_side) == expected


def test_resampling_keeps_the_source_frame_nearest_to_each_output_time(tmp_path):
    frames = np.stack([np.full((30, 40, 3), 10 * t, np.uint8) for t in range(20)])
    path = write_video(tmp_path / "ramp.avi", frames, fps=25)
    reader = VideoReader(path, short_side=20, fps=10)
    decoded = list(reader)
    assert reader.size == (27, 20) and decoded[0].shape == (20, 27, 3)
    assert reader.fps == 10 and reader.native_fps == 25
    brightness = [round(float(f.mean()) / 10) for f in decoded]
    assert brightness == [0, 3, 5, 8, 10, 13, 15, 18]
    assert len(list(VideoReader(path, short_side=0))) == 20


# -- finding videos ----------------------------------------------------------------------------------------------
def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_search_is_recursive_by_extension_and_skips_hidden_files(tmp_path):
    root = tmp_path / "videos"
    for name in ["Biking/v_b1.avi", "Biking/v_b2.MP4", "Diving/sub/v_d1.mkv", "Diving/notes.txt",
                 ".cache/v_x.avi", "Diving/.v_hidden.avi"]:
        _touch(root / name)
    found = find_videos(root)
    assert found.root == root.resolve()
    assert [e.video_id for e in found.entries] == ["Biking/v_b1", "Biking/v_b2", "Diving/sub/v_d1"]


def test_list_file_paths_are_relative_to_its_folder_and_labels_are_ignored(tmp_path):
    root = tmp_path / "data"
    _touch(root / "A" / "one.avi")
    _touch(root / "B" / "two words.avi")
    outside = _touch(tmp_path / "elsewhere" / "C" / "three.avi")
    listing = root / "list.txt"
    listing.write_text("# comment\nA/one.avi 1\n\nB/two words.avi\n")
    found = find_videos(listing)
    assert found.root == root.resolve()
    assert [e.video_id for e in found.entries] == ["A/one", "B/two words"]
    listing.write_text(f"A/one.avi\n{outside}\n")
    found = find_videos(listing)
    assert found.root == tmp_path.resolve()
    assert [e.video_id for e in found.entries] == ["data/A/one", "elsewhere/C/three"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no videos found"),
    (lambda p: (p / "l.txt").write_text("a.avi\nnot-a-video.txt\n") and p / "l.txt", "line 2"),
    (lambda p: (_touch(p / "d" / "x.avi"), _touch(p / "d" / "x.mp4")) and p / "d", "two videos have the id"),
])
def test_bad_video_sources_raise_one_line_input_errors(tmp_path, setup, message):
    with pytest.raises(InputError, match=message) as caught:
        find_videos(setup(tmp_path))
    assert "\n" not in str(caught.value)


# -- sharding and config -----------------------------------------------------------------------------------------
def test_shards_are_disjoint_and_cover_the_sorted_list():
    items = list(range(11))
    shards = [parse_shard(f"{i}/3").select(items) for i in range(3)]
    assert sorted(sum(shards, [])) == items and shards[1] == [1, 4, 7, 10]
    for bad in ["3/3", "a/2", "1", "-1/2"]:
        with pytest.raises(InputError):
            parse_shard(bad)


def test_shard_comes_from_the_option_then_torchrun_then_slurm():
    torchrun = {"RANK": "2", "WORLD_SIZE": "4"}
    slurm = {"SLURM_ARRAY_TASK_ID": "13", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert str(shard_from_environment(torchrun)) == "2/4"
    assert str(shard_from_environment(slurm)) == "3/4"
    stepped = {**slurm, "SLURM_ARRAY_TASK_ID": "16", "SLURM_ARRAY_TASK_STEP": "2"}
    assert str(shard_from_environment(stepped)) == "3/4"
    assert str(resolve_shard("1/2", {**torchrun, **slurm})) == "1/2"
    assert str(resolve_shard(None, {**torchrun, **slurm})) == "2/4"
    assert resolve_shard(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert resolve_shard(None, {}) is None


def test_extract_config_rejects_bad_values_in_one_line():
    with pytest.raises(InputError, match="bound must be > 0.*preset must be one of"):
        ExtractConfig(bound=0, preset="fast")
    with pytest.raises(InputError, match="--shard"):
        ExtractConfig(shard="2/2")
    assert ExtractConfig().preprocessing()["tvl1"] == OPENCV_DEFAULTS


def test_frames_of_an_rgb_only_store_decode_without_any_flow():
    # an import-frames store of RGB only records quantization "none": nothing may try to quantise
    from flow.decode import FrameCoding, stored_frames

    coding = FrameCoding.of_store({"bound": 20.0, "quantization": "none", "tvl1_backend": "torch",
                                   "tvl1_device": "cuda", "jpeg_quality": 95}, flow=False)
    frames = [np.full((8, 8, 3), value, np.uint8) for value in (10, 20, 30)]
    stored = list(stored_frames(frames, coding, flow=False))
    assert [len(s.flow_codes) for s in stored] == [0, 0, 0] and all(s.jpeg is not None for s in stored)
