"""extract-flow, merge-stores and verify-store through the real CLI, on videos written by OpenCV; FlowStore reads."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from conftest import write_video

from flow import FlowStore
from flow.errors import InputError
from flow.quantize import dequantize

REPO = Path(__file__).resolve().parents[1]
MID = ["--preset", "mid", "--short-side", "0", "--no-progress"]
CHEAP = ["--preset", "cheap", "--short-side", "0", "--no-progress"]


def cli(*args, env=None, check=None):
    """Run ``python -m cli ...`` and return the completed process."""
    result = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=120)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def noisy_clip(frames, seed, width=64, height=48):
    """Noise drifting by one pixel a frame: no early stop for TV-L1, so each video takes a measurable time."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height, width + frames, 3), dtype=np.uint8)
    return np.stack([texture[:, t: t + width] for t in range(frames)])


def assert_same_content(store_a, store_b):
    a, b = FlowStore(store_a), FlowStore(store_b)
    assert a.video_ids() == b.video_ids()
    for video_id in a.video_ids():
        np.testing.assert_array_equal(a.frames(video_id), b.frames(video_id), err_msg=video_id)
        np.testing.assert_array_equal(a.flow_codes(video_id), b.flow_codes(video_id), err_msg=video_id)


def temporaries(store):
    return [p for p in Path(store, "videos").rglob("*") if ".tmp-" in p.name]


# -- a dataset of six videos of different lengths, and its store extracted in one uninterrupted run --------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset") / "videos"
    for k, frames in enumerate([17, 13, 9, 9, 9, 9]):
        write_video(root / ("Walk" if k % 2 else "Run") / f"v_{k:02d}.avi", noisy_clip(frames, seed=k))
    return root


@pytest.fixture(scope="module")
def whole_store(dataset, tmp_path_factory):
    store = tmp_path_factory.mktemp("whole") / "store"
    cli("extract-flow", dataset, "--out", store, "--workers", "2", *MID, check=0)
    return store


def test_store_layout_manifest_and_attributes(whole_store, dataset):
    manifest = json.loads((whole_store / "manifest.json").read_text())
    assert manifest["source_root"] == str(dataset.resolve())
    assert manifest["preprocessing"]["tvl1"]["nscales"] == 3 and manifest["preprocessing"]["bound"] == 20.0
    assert json.loads((whole_store / "failures.json").read_text()) == []
    store = FlowStore(whole_store)
    assert store.video_ids() == ["Run/v_00", "Run/v_02", "Run/v_04", "Walk/v_01", "Walk/v_03", "Walk/v_05"]
    assert store.num_frames("Run/v_00") == 17 and store.num_frames("Walk/v_01") == 13
    attrs = store.attrs("Run/v_00")
    assert (attrs["height"], attrs["width"], attrs["fps"], attrs["source"]) == (48, 64, 25.0, "Run/v_00.avi")
    assert attrs["source_size"] == (dataset / "Run" / "v_00.avi").stat().st_size
    assert store.source_root == dataset.resolve() and store.bound == 20.0
    assert temporaries(whole_store) == []


def test_window_reads_equal_full_reads_sliced(whole_store):
    store = FlowStore(whole_store)
    frames, codes = store.frames("Run/v_00"), store.flow_codes("Run/v_00")
    assert frames.shape == (17, 48, 64, 3) and frames.dtype == np.uint8
    assert codes.shape == (16, 48, 64, 2) and codes.dtype == np.uint8
    np.testing.assert_array_equal(store.frames("Run/v_00", 5, 12), frames[5:12])
    np.testing.assert_array_equal(store.flow_codes("Run/v_00", 3, 9), codes[3:9])
    np.testing.assert_array_equal(store.flow_codes("Run/v_00", -4), codes[-4:])
    flow = store.flow("Run/v_00", 3, 9)
    assert flow.dtype == np.float32
    np.testing.assert_array_equal(flow, dequantize(codes[3:9], 20.0, "round"))
    reopened = pickle.loads(pickle.dumps(store))  # as a DataLoader worker receives it
    np.testing.assert_array_equal(reopened.frames("Run/v_00", 2, 4), frames[2:4])


def rewrite_in_hdf5_18_formats(path: Path) -> None:
    """The video file as stores written before FILE_FORMAT were: HDF5's default (1.8) object formats."""
    with h5py.File(path) as new:
        attrs, frames, codes = dict(new.attrs), list(new["frames"][:]), new["flow"][:]
    with h5py.File(path, "w") as old:
        old.attrs.update(attrs)
        dataset = old.create_dataset("frames", (len(frames),), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8),
                                     chunks=(64,))
        for k, data in enumerate(frames):
            dataset[k] = data
        old.create_dataset("flow", data=codes, maxshape=(None, *codes.shape[1:]), chunks=(1, *codes.shape[1:]),
                           compression="gzip", compression_opts=4, fletcher32=True)


def test_files_in_the_older_hdf5_formats_read_and_verify_alike(whole_store, tmp_path):
    old_store = tmp_path / "store"
    shutil.copytree(whole_store, old_store)
    for path in (old_store / "videos").rglob("*.h5"):
        rewrite_in_hdf5_18_formats(path)
        superblock_versions = {path.read_bytes()[8], (whole_store / path.relative_to(old_store)).read_bytes()[8]}
        assert superblock_versions == {0, 3}  # HDF5 1.8's default superblock, and 1.10's
    assert_same_content(whole_store, old_store)
    cli("verify-store", old_store, check=0)


def test_store_refuses_what_it_cannot_read(whole_store, dataset, tmp_path):
    with pytest.raises(InputError, match="not a flow store"):
        FlowStore(dataset)
    with pytest.raises(InputError, match="has no video 'Run/v_99'"):
        FlowStore(whole_store).frames("Run/v_99")
    damaged = tmp_path / "store"
    shutil.copytree(whole_store, damaged)
    victim = damaged / "videos" / "Walk" / "v_03.h5"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(InputError, match="v_03.h5"):
        FlowStore(damaged).frames("Walk/v_03")


# -- accuracy ----------------------------------------------------------------------------------------------------
def test_a_square_moving_right_by_two_pixels_gives_flow_x_two(tmp_path):
    rng = np.random.default_rng(7)
    background = cv2.GaussianBlur(rng.integers(60, 120, (64, 96), dtype=np.uint8), (7, 7), 0)
    square = cv2.GaussianBlur(rng.integers(0, 256, (24, 24), dtype=np.uint8), (3, 3), 0)
    frames = []
    for t in range(8):
        frame = background.copy()
        frame[20:44, 20 + 2 * t: 44 + 2 * t] = square
        frames.append(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    write_video(tmp_path / "videos" / "Move" / "square.avi", np.stack(frames))
    cli("extract-flow", tmp_path / "videos", "--out", tmp_path / "store", "--short-side", "0", "--workers", "1",
        "--no-progress", check=0)
    flow = FlowStore(tmp_path / "store").flow("Move/square")
    assert flow.shape == (7, 64, 96, 2)
    inside = np.stack([flow[t, 24:40, 26 + 2 * t: 38 + 2 * t] for t in range(7)])  # the square's interior
    assert np.median(inside[..., 0]) == pytest.approx(2.0, abs=0.2)
    assert np.median(inside[..., 1]) == pytest.approx(0.0, abs=0.2)
    assert np.abs(np.median(flow[:, 50:, :, 0])) < 0.2  # the static background below it


# -- bad videos --------------------------------------------------------------------------------------------------
def test_bad_videos_are_listed_and_the_rest_extracts(tmp_path):
    videos = tmp_path / "videos"
    good = write_video(videos / "Good" / "a.avi", noisy_clip(5, seed=1, width=32, height=24))
    write_video(videos / "Good" / "b.avi", noisy_clip(5, seed=2, width=32, height=24))
    corrupt = bytearray(good.read_bytes())
    corrupt[corrupt.find(b"00dc"):] = bytes(len(corrupt) - corrupt.find(b"00dc"))  # the header survives
    (videos / "Bad" / "corrupt.avi").parent.mkdir()
    (videos / "Bad" / "corrupt.avi").write_bytes(bytes(corrupt))
    (videos / "Bad" / "empty.avi").write_bytes(b"")
    (videos / "Bad" / "text.mp4").write_text("this is not a video\n" * 20)
    write_video(videos / "Bad" / "single.avi", noisy_clip(1, seed=3, width=32, height=24))
    config = tmp_path / "extract.toml"
    config.write_text('[extract]\npreset = "cheap"\nshort_side = 0\nworkers = 2\n')
    store = tmp_path / "store"

    result = cli("extract-flow", videos, "--out", store, "--config", config, "--no-progress", check=1)
    failures = {f["video_id"]: f["reason"] for f in json.loads((store / "failures.json").read_text())}
    assert failures.pop("Bad/corrupt") in ("cannot be opened as a video", "no frame could be decoded")
    assert failures == {"Bad/empty": "empty file (0 bytes)", "Bad/text": "cannot be opened as a video",
                        "Bad/single": "has 1 frame; flow needs at least 2"}
    assert "2 extracted" in result.stdout and "4 failed" in result.stdout and "Bad/empty.avi" in result.stdout
    assert FlowStore(store).video_ids() == ["Good/a", "Good/b"]
    assert FlowStore(store).preprocessing["tvl1_preset"] == "cheap"  # from the TOML file
    assert temporaries(store) == []

    again = cli("extract-flow", videos, "--out", store, "--config", config, "--no-progress", "--allow-failures",
                check=0)
    assert "2 already done" in again.stdout and "4 failed" in again.stdout


@pytest.mark.parametrize("make_source", [lambda p: p / "missing", lambda p: (p / "empty").mkdir() or p / "empty"])
def test_missing_or_empty_video_source_is_a_one_line_error(tmp_path, make_source):
    result = cli("extract-flow", make_source(tmp_path), "--out", tmp_path / "store", check=2)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "store").exists()


def test_other_preprocessing_or_a_foreign_folder_is_refused(whole_store, dataset):
    before = sorted(p.stat().st_mtime_ns for p in whole_store.rglob("*.h5"))
    result = cli("extract-flow", dataset, "--out", whole_store, "--bound", "10", *MID, check=2)
    assert "bound 20.0 (store) vs 10.0 (now)" in result.stderr
    assert sorted(p.stat().st_mtime_ns for p in whole_store.rglob("*.h5")) == before
    result = cli("extract-flow", dataset, "--out", dataset, *MID, check=2)
    assert "not a flow store" in result.stderr and not (dataset / ".lock").exists()


# -- crashes, locking, resuming ----------------------------------------------------------------------------------
def _start_extraction(videos, store, *options):
    return subprocess.Popen([sys.executable, "-m", "cli", "extract-flow", str(videos), "--out", str(store),
                             *options], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for(condition, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the extraction ended before the awaited moment"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_killed_extraction_resumes_to_the_same_store(dataset, whole_store, tmp_path):
    store = tmp_path / "store"
    process = _start_extraction(dataset, store, "--workers", "2", *MID)
    try:
        _wait_for(lambda: any(store.glob("videos/*/*.h5")), process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole job, workers included, as a crash or scancel would
        process.wait()
    finished = list(store.glob("videos/*/*.h5"))
    assert 1 <= len(finished) < 6
    stale = store / "videos" / "Run" / f"v_00.h5.tmp-{2 ** 22 + 1}"
    stale.write_bytes(b"half a video")

    result = cli("extract-flow", dataset, "--out", store, "--workers", "2", *MID, check=0)
    assert f"{len(finished)} already done" in result.stdout
    assert temporaries(store) == []
    assert_same_content(store, whole_store)


def test_a_worker_killed_mid_video_costs_only_a_retry(dataset, whole_store, tmp_path):
    store = tmp_path / "store"
    process = _start_extraction(dataset, store, "--workers", "2", *MID)
    try:
        _wait_for(lambda: temporaries(store) if (store / "videos").exists() else False, process)
        worker = int(temporaries(store)[0].name.rsplit("-", 1)[1])  # temporaries are named by their writer
        os.kill(worker, signal.SIGKILL)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert temporaries(store) == []
    assert_same_content(store, whole_store)


def test_a_second_extraction_into_a_busy_store_is_refused(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "Slow" / "long.avi", noisy_clip(40, seed=5, width=96, height=72))
    store = tmp_path / "store"
    process = _start_extraction(videos, store, "--workers", "1", "--short-side", "0", "--no-progress")
    try:
        _wait_for(lambda: temporaries(store) if (store / "videos").exists() else False, process)
        result = cli("extract-flow", videos, "--out", store, "--short-side", "0", "--no-progress", check=2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert "another extraction or merge is writing to this store" in result.stderr
    assert f"process {process.pid}" in result.stderr


# -- sharding and merging ----------------------------------------------------------------------------------------
def test_shards_merged_equal_the_whole_extraction(dataset, whole_store, tmp_path):
    first, second, merged = tmp_path / "s0", tmp_path / "s1", tmp_path / "merged"
    cli("extract-flow", dataset, "--out", first, "--shard", "0/2", "--workers", "2", *MID, check=0)
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "6", "SLURM_ARRAY_TASK_COUNT": "2"}
    result = cli("extract-flow", dataset, "--out", second, "--workers", "2", *MID, env=slurm, check=0)
    assert "(shard 1/2)" in result.stdout
    assert len(FlowStore(first)) == len(FlowStore(second)) == 3

    result = cli("merge-stores", first, second, "--out", merged, check=0)
    assert "6 videos linked" in result.stdout
    assert_same_content(merged, whole_store)
    cli("verify-store", merged, check=0)

    conflict = cli("merge-stores", whole_store, first, "--out", tmp_path / "bad", check=2)
    assert "Run/v_00" in conflict.stderr and not (tmp_path / "bad" / "videos").exists()
    cheap = tmp_path / "cheap"
    cli("extract-flow", dataset, "--out", cheap, "--shard", "0/3", "--workers", "2", *CHEAP, check=0)
    mixed = cli("merge-stores", second, cheap, "--out", tmp_path / "mixed", check=2)
    assert "other preprocessing" in mixed.stderr and "tvl1_preset" in mixed.stderr


# -- verify-store ------------------------------------------------------------------------------------------------
def test_verify_store_passes_a_good_store_and_names_each_damage(whole_store, tmp_path):
    good = cli("verify-store", whole_store, check=0)
    assert "6 videos, 66 frames" in good.stdout and "OK" in good.stdout

    damaged = tmp_path / "store"
    shutil.copytree(whole_store, damaged)
    truncated = damaged / "videos" / "Walk" / "v_03.h5"
    truncated.write_bytes(truncated.read_bytes()[:4000])
    flipped = damaged / "videos" / "Run" / "v_02.h5"
    with h5py.File(flipped) as handle:
        offset = handle["flow"].id.get_chunk_info(2).byte_offset
    data = bytearray(flipped.read_bytes())
    data[offset + 10] ^= 0xFF
    flipped.write_bytes(bytes(data))
    (damaged / "videos" / "Run" / "v_04.h5.tmp-123").write_bytes(b"")

    result = cli("verify-store", damaged, check=1)
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 3, result.stdout
    assert "v_03.h5" in problems[0] + problems[1] + problems[2]
    assert any("v_02.h5" in p and "damaged data" in p for p in problems)
    assert any("v_04.h5.tmp-123" in p for p in problems)
    assert cli("verify-store", tmp_path, check=2).stderr.startswith("error: ")


# -- sources that changed after extraction -------------------------------------------------------------------------
def _with_other_padding(path: Path) -> None:
    """Other bytes of the same size and time: one byte of the AVI's JUNK padding changed, the frames untouched."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    padding = data.find(b"JUNK") + 12
    data[padding] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def changing(tmp_path_factory):
    """Three videos extracted once with the progress bar on and stderr into a file, as under Slurm or CI."""
    root = tmp_path_factory.mktemp("changing")
    videos, store, log = root / "videos", root / "store", root / "stderr.log"
    for k in range(3):
        write_video(videos / "Run" / f"v_{k}.avi", noisy_clip(9, seed=k, width=32, height=24))
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-m", "cli", "extract-flow", str(videos), "--out", str(store), "--workers",
                        "1", "--preset", "cheap", "--short-side", "0"], cwd=REPO, stderr=stderr,
                       stdout=subprocess.DEVNULL, timeout=120, check=True)
    return videos, store, log


def _decoded(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def test_a_source_changed_since_extraction_is_extracted_again(changing):
    videos, store, _ = changing
    files = {k: store / "videos" / "Run" / f"v_{k}.h5" for k in range(3)}
    before = {k: path.read_bytes() for k, path in files.items()}
    again = ["extract-flow", videos, "--out", store, "--workers", "1", *CHEAP]

    old = _decoded(videos / "Run" / "v_1.avi")
    new = write_video(videos / "Run" / "v_1.avi", noisy_clip(12, seed=7, width=32, height=24))  # regenerated
    result = cli(*again, check=0)
    assert "1 extracted (1 re-extracted as stale: the source changed), 2 already done" in result.stdout
    assert [files[k].read_bytes() == before[k] for k in range(3)] == [True, False, True]
    attrs = FlowStore(store).attrs("Run/v_1")  # the entry is the new video's: its bytes, its frames
    assert (attrs["source_size"], attrs["source_sha256"]) == (new.stat().st_size,
                                                             hashlib.sha256(new.read_bytes()).hexdigest())
    stored = FlowStore(store).frames("Run/v_1")
    assert stored.shape == (12, 24, 32, 3)
    to_new, to_old = (np.abs(stored[:9].astype(int) - frames[:9]).mean() for frames in (_decoded(new), old))
    assert to_new < to_old / 4  # the new video's frames, up to JPEG loss on noise
    assert temporaries(store) == []

    _with_other_padding(videos / "Run" / "v_2.avi")  # same size and time: only the content hash tells
    assert "0 extracted, 3 already done" in cli(*again, check=0).stdout
    verified = cli(*again, "--verify-sources", check=0)
    assert "1 extracted (1 re-extracted as stale: the source changed), 2 already done" in verified.stdout
    assert FlowStore(store).attrs("Run/v_2")["source_sha256"] == hashlib.sha256(
        (videos / "Run" / "v_2.avi").read_bytes()).hexdigest()

    (videos / "Run" / "v_0.avi").write_text("not a video any more\n")  # changed, and no longer decodes
    failed = cli(*again, check=1)
    assert "failed: Run/v_0.avi: cannot be opened as a video" in failed.stdout
    assert FlowStore(store).video_ids() == ["Run/v_1", "Run/v_2"]  # no flow of a video that is not there
    cli("verify-store", store, check=0)


# -- progress in a log -----------------------------------------------------------------------------------------------
def test_progress_into_a_log_file_is_whole_lines(changing):
    """stderr to a file (Slurm, CI, ``2> log``): no carriage-return redraws, the final state on its own line."""
    text = changing[2].read_text()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines()[-1].startswith("extract-flow: 100%|") and "3/3" in text.splitlines()[-1]
