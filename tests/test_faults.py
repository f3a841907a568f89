"""Faults injected into real runs of the command line: SIGKILL at chosen moments, a full disk, a second writer.

Moments that cannot be seen from outside (inside validation, halfway through writing a checkpoint) are reached by
``hooks/sitecustomize.py``, which Python loads at start-up from the child's PYTHONPATH: it wraps a function of the
running program and kills (or holds) the process there. Nothing in the product knows about it.
"""
from __future__ import annotations

import fcntl
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli, tiny_train_toml
from flow import FlowStore
from flow.verify import verify_store
from pipelines.core.checkpoint import load_checkpoint

EXTRACT = ["--preset", "cheap", "--short-side", "0", "--workers", "2", "--no-progress"]
# One OpenCV/torch thread per process: several children share two cores, and all runs see the same setting.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

HOOKS = '''\
"""Kill or hold this process at one moment of a run: FAULT="<kill|hold>:<moment>"."""
import os
import signal
import time

_FAULT = os.environ.get("FAULT")


def _act(action):
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.environ["FAULT_HELD"], "w") as note:  # hold: say so, then wait to be released
        note.write(str(os.getpid()))
    while not os.path.exists(os.environ["FAULT_RELEASE"]):
        time.sleep(0.01)


if _FAULT:
    _action, _moment = _FAULT.split(":")
    if _moment == "extract":
        import flow.extract

        _extract = flow.extract.extract_flow

        def _extract_then_act(*args, **kwargs):
            _act(_action)
            return _extract(*args, **kwargs)

        flow.extract.extract_flow = _extract_then_act
    else:
        import io

        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        import pipelines.stages.train

        _calls = {"validate": 0}
        _validate = pipelines.stages.train.validate

        def _counting_validate(*args, **kwargs):
            _calls["validate"] += 1
            if _moment == "validation" and _calls["validate"] == 2:  # epoch 2's validation
                _act(_action)
            return _validate(*args, **kwargs)

        pipelines.stages.train.validate = _counting_validate

        def _after_step(optimizer, args, kwargs):
            if _moment == "mid-epoch" and _calls["validate"] == 1:  # epoch 2's first step is done
                _act(_action)

        register_optimizer_step_post_hook(_after_step)

        _save = torch.save
        _saves = {"last": 0}

        def _half_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and "optimizer" in obj:
                _saves["last"] += 1
                if _moment == "checkpoint-write" and _saves["last"] == 2:  # epoch 2's last.pth
                    buffer = io.BytesIO()
                    _save(obj, buffer, *args, **kwargs)
                    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return _save(obj, f, *args, **kwargs)

        torch.save = _half_save
'''


def _popen(args, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *map(str, args)], cwd=REPO, env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the process ended before the awaited moment: " + process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _group_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether every process of the session ``pid`` led (the extraction and its workers) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def _one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# -- extraction ----------------------------------------------------------------------------------------------------
def _finished(store: Path) -> list[Path]:
    return sorted(store.glob("videos/*/*.h5"))


def _temporaries(store: Path) -> list[Path]:
    return sorted(store.glob("videos/*/*.tmp-*"))


def assert_same_store(store: Path, reference: Path) -> None:
    """Same videos, arrays and attributes, and the same manifest but for its creation time."""
    a, b = FlowStore(store), FlowStore(reference)
    assert a.video_ids() == b.video_ids()
    for video in b.video_ids():
        np.testing.assert_array_equal(a.frames(video), b.frames(video), err_msg=video)
        np.testing.assert_array_equal(a.flow_codes(video), b.flow_codes(video), err_msg=video)
        assert a.attrs(video) == b.attrs(video)
    assert {**a.manifest, "created": None} == {**b.manifest, "created": None}
    report = verify_store(store)
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> SimpleNamespace:
    """Eight small synthetic videos and their store, extracted in one uninterrupted run."""
    from pipelines.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("fault_clips")
    generate(root / "data", SynthConfig(classes=2, videos_per_class=4, frames=13, size=48, seed=4))
    videos, reference = root / "data" / "videos", root / "reference"
    run_cli("extract-flow", str(videos), "--out", str(reference), *EXTRACT)
    return SimpleNamespace(root=root, videos=videos, reference=reference, count=len(_finished(reference)))


def _kill_and_rerun(clips: SimpleNamespace, store: Path, finished_before: int, whole_group: bool) -> dict:
    """Kill an extraction while a video is being written after ``finished_before`` are done; rerun it to the end."""
    process = _popen(["extract-flow", clips.videos, "--out", store, *EXTRACT])
    try:
        _wait_for(lambda: len(_finished(store)) >= finished_before and _temporaries(store), process)
    finally:
        if whole_group:  # the job and its workers, as a crash of the node or scancel would
            os.killpg(process.pid, signal.SIGKILL)
        else:  # the parent only: its workers must die with it
            os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    workers_gone = _group_gone(process.pid)
    done = len(_finished(store))
    rerun = run_cli("extract-flow", str(clips.videos), "--out", str(store), *EXTRACT, check=False)
    return {"done": done, "workers_gone": workers_gone, "rerun": rerun}


def test_extraction_killed_at_ten_points_resumes_to_the_uninterrupted_store(clips, tmp_path):
    points = random.Random(7).sample(range(clips.count - 2), 5) * 2  # videos finished before the kill
    trials = {k: (tmp_path / f"kill{k}", before, k % 2 == 0) for k, before in enumerate(points)}
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(trials, pool.map(lambda t: _kill_and_rerun(clips, *t), trials.values())))
    for k, (store, before, _) in trials.items():
        result = results[k]
        assert result["workers_gone"], f"trial {k}: workers outlived the killed extraction"
        assert before <= result["done"] < clips.count, f"trial {k}: the kill did not land mid-run"
        assert result["rerun"].returncode == 0, result["rerun"].stderr
        assert f"{result['done']} already done" in result["rerun"].stdout
        assert _temporaries(store) == []
        assert_same_store(store, clips.reference)


def test_extraction_on_a_full_disk_stops_with_one_line_and_keeps_what_was_done(clips, tmp_path):
    store = tmp_path / "store"
    run_cli("extract-flow", str(clips.videos), "--out", str(store), "--shard", "0/2", *EXTRACT)
    before = {path: path.read_bytes() for path in _finished(store)}
    smallest = min(path.stat().st_size for path in _finished(clips.reference))
    args = [sys.executable, "-m", "cli", "extract-flow", str(clips.videos), "--out", str(store), *EXTRACT]
    full = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120,
                          preexec_fn=_file_size_limit(smallest // 2))
    line = _one_error_line(full)
    assert line.startswith(f"error: {store}/videos/") and ".h5: File too large: the file was not written" in line
    assert {path: path.read_bytes() for path in _finished(store)} == before
    assert _temporaries(store) == [] and verify_store(store).ok

    run_cli("extract-flow", str(clips.videos), "--out", str(store), *EXTRACT)
    assert_same_store(store, clips.reference)


# -- training ------------------------------------------------------------------------------------------------------
class CheckpointWatcher(threading.Thread):
    """Loads every ``*.pth`` of the watched folders each time one changes, while the runs go on."""

    def __init__(self, folders: list[Path]) -> None:
        super().__init__(daemon=True)
        self.folders, self.seen, self.failures = folders, set(), []
        self.running = True

    def run(self) -> None:
        while self.running:
            for path in [p for folder in self.folders for p in folder.glob("*.pth")]:
                try:
                    stat = path.stat()
                    version = (path, stat.st_ino, stat.st_mtime_ns)
                    if version not in self.seen:
                        self.seen.add(version)
                        load_checkpoint(path)
                except FileNotFoundError:
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure to load is what this looks for
                    self.failures.append(f"{path}: {exc}")
            time.sleep(0.005)

    def stop(self) -> None:
        self.running = False
        self.join()


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "last.pth").state_dict


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def training(synth_store, tmp_path_factory) -> SimpleNamespace:
    """Every training scenario of this module, run a few at a time.

    First round: the uninterrupted reference (held in its second validation while another training is started on
    its folder), three runs killed in epoch 2 (mid-epoch, while writing last.pth, during validation) and one
    under a file-size limit. Second round: each killed run resumed, and the limited run rerun without the limit.
    """
    from mars_sta import build_model

    root = tmp_path_factory.mktemp("fault_training")
    (root / "hooks").mkdir()
    (root / "hooks" / "sitecustomize.py").write_text(HOOKS)
    config = root / "train.toml"
    config.write_text(tiny_train_toml().replace("batch_size = 8", "batch_size = 4"))  # three steps an epoch
    t = SimpleNamespace(root=root, outs={}, first={}, second={}, after_kill={})

    def args(name: str) -> list:
        t.outs[name] = root / name
        return ["train", "--config", config, "--stream", "rgb", "--store", synth_store.store, "--out", root / name]

    def hooked(fault: str) -> dict[str, str]:
        return {**ENV, "PYTHONPATH": f"{root / 'hooks'}{os.pathsep}{REPO}", "FAULT": fault,
                "FAULT_HELD": str(root / "held"), "FAULT_RELEASE": str(root / "release")}

    model = build_model("tiny_resnet", num_classes=4, sample_size=32, sample_duration=16)
    weights_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    moments = ("mid-epoch", "checkpoint-write", "validation")
    watcher = CheckpointWatcher([root / name for name in ("reference", *moments, "disk-full")])
    watcher.start()
    running = {"reference": _popen(args("reference"), hooked("hold:validation"))}
    for moment in moments:
        running[moment] = _popen(args(moment), hooked(f"kill:{moment}"))
    # best.pth holds the weights, last.pth also AdamW's two moments: a limit between them fails the first last.pth
    running["disk-full"] = _popen(args("disk-full"), preexec_fn=_file_size_limit(2 * weights_bytes))
    _wait_for((root / "held").exists, running["reference"])
    t.held_folder = _listing(t.outs["reference"])
    t.refused = run_cli(*map(str, args("reference")), check=False)
    t.held_folder_after = _listing(t.outs["reference"])
    (root / "release").touch()
    t.first = {name: (process, *process.communicate(timeout=300)) for name, process in running.items()}
    for moment in moments:
        folder = t.outs[moment]
        t.after_kill[moment] = {"files": sorted(p.name for p in folder.iterdir()),
                                "epoch": load_checkpoint(folder / "last.pth").epoch}
    running = {name: _popen(args(name)) for name in (*moments, "disk-full")}
    t.second = {name: (process, *process.communicate(timeout=300)) for name, process in running.items()}
    watcher.stop()
    t.watcher = watcher
    return t


def _resumed_to_reference(training, moment: str) -> None:
    process, stdout, stderr = training.first[moment]
    assert process.returncode == -signal.SIGKILL, stderr
    assert training.after_kill[moment]["epoch"] == 1, "the kill must land in epoch 2"
    process, stdout, stderr = training.second[moment]
    assert process.returncode == 0, stderr
    assert "resuming rgb from epoch 1" in stdout
    assert not list(training.outs[moment].glob(".*.tmp"))
    assert _same_weights(_weights(training.outs[moment]), _weights(training.outs["reference"]))
    assert len((training.outs[moment] / "metrics.jsonl").read_text().splitlines()) == 2


def test_reference_run_finished(training):
    process, stdout, stderr = training.first["reference"]
    assert process.returncode == 0, stderr
    assert load_checkpoint(training.outs["reference"] / "last.pth").epoch == 2


def test_training_killed_mid_epoch_resumes_to_the_same_weights(training):
    _resumed_to_reference(training, "mid-epoch")


def test_training_killed_while_writing_a_checkpoint_keeps_the_previous_one(training):
    files = training.after_kill["checkpoint-write"]["files"]
    halves = [name for name in files if name.startswith(".last.pth.") and name.endswith(".tmp")]
    assert len(halves) == 1, f"the kill must land halfway through writing last.pth: {files}"
    _resumed_to_reference(training, "checkpoint-write")  # also: the half-written temporary is gone


def test_training_killed_during_validation_resumes_to_the_same_weights(training):
    _resumed_to_reference(training, "validation")


def test_no_checkpoint_on_disk_is_ever_half_written(training):
    assert training.watcher.failures == []
    assert len(training.watcher.seen) >= 10  # it did watch: several versions of best.pth and last.pth per run


def test_training_on_a_full_disk_stops_with_one_line_and_keeps_what_was_written(training):
    process, stdout, stderr = training.first["disk-full"]
    folder = training.outs["disk-full"]
    line = _one_error_line(SimpleNamespace(returncode=process.returncode, stderr=stderr))
    assert line.startswith(f"error: {folder / 'last.pth'}: File too large: the file was not written")
    process, stdout, stderr = training.second["disk-full"]
    assert process.returncode == 0, stderr
    assert _same_weights(_weights(folder), _weights(training.outs["reference"]))


def test_a_second_training_on_the_same_folder_is_refused(training):
    line = _one_error_line(training.refused)
    assert line == (f"error: {training.outs['reference']}: another mars-sta process is writing to this folder; "
                    "wait for it to finish or use another --out")
    assert training.held_folder_after == training.held_folder  # the refused one touched nothing


def test_a_second_run_on_the_same_folder_is_refused(clips, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nvideos = "{clips.videos}"\nstreams = ["flow"]\n\n[extract]\nshort_side = 0\n'
                      f'preset = "cheap"\nworkers = 2\n\n' + tiny_train_toml())
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOKS)
    env = {**ENV, "PYTHONPATH": f"{hooks}{os.pathsep}{REPO}", "FAULT": "hold:extract",
           "FAULT_HELD": str(tmp_path / "held"), "FAULT_RELEASE": str(tmp_path / "never")}
    out = tmp_path / "out"
    first = _popen(["run", config, "--out", out], env)
    try:
        _wait_for((tmp_path / "held").exists, first)
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        second = run_cli("run", str(config), "--out", str(out), check=False)
        after = sorted(p.relative_to(out) for p in out.rglob("*"))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    assert _one_error_line(second) == (f"error: {out}: another mars-sta process is writing to this folder; "
                                       "wait for it to finish or use another --out")
    assert after == before
    with open(out / ".lock") as handle:  # the killed holder's lock went with it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
