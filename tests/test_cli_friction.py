"""What a new user meets when trying the recognition and flow commands with inputs the authors did not: score files
of different splits, a GPU that is not there, shard and device spellings, a file that is no checkpoint, more
DataLoader workers than CPUs, torch extraction workers, and videos OpenCV cannot open.

Every case runs the real command line in a subprocess on real files; the commands are independent, so one fixture
runs them a few at a time before the tests look at them. Runs whose outcome depends on the CPUs (worker counts,
torch threads) are pinned to chosen CPUs, as ``taskset`` would, so they mean the same on every machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, tiny_train_toml
from pipelines.scoring.scores import save_scores

PARALLEL = 3  # subprocesses at a time: most of each one's time is Python and torch starting up
CLASSES = ["down", "left", "right", "up"]
VIDEOS = ["down/down_0001", "left/left_0002", "right/right_0004", "up/up_0003"]
LABELS = [0, 1, 2, 3]
CPUS = sorted(os.sched_getaffinity(0))

# Loaded at start-up by every process whose PYTHONPATH holds it, the extraction's spawned workers included: each
# worker writes the number of torch threads it extracts with into THREADS_LOG/<pid>.
THREADS_HOOK = '''\
import os

if os.environ.get("THREADS_LOG"):
    import flow.extract

    _extract = flow.extract._extract

    def _noting_threads(job):
        import torch

        with open(os.path.join(os.environ["THREADS_LOG"], str(os.getpid())), "w") as note:
            note.write(str(torch.get_num_threads()))
        return _extract(job)

    flow.extract._extract = _noting_threads
'''


def _command(args: list, cpus: list[int] | None = None) -> list[str]:
    """The command line (``cpus``: only on these CPUs, set before the interpreter of ``mars-sta`` starts)."""
    args = [str(arg) for arg in args]
    if cpus is None:
        return [sys.executable, "-m", "cli", *args]
    pin = (f"import os, sys; os.sched_setaffinity(0, {cpus!r}); "
           "os.execv(sys.executable, [sys.executable, '-m', 'cli', *sys.argv[1:]])")
    return [sys.executable, "-c", pin, *args]


def _run(job: tuple[list[str], dict[str, str]]) -> subprocess.CompletedProcess:
    command, env = job
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _scores(path: Path, stream: str, split: int, videos=VIDEOS, labels=LABELS) -> Path:
    logits = np.eye(len(CLASSES))[labels] + 0.1 * np.arange(len(CLASSES))
    return save_scores(path, video_ids=videos, labels=labels, logits=logits, classes=CLASSES, split=split,
                       subset="test", stream=stream, protocol="mars:16")


def _inputs(root: Path, synth_store, flow_teacher: Path) -> SimpleNamespace:
    """Score files, files that are no checkpoint, bad videos, configs and the extraction hook."""
    c = SimpleNamespace(root=root, store=synth_store.store, videos=synth_store.videos, teacher=flow_teacher)
    scores = root / "scores"
    c.s1_rgb = _scores(scores / "s1" / "rgb.npz", "rgb", 1)
    c.s1_flow = _scores(scores / "s1" / "flow.npz", "flow", 1)
    c.s2_rgb = _scores(scores / "s2" / "rgb.npz", "rgb", 2)
    c.s2_flow = _scores(scores / "s2" / "flow.npz", "flow", 2)
    c.s1_flow_fewer = _scores(scores / "fewer" / "flow.npz", "flow", 1, VIDEOS[:2] + VIDEOS[3:], [0, 1, 3])
    c.s1_flow_relabelled = _scores(scores / "relabelled" / "flow.npz", "flow", 1, labels=[0, 1, 1, 3])
    c.text_checkpoint = root / "notes.pth"
    c.text_checkpoint.write_text("hello world: a text file saved under a checkpoint's name\n")
    c.store_video = next((synth_store.store / "videos").rglob("*.h5"))
    bad = root / "bad_videos"
    bad.mkdir()
    c.text_video = bad / "text.mp4"
    c.text_video.write_text("not a video at all\n" * 50)
    c.codec_video = bad / "codec.avi"  # a real AVI whose codec tag OpenCV's FFmpeg has no decoder for
    c.codec_video.write_bytes((synth_store.videos / "left" / "left_0001.avi").read_bytes().replace(b"MJPG", b"QZQZ"))
    c.two_videos = root / "two_videos.txt"
    c.two_videos.write_text("".join(f"{p}\n" for p in sorted(synth_store.videos.rglob("*.avi"))[:2]))
    c.train_toml = root / "train.toml"  # the tiny settings for one epoch, the number of workers left to the machine
    c.train_toml.write_text("".join(line + "\n" for line in tiny_train_toml().replace("epochs = 2", "epochs = 1")
                                    .splitlines() if not line.startswith("workers")))
    c.hooks = root / "hooks"
    c.hooks.mkdir()
    (c.hooks / "sitecustomize.py").write_text(THREADS_HOOK)
    c.threads_log = root / "threads"
    c.threads_log.mkdir()
    return c


def _gpu_not_there() -> tuple[str, str]:
    """A ``--device`` naming a GPU this machine lacks, and what the refusal says."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "cuda:0", "error: --device cuda:0: no CUDA device is available (use --device cpu or auto)"
    return f"cuda:{count}", f"error: --device cuda:{count}: no such CUDA device (torch sees {count}: cuda:0 to " \
                            f"cuda:{count - 1})"


def _jobs(c: SimpleNamespace) -> dict[str, tuple[list[str], dict[str, str]]]:
    out = c.root / "out"
    extract = ["extract-flow", c.videos, "--no-progress"]
    c.gpu, c.gpu_refusal = _gpu_not_there()
    jobs = {
        "fuse_no_common_stream": _command(["fuse", c.s1_rgb, c.s2_flow, "--out", out / "no_common"]),
        "fuse_common_stream": _command(["fuse", c.s1_rgb, c.s1_flow, c.s2_rgb, "--out", out / "common"]),
        "fuse_videos_differ": _command(["fuse", c.s1_rgb, c.s1_flow_fewer, "--out", out / "videos_differ"]),
        "fuse_labels_differ": _command(["fuse", c.s1_rgb, c.s1_flow_relabelled, "--out", out / "labels_differ"]),
        "checkpoint_text": _command(["evaluate", "--checkpoint", c.text_checkpoint, "--store", c.store,
                                     "--out", out / "text.npz"]),
        "checkpoint_hdf5": _command(["evaluate", "--checkpoint", c.store_video, "--store", c.store,
                                     "--out", out / "hdf5.npz"]),
        "torch_gpu_not_there": _command([*extract, "--out", out / "gpu_store", "--backend", "torch",
                                         "--device", c.gpu]),
        "opencv_gpu": _command([*extract, "--out", out / "opencv_gpu_store", "--device", "cuda:0"]),
        "device_misspelt": _command([*extract, "--out", out / "misspelt_store", "--device", "gpu"]),
        "shard_of_none": _command([*extract, "--out", out / "shard_store", "--shard", "0/0"]),
        "predict_bad_videos": _command(["predict", c.text_video, c.codec_video, "--checkpoint", c.teacher,
                                        "--no-progress"]),
    }
    jobs = {name: (command, {}) for name, command in jobs.items()}
    if len(CPUS) >= 2:  # two extraction workers on two CPUs
        jobs["torch_workers"] = (
            _command(["extract-flow", c.two_videos, "--out", out / "torch_store", "--backend", "torch", "--device",
                      "cpu", "--workers", "2", "--preset", "cheap", "--short-side", "0", "--no-progress"], CPUS[:2]),
            {"PYTHONPATH": f"{c.hooks}{os.pathsep}{REPO}", "THREADS_LOG": str(c.threads_log)})
    # Training on one CPU: the default starts no worker (the former default, 4, warned twice an epoch); two are
    # allowed, with one warning of ours.
    jobs["train_default_workers"] = (
        _command(["train", "--config", c.train_toml, "--stream", "rgb", "--store", c.store,
                  "--out", out / "train_default"], CPUS[:1]), {})
    jobs["train_more_workers_than_cpus"] = (
        _command(["train", "--config", c.train_toml, "--stream", "rgb", "--store", c.store, "--workers", "2",
                  "--out", out / "train_more"], CPUS[:1]), {})
    return jobs


@pytest.fixture(scope="module")
def ran(synth_store, flow_teacher, tmp_path_factory) -> SimpleNamespace:
    """Every command once, a few at a time; ``results`` by case name."""
    c = _inputs(tmp_path_factory.mktemp("friction"), synth_store, flow_teacher)
    jobs = _jobs(c)
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(_run, job) for name, job in jobs.items()}
        c.results = {name: future.result() for name, future in futures.items()}
    return c


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a refused command (exit status 2, no traceback)."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- fuse ----------------------------------------------------------------------------------------------------------
def test_fuse_of_splits_without_a_common_stream_is_one_line_naming_the_files(ran):
    line = _one_error_line(ran.results["fuse_no_common_stream"])
    assert line == (f"error: {ran.s2_flow}: no stream has test scores in every split, so no model can be averaged "
                    f"over splits: split 1 has rgb ({ran.s1_rgb}); split 2 has flow ({ran.s2_flow}); give every "
                    "split the same streams, or fuse each split on its own")
    assert not (ran.root / "out" / "no_common").exists()


def test_fuse_of_splits_with_a_common_stream_reports_each_split_and_the_mean_of_the_common_one(ran):
    result = ran.results["fuse_common_stream"]
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    report = json.loads((ran.root / "out" / "common" / "report.json").read_text())
    rows = {(row["model"], row["split"]) for row in report["rows"]}
    assert rows == {("rgb", 1), ("flow", 1), ("rgb+flow", 1), ("rgb", 2), ("rgb", "mean")}
    assert set(report["best"]) == {"1", "2"}
    assert "* rgb " in result.stdout  # the best model by mean top-1 is marked in the terminal table


def test_fuse_names_a_differing_video_as_plain_text(ran):
    fewer = _one_error_line(ran.results["fuse_videos_differ"])
    assert fewer == (f"error: {ran.s1_flow_fewer}: videos differ from {ran.s1_rgb} (3 vs 4 videos; "
                     "lacks 'right/right_0004')")
    relabelled = _one_error_line(ran.results["fuse_labels_differ"])
    assert relabelled == f"error: {ran.s1_flow_relabelled}: labels differ from {ran.s1_rgb} (video 'right/right_0004')"


# -- checkpoints that are no checkpoints -------------------------------------------------------------------------
@pytest.mark.parametrize("case, path, what", [
    ("checkpoint_text", "text_checkpoint", "a text file"),
    ("checkpoint_hdf5", "store_video", "an HDF5 file (a flow-store video?)"),
])
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(ran, case, path, what):
    line = _one_error_line(ran.results[case])
    assert line == (f"error: {getattr(ran, path)}: is not a PyTorch checkpoint: it is {what}, not the zip archive "
                    "torch.save writes")
    assert not (ran.root / "out" / f"{case.removeprefix('checkpoint_')}.npz").exists()


# -- extract-flow: devices, shards, torch workers ----------------------------------------------------------------
@pytest.mark.parametrize("case, store, expected", [
    ("torch_gpu_not_there", "gpu_store", None),
    ("opencv_gpu", "opencv_gpu_store",
     "error: --device cuda:0: OpenCV's TV-L1 runs on the CPU only; add --backend torch to run on a GPU"),
    ("device_misspelt", "misspelt_store", "error: --device: 'gpu': expected auto, cpu, cuda or cuda:N"),
    ("shard_of_none", "shard_store", "error: --shard: '0/0': N must be at least 1 (I/N takes share I of N, "
                                     "numbered from 0: 0/4, 1/4, 2/4 and 3/4 are the four shares of 4)"),
])
def test_extract_flow_refuses_a_device_or_shard_before_any_work(ran, case, store, expected):
    assert _one_error_line(ran.results[case]) == (expected or ran.gpu_refusal)
    assert not (ran.root / "out" / store).exists()


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to give two workers one each")
def test_torch_extraction_workers_share_the_cpus(ran):
    result = ran.results["torch_workers"]
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    assert "2 extracted" in result.stdout and "2 workers" in result.stdout
    threads = [int(note.read_text()) for note in ran.threads_log.iterdir()]
    assert threads and threads == [1] * len(threads)  # 2 CPUs // 2 workers; torch alone would take 2 each


# -- train: DataLoader workers -----------------------------------------------------------------------------------
def test_train_default_workers_follow_the_cpus_without_a_warning(ran):
    result = ran.results["train_default_workers"]
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    assert "warning" not in result.stdout
    manifest = json.loads((ran.root / "out" / "train_default" / "manifest.json").read_text())
    assert manifest["loader_workers"] == 0  # one CPU: it is the training loop's


def test_train_with_more_workers_than_cpus_warns_once_in_one_line(ran):
    result = ran.results["train_more_workers_than_cpus"]
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr  # PyTorch's warning is gone
    warnings = [line for line in result.stdout.splitlines() if "warning" in line]
    assert warnings == ["warning: workers 2 is more than the 1 CPU(s) each training process may use; the workers "
                        "will compete for them and slow training down (default: 0)"]
    manifest = json.loads((ran.root / "out" / "train_more" / "manifest.json").read_text())
    assert manifest["loader_workers"] == 2


# -- predict -------------------------------------------------------------------------------------------------------
def test_predict_on_videos_opencv_cannot_open_prints_only_its_own_lines(ran):
    result = ran.results["predict_bad_videos"]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    lines = sorted(result.stderr.splitlines())  # OpenCV's and FFmpeg's own [ WARN ] and [ERROR] lines are silenced
    assert len(lines) == 2, result.stderr
    assert lines[0] in (f"failed: {ran.codec_video}: cannot be opened as a video",
                        f"failed: {ran.codec_video}: no frame could be decoded")
    assert lines[1] == f"failed: {ran.text_video}: cannot be opened as a video"
