"""The PyTorch TV-L1 against OpenCV's DualTVL1OpticalFlow: known motions, frames of a real video file, batches."""
from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from conftest import write_video
from test_flow_extraction import CHEAP, _start_extraction, _wait_for, assert_same_content, cli, noisy_clip, temporaries

from flow import FlowStore
from flow.errors import InputError
from flow.tvl1 import OPENCV_DEFAULTS
from flow import tvl1_torch
from flow.tvl1_torch import TorchTVL1

WIDTH, HEIGHT = 96, 72
# Fewer iterations than OpenCV's defaults keep the tests fast; every mechanism (pyramid, warps, median, stop) stays.
QUICK = {**OPENCV_DEFAULTS, "nscales": 3, "warps": 3, "outerIterations": 4, "innnerIterations": 15}


@pytest.fixture(scope="module")
def scene():
    """A photograph (scikit-learn's china.jpg) in gray at 2x the test size, for warping and video."""
    photo = cv2.cvtColor(load_sample_images().images[0], cv2.COLOR_RGB2GRAY)
    return cv2.resize(photo[60:360, 100:500], (2 * WIDTH, 2 * HEIGHT), interpolation=cv2.INTER_AREA)


def warped_pair(scene, field):
    """(previous, following, true flow): previous(x) = following(x + flow(x)) exactly, by construction."""
    following = cv2.resize(scene, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    u, v = field(xs, ys)
    previous = cv2.remap(following, xs + u, ys + v, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    return previous, following, np.stack([u, v], axis=-1)


def translation(xs, ys):
    return np.full_like(xs, 1.6), np.full_like(ys, -0.9)


def rotation(xs, ys, degrees=3.0):
    angle = np.deg2rad(degrees)
    cx, cy = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
    x, y = xs - cx, ys - cy
    return (x * np.cos(angle) - y * np.sin(angle) - x).astype(np.float32), \
        (x * np.sin(angle) + y * np.cos(angle) - y).astype(np.float32)


def opencv_flow(previous, following, params):
    return cv2.optflow.DualTVL1OpticalFlow_create(**params).calc(previous, following, None)


def epe(a, b, margin=0):
    error = np.linalg.norm(a - b, axis=-1)
    return error[margin: error.shape[0] - margin, margin: error.shape[1] - margin]


@pytest.mark.parametrize("field", [translation, rotation])
@pytest.mark.numerics
def test_known_motion_agrees_with_opencv_and_with_the_truth(scene, field):
    previous, following, truth = warped_pair(scene, field)
    ours = TorchTVL1(OPENCV_DEFAULTS)(previous, following)
    theirs = opencv_flow(previous, following, OPENCV_DEFAULTS)
    assert ours.shape == (HEIGHT, WIDTH, 2) and ours.dtype == np.float32
    assert np.median(epe(ours, theirs)) < 0.02
    assert epe(ours, theirs).mean() < 0.05
    # as close to the truth as OpenCV is (inside a margin: TV-L1 cannot know what enters the view)
    assert epe(ours, truth, 8).mean() == pytest.approx(epe(theirs, truth, 8).mean(), abs=0.02)
    assert epe(ours, truth, 8).mean() < 0.3


@pytest.mark.parametrize("changes", [
    {"nscales": 1, "warps": 1, "outerIterations": 1, "innnerIterations": 8, "medianFiltering": 1, "epsilon": 0.0},
    {"nscales": 3, "warps": 2, "outerIterations": 2, "innnerIterations": 5, "epsilon": 0.0},
    {"nscales": 2, "warps": 2, "outerIterations": 2, "innnerIterations": 5, "gamma": 0.2, "medianFiltering": 3,
     "scaleStep": 0.5, "epsilon": 0.0},
])
@pytest.mark.numerics
def test_each_step_matches_opencv_to_float_precision(scene, changes):
    """Without the early stop nothing amplifies rounding, so pyramid, warps, median and gamma term must match."""
    previous, following, _ = warped_pair(scene, rotation)
    params = {**OPENCV_DEFAULTS, **changes}
    assert epe(TorchTVL1(params)(previous, following), opencv_flow(previous, following, params)).max() < 0.01


@pytest.fixture(scope="module")
def video_pairs(scene, tmp_path_factory):
    """Consecutive gray frames decoded from an MJPG video of a camera panning and zooming over the photograph."""
    frames = []
    for t in range(4):
        zoom = 1 + 0.02 * t
        matrix = np.float32([[zoom, 0, -7.0 * t - WIDTH / 2 * (zoom - 1)], [0, zoom, -3.0 * t]])
        frames.append(cv2.warpAffine(cv2.cvtColor(scene, cv2.COLOR_GRAY2BGR), matrix, (WIDTH, HEIGHT),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101))
    path = write_video(tmp_path_factory.mktemp("video") / "pan.avi", np.stack(frames))
    capture = cv2.VideoCapture(str(path))
    gray = []
    while (ok_frame := capture.read())[0]:
        gray.append(cv2.cvtColor(ok_frame[1], cv2.COLOR_BGR2GRAY))
    capture.release()
    assert len(gray) == 4
    return np.stack(gray[:-1]), np.stack(gray[1:])


@pytest.mark.numerics
def test_frames_of_a_video_agree_with_opencv_and_a_batch_equals_single_pairs(video_pairs):
    previous, following = video_pairs
    solver = TorchTVL1(QUICK)
    batch = solver(previous, following)
    assert batch.shape == (3, HEIGHT, WIDTH, 2)
    for k in range(3):
        np.testing.assert_array_equal(batch[k], solver(previous[k], following[k]))
        theirs = opencv_flow(previous[k], following[k], QUICK)
        assert np.median(epe(batch[k], theirs)) < 0.1
        assert np.abs(theirs).mean() > 1  # the pairs do move


@pytest.mark.numerics
def test_float_frames_are_taken_on_opencvs_zero_to_one_scale(video_pairs):
    previous, following = video_pairs[0][0], video_pairs[1][0]
    params = {**QUICK, "nscales": 1, "warps": 1}
    solver = TorchTVL1(params)
    np.testing.assert_array_equal(solver(previous, following),
                                  solver(torch.from_numpy(previous) / 255.0, torch.from_numpy(following) / 255.0))


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.numerics
def test_the_median_network_equals_opencvs_median_blur(size, monkeypatch):
    monkeypatch.setattr(tvl1_torch, "CHUNK_ELEMENTS", 200)  # several groups of images, and a group of one image
    rng = np.random.default_rng(size)
    ties = rng.integers(0, 4, (2, 3, 17, 23)).astype(np.float32)  # many equal values in each window
    for images in (ties, rng.normal(size=(2, 3, 17, 23)).astype(np.float32), ties[:1, :1, :3, :3]):
        ours = tvl1_torch._median(torch.from_numpy(images), size).numpy()
        theirs = np.stack([[cv2.medianBlur(plane, size) for plane in pair] for pair in images])
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("params, message", [
    ({"lambda": 0.1}, "unknown parameter(s) lambda"),
    ({"tau": 0}, "tau must be > 0"),
    ({"nscales": 2.5, "warps": 0}, "nscales must be an integer ≥ 1, got 2.5; warps must be an integer ≥ 1"),
    ({"scaleStep": 1.0}, "scaleStep must be in (0, 1)"),
    ({"medianFiltering": 7}, "medianFiltering must be 0, 1, 3 or 5"),
    ({"useInitialFlow": True}, "useInitialFlow must be False"),
])
def test_bad_parameters_are_one_input_error(params, message):
    with pytest.raises(InputError) as error:
        TorchTVL1(params)
    assert message in str(error.value)


def test_bad_frames_are_input_errors():
    solver = TorchTVL1(QUICK)
    with pytest.raises(InputError, match="shapes differ"):
        solver(np.zeros((2, 20, 20), np.uint8), np.zeros((2, 20, 21), np.uint8))
    with pytest.raises(InputError, match=r"\(B, H, W\) or \(H, W\)"):
        solver(np.zeros((1, 2, 20, 20), np.uint8), np.zeros((1, 2, 20, 20), np.uint8))


# -- extract-flow --backend torch ---------------------------------------------------------------------------------
TORCH_CHEAP = ["--backend", "torch", "--device", "cpu", "--batch-pairs", "3", *CHEAP]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips") / "videos"
    for k, frames in enumerate([9, 7, 7, 7]):
        write_video(root / ("Walk" if k % 2 else "Run") / f"v_{k:02d}.avi", noisy_clip(frames, seed=k))
    return root


@pytest.fixture(scope="module")
def torch_store(clips, tmp_path_factory):
    store = tmp_path_factory.mktemp("torch") / "store"
    cli("extract-flow", clips, "--out", store, *TORCH_CHEAP, check=0)
    return store


@pytest.mark.numerics
def test_a_torch_store_records_its_backend_passes_verify_and_agrees_with_opencv(clips, torch_store, tmp_path):
    manifest = json.loads((torch_store / "manifest.json").read_text())
    preprocessing = manifest["preprocessing"]
    assert (preprocessing["tvl1_backend"], preprocessing["tvl1_device"]) == ("torch", "cpu")
    assert preprocessing["tvl1"] == {**OPENCV_DEFAULTS, "nscales": 2, "warps": 1, "innnerIterations": 20,
                                     "outerIterations": 3}
    assert manifest["versions"]["torch"] == torch.__version__
    result = cli("verify-store", torch_store, check=0)
    assert "TV-L1: torch on cpu (flow.tvl1_torch.TorchTVL1, preset cheap): tau=0.25 lambda_=0.15" in result.stdout

    opencv_store = tmp_path / "opencv"
    cli("extract-flow", clips, "--out", opencv_store, "--workers", "2", *CHEAP, check=0)
    ours, theirs = FlowStore(torch_store), FlowStore(opencv_store)
    assert ours.video_ids() == theirs.video_ids()
    for video_id in ours.video_ids():
        np.testing.assert_array_equal(ours.frames(video_id), theirs.frames(video_id))
        codes, reference = ours.flow_codes(video_id), theirs.flow_codes(video_id)
        assert codes.shape == reference.shape
        assert np.median(np.abs(codes.astype(int) - reference)) == 0 and np.mean(codes == reference) > 0.8


def test_a_killed_torch_extraction_resumes_to_the_same_store(clips, torch_store, tmp_path):
    store = tmp_path / "store"
    process = _start_extraction(clips, store, *TORCH_CHEAP)
    try:
        _wait_for(lambda: any(store.glob("videos/*/*.h5")), process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole job, worker included
        process.wait()
    finished = list(store.glob("videos/*/*.h5"))
    assert 1 <= len(finished) < 4

    result = cli("extract-flow", clips, "--out", store, *TORCH_CHEAP, check=0)
    assert f"{len(finished)} already done" in result.stdout
    assert temporaries(store) == []
    assert_same_content(store, torch_store)
    result = cli("extract-flow", clips, "--out", store, *CHEAP, check=2)
    assert "tvl1_backend 'torch' (store) vs 'opencv' (now)" in result.stderr
