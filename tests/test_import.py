"""import-frames through the real CLI, on JPEG folders written in each layout from the frames of a real video."""
from __future__ import annotations

import json
import os
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

from cli.byod import LAYOUT_NAMES, QUANTIZATION_NAMES
from conftest import REPO, run_cli
from flow import FlowStore
from flow.importer import LAYOUTS, has_flow, is_imported
from flow.quantize import QUANTIZATIONS, quantize, step

BOUND = 20.0
SIZE = (72, 96)  # height, width
PREFIXES = {"mars": ("", "TVL1jpg_x_", "TVL1jpg_y_"), "mmaction2": ("img_", "flow_x_", "flow_y_"),
            "3d-resnets": ("image_", None, None)}


def video_frames(path: Path, count: int, seed: int) -> np.ndarray:
    """A smooth texture panning over ``count`` frames, written as a real video and decoded back (BGR)."""
    height, width = SIZE
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, width + 2 * count, 3), dtype=np.uint8), (5, 5), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    for t in range(count):
        writer.write(np.ascontiguousarray(texture[:, 2 * t: 2 * t + width]))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == count
    return np.stack(frames)


def known_flow(count: int, seed: int) -> np.ndarray:
    """(count, H, W, 2) smooth fields in pixels, values spread over many code steps."""
    height, width = SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, (count, 2))
    u = 6 * np.sin(x[None] / 13 + phase[:, :1, None]) + 0.1 * np.arange(count)[:, None, None]
    v = 4 * np.cos(y[None] / 9 + phase[:, 1:, None])
    return np.stack([u, v], axis=-1).astype(np.float32)


def write_folder(folder: Path, layout: str, frames: np.ndarray, flow: np.ndarray | None, quantization: str) -> None:
    """One video in ``layout``'s naming, frames as JPEG (quality 95), flow as quantised gray JPEGs."""
    frame_prefix, x_prefix, y_prefix = PREFIXES[layout]
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames, 1):
        cv2.imwrite(str(folder / f"{frame_prefix}{k:05d}.jpg"), frame)
    if x_prefix is None:
        return
    for k, field in enumerate(flow, 1):
        cv2.imwrite(str(folder / f"{x_prefix}{k:05d}.jpg"), quantize(field[..., 0], BOUND, quantization))
        cv2.imwrite(str(folder / f"{y_prefix}{k:05d}.jpg"), quantize(field[..., 1], BOUND, quantization))
    (folder / "done").touch()  # MARS's marker: not a frame, ignored


def write_tree(root: Path, layout: str, sources: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    quantization = LAYOUTS[layout].quantization or "round"
    for video_id, (frames, flow) in sources.items():
        write_folder(root / video_id, layout, frames, flow, quantization)
    return root


def store_content(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store = FlowStore(path)
    return {vid: (store.frames(vid), store.flow_codes(vid)) for vid in store.video_ids()}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Eight videos: frames of real (written and decoded) videos and a known flow between each two."""
    folder = tmp_path_factory.mktemp("videos")
    return {f"{'Run' if k % 2 else 'Walk'}/v_{k:02d}": (video_frames(folder / f"{k}.avi", 24, k), known_flow(23, k))
            for k in range(8)}


@pytest.fixture(scope="module")
def mars_tree(sources, tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("mars") / "frames", "mars", sources)


@pytest.fixture(scope="module")
def mars_store(mars_tree, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("mars-store") / "store"
    return out, run_cli("import-frames", str(mars_tree), "--out", str(out), "--workers", "2", "--no-progress")


def flow_errors(store_path: Path, sources) -> np.ndarray:
    """Imported flow minus the known flow, pixels, over every video."""
    store = FlowStore(store_path)
    return np.concatenate([(store.flow(vid) - sources[vid][1]).ravel() for vid in store.video_ids()])


def test_mars_frames_are_the_source_jpegs_and_flow_is_within_the_stated_error(mars_store, mars_tree, sources):
    out, result = mars_store
    assert "layout mars" in result.stderr and "detected" in result.stderr
    assert "8 imported, 0 already done, 0 failed" in result.stdout
    store = FlowStore(out)
    assert store.video_ids() == sorted(sources) and is_imported(store.manifest)
    assert store.manifest["preprocessing"]["source_layout"] == "mars"
    assert (store.quantization, store.bound) == ("truncate", BOUND) and has_flow(store.preprocessing)
    assert store.source_root == mars_tree.resolve()
    for vid in sources:
        frames = store.frames(vid)
        assert frames.shape == (24, *SIZE, 3)
        for k in (0, 11, 23):  # the stored bytes are the file's: the same decoder gives the same pixels
            source = cv2.imread(str(mars_tree / vid / f"{k + 1:05d}.jpg"))
            np.testing.assert_array_equal(frames[k], cv2.cvtColor(source, cv2.COLOR_BGR2RGB))
        codes = store.flow_codes(vid)
        assert codes.shape == (23, *SIZE, 2)
        np.testing.assert_array_equal(codes[5, ..., 1], cv2.imread(str(mars_tree / vid / "TVL1jpg_y_00006.jpg"),
                                                                   cv2.IMREAD_GRAYSCALE))
    errors = np.abs(flow_errors(out, sources))
    # quantisation alone is within half a step (0.078 px); the source's JPEG coding of the codes adds a little
    assert errors.mean() < 0.6 * step(BOUND) and np.quantile(errors, 0.99) < 2 * step(BOUND)


def test_truncation_and_rounding_are_told_apart(mars_store, sources, tmp_path):
    mmaction = write_tree(tmp_path / "mm", "mmaction2", sources)
    run_cli("import-frames", str(mmaction), "--out", str(tmp_path / "mm-store"), "--workers", "2", "--no-progress")
    assert FlowStore(tmp_path / "mm-store").quantization == "round"
    bias = {name: flow_errors(path, sources).mean() for name, path in
            (("mars", mars_store[0]), ("mmaction2", tmp_path / "mm-store"))}
    assert abs(bias["mars"]) < 0.1 * step(BOUND) and abs(bias["mmaction2"]) < 0.1 * step(BOUND)


def test_truncated_codes_read_as_rounded_are_biased_by_half_a_step(mars_tree, sources, tmp_path):
    """What MARS's own loader does with its truncated codes; --quantization overrides the layout's default."""
    out = tmp_path / "store"
    result = run_cli("import-frames", str(mars_tree), "--out", str(out), "--quantization", "round",
                     "--workers", "2", "--no-progress")
    assert "flow codes rounded" in result.stderr
    manifest = FlowStore(out).manifest
    assert manifest["preprocessing"]["quantization"] == "round"
    assert manifest["import"]["quantization_from"] == "--quantization"
    assert flow_errors(out, sources).mean() == pytest.approx(-step(BOUND) / 2, abs=0.1 * step(BOUND))


def test_3d_resnets_frames_make_an_rgb_only_store(sources, tmp_path):
    tree = write_tree(tmp_path / "frames", "3d-resnets", dict(list(sources.items())[:2]))
    result = run_cli("import-frames", str(tree), "--out", str(tmp_path / "store"), "--workers", "1", "--no-progress")
    assert "3d-resnets" in result.stderr and "RGB-only" in result.stderr
    store = FlowStore(tmp_path / "store")
    assert not has_flow(store.preprocessing) and store.quantization == "none"
    vid = store.video_ids()[0]
    source = cv2.imread(str(tree / vid / "image_00003.jpg"))
    np.testing.assert_array_equal(store.frames(vid, 2, 3)[0], cv2.cvtColor(source, cv2.COLOR_BGR2RGB))
    with h5py.File(store.path_of(vid)) as handle:
        assert handle["flow"].shape == (23, *SIZE, 2) and handle["flow"].id.get_storage_size() == 0
    assert run_cli("verify-store", str(tmp_path / "store")).returncode == 0
    again = run_cli("import-frames", str(tree), "--out", str(tmp_path / "store"), "--quantization", "round",
                    "--no-progress", check=False)
    assert again.returncode == 2 and "has no flow" in again.stderr


def test_the_command_offers_exactly_the_layouts_there_are():
    assert LAYOUT_NAMES == ("auto", *LAYOUTS) and QUANTIZATION_NAMES == QUANTIZATIONS


def test_an_ambiguous_tree_lists_the_candidates(sources, tmp_path):
    (frames, flow), = list(sources.values())[:1]
    write_folder(tmp_path / "frames" / "Run" / "a", "mars", frames[:4], flow[:3], "truncate")
    write_folder(tmp_path / "frames" / "Walk" / "b", "mmaction2", frames[:4], flow[:3], "round")
    result = run_cli("import-frames", str(tmp_path / "frames"), "--out", str(tmp_path / "store"), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "ambiguous frame layout" in result.stderr and "--layout" in result.stderr
    assert "mars (" in result.stderr and "mmaction2 (" in result.stderr and "Walk/b" in result.stderr
    assert not (tmp_path / "store").exists()
    chosen = run_cli("import-frames", str(tmp_path / "frames"), "--out", str(tmp_path / "store"), "--layout",
                     "mmaction2", "--workers", "1", "--no-progress")
    assert "as given" in chosen.stderr and FlowStore(tmp_path / "store").video_ids() == ["Walk/b"]


def test_broken_folders_are_listed_and_the_rest_imported(sources, tmp_path):
    gap, mismatch, not_jpeg, truncated, good = sorted(sources)[:5]
    tree = write_tree(tmp_path / "frames", "mars", {vid: sources[vid] for vid in (gap, mismatch, not_jpeg, truncated,
                                                                                  good)})
    (tree / gap / "00007.jpg").unlink()
    (tree / mismatch / "TVL1jpg_y_00023.jpg").unlink()
    ok, png = cv2.imencode(".png", sources[not_jpeg][0][2])
    (tree / not_jpeg / "00003.jpg").write_bytes(png.tobytes())
    victim = tree / truncated / "TVL1jpg_x_00002.jpg"
    victim.write_bytes(victim.read_bytes()[:300])
    out = tmp_path / "store"
    result = run_cli("import-frames", str(tree), "--out", str(out), "--workers", "2", "--no-progress", check=False)
    assert result.returncode == 1, result.stderr
    assert "1 imported, 0 already done, 4 failed of 5" in result.stdout
    reasons = {item["video_id"]: item["reason"] for item in json.loads((out / "failures.json").read_text())}
    assert reasons == {
        gap: "00007.jpg is missing (numbering jumps from 6 to 8)",
        mismatch: "has 23 flow x files (TVL1jpg_x_*.jpg) but 22 flow y files (TVL1jpg_y_*.jpg)",
        not_jpeg: "00003.jpg is not a JPEG file",
        truncated: "TVL1jpg_x_00002.jpg is a truncated JPEG (no end marker)",
    }
    assert FlowStore(out).video_ids() == [good]
    shutil.copy(tree / good / "00007.jpg", tree / gap / "00007.jpg")  # repaired: a rerun retries it
    rerun = run_cli("import-frames", str(tree), "--out", str(out), "--workers", "1", "--no-progress", check=False)
    assert "1 imported, 1 already done, 3 failed" in rerun.stdout
    assert gap not in {item["video_id"] for item in json.loads((out / "failures.json").read_text())}


def test_killed_import_resumes_to_the_same_store(mars_tree, mars_store, tmp_path):
    out = tmp_path / "store"
    process = subprocess.Popen([sys.executable, "-m", "cli", "import-frames", str(mars_tree), "--out", str(out),
                                "--workers", "1", "--no-progress"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while not any(out.glob("videos/*/*.h5")):
            assert process.poll() is None and time.monotonic() < deadline, "the import ended before the kill"
            time.sleep(0.002)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole job, worker included
        process.wait()
    finished = list(out.glob("videos/*/*.h5"))
    assert 1 <= len(finished) < 8
    result = run_cli("import-frames", str(mars_tree), "--out", str(out), "--workers", "2", "--no-progress")
    assert f"{len(finished)} already done" in result.stdout
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    reference, resumed = store_content(mars_store[0]), store_content(out)
    assert reference.keys() == resumed.keys()
    for vid in reference:
        for a, b in zip(reference[vid], resumed[vid]):
            np.testing.assert_array_equal(a, b, err_msg=vid)
