"""``mars-sta run`` deletes or overwrites only what it made, and refuses a bad config before its first stage.

Each case runs the real command line in a subprocess (a few at a time, in one module-scoped fixture) in a folder of
its own holding the config and the user's files. A refusal is one line on stderr and exit status 2, and leaves that
folder byte for byte as it was: no run folder, no generated video, no store. One chain runs ``run`` for real: a
rerun rewrites the run's own synthetic set and deletes the run's own store, while a rerun that changes the store's
preprocessing is refused before any work.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_train_toml

PARALLEL = 3  # subprocesses at a time: most of each one's time is Python and torch starting up
HAS_CUDA = torch.cuda.is_available()

# One S-CNN row on two tiny untrimmed videos: the whole run takes seconds.
DETECTION = """
[detection]
models = ["s-cnn"]
tiou = [0.5]
timeline_videos = 0

[detection.synth]
classes = 2
val_videos = 1
test_videos = 1
frames = [32, 40]
action_frames = [8, 12]
idle_frames = [0, 2]
instances = [1, 2]
size = 16
seed = 2

[extract]
short_side = 0
preset = "cheap"
workers = 1

[detection.train]
stream = "flow"
frames = 4
size = 16
window_lengths = [8, 16]
proposal_positive = 0.5
epochs = 1
batch_size = 64
device = "cpu"

[detection.detect]
proposal_threshold = 0.0
device = "cpu"
"""

RECOGNITION = """
[synth]
classes = 2
videos_per_class = 2
frames = 5
size = 16

[data]
videos = "data/videos"
streams = ["flow"]

[extract]
short_side = 0
preset = "cheap"

""" + tiny_train_toml()

REFUSED_STORE = ("{case}/{store}: {table} writes new videos, so this store's flow would be stale, but this run did "
                 "not make the store (not in {case}/out/stages/stores.json) and will not delete it: name a new store, "
                 "or delete it yourself")
NOT_OURS = ("{case}/data: folder is not empty and not a synthetic dataset written by synth (found {found!r}, which no "
            "synth.json there lists): give a new or empty folder")


# -- the user's files --------------------------------------------------------------------------------------------
def _bytes(seed: int, size: int = 2048) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _user_detection_data(folder: Path, shared: SimpleNamespace) -> None:
    (folder / "data" / "videos").mkdir(parents=True)
    for index in (1, 2):
        (folder / "data" / "videos" / f"match_{index:02d}.avi").write_bytes(_bytes(index))
    (folder / "data" / "annotations.json").write_text('{"database": {"match_01": {"subset": "testing"}}}\n')


def _synthetic_set_with_a_user_video(folder: Path, shared: SimpleNamespace) -> None:
    """An untrimmed synthetic set (another seed than the config's), to which the user added a video of their own."""
    from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed

    generate_untrimmed(folder / "data", UntrimmedConfig(classes=2, val_videos=1, test_videos=1, frames=(32, 40),
                                                        action_frames=(8, 12), idle_frames=(0, 2), size=16, seed=5))
    (folder / "data" / "videos" / "holiday.avi").write_bytes(_bytes(3))


def _user_recognition_data(folder: Path, shared: SimpleNamespace) -> None:
    (folder / "data" / "videos" / "Jump").mkdir(parents=True)
    (folder / "data" / "videos" / "Jump" / "jump_01.avi").write_bytes(_bytes(4))
    (folder / "data" / "splits").mkdir()
    (folder / "data" / "splits" / "classInd.txt").write_text("1 Jump\n")
    (folder / "data" / "splits" / "trainlist01.txt").write_text("Jump/jump_01.avi 1\n")


def _user_folder(folder: Path, shared: SimpleNamespace) -> None:
    (folder / "mine" / "photos").mkdir(parents=True)
    (folder / "mine" / "notes.txt").write_text("not a flow store\n")
    (folder / "mine" / "photos" / "cat.jpg").write_bytes(_bytes(5))


def _another_flow_store(folder: Path, shared: SimpleNamespace) -> None:
    shutil.copytree(shared.store, folder / "theirs")


def _no_files(folder: Path, shared: SimpleNamespace) -> None:
    pass


# -- the cases ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One row of docs/errors.md: a run config, the user's files beside it, what the single stderr line says."""

    name: str
    config: str | bytes
    says: str  # the line after "error: " starts with it; {case} is the case's folder
    user_files: Callable[[Path, SimpleNamespace], None] = field(default=_no_files)
    needs_a_machine_without_cuda: bool = False


def _edited(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _detection(*edits: tuple[str, str]) -> str:
    return _edited(DETECTION, *edits)


def _recognition(*edits: tuple[str, str]) -> str:
    return _edited(RECOGNITION, *edits)


CONFIG = "{case}/run.toml: "
MODELS = 'models = ["s-cnn"]'
CASES = [
    Case("[detection.synth] into a user's dataset", DETECTION,
         NOT_OURS.format(case="{case}", found="annotations.json"),
         _user_detection_data),
    Case("[detection.synth] into a synthetic set holding a user's video", DETECTION,
         NOT_OURS.format(case="{case}", found="videos/holiday.avi"),
         _synthetic_set_with_a_user_video),
    Case("[synth] into a user's dataset", RECOGNITION,
         NOT_OURS.format(case="{case}", found="splits"),
         _user_recognition_data),
    Case("[detection] store naming a folder this run did not make", _detection((MODELS, MODELS + '\nstore = "mine"')),
         REFUSED_STORE.format(case="{case}", store="mine", table="[detection.synth]"), _user_folder),
    Case("[data] store naming a flow store of other preprocessing",
         _recognition(('streams = ["flow"]', 'streams = ["flow"]\nstore = "theirs"'),
                      ('preset = "cheap"', 'preset = "mid"')),
         REFUSED_STORE.format(case="{case}", store="theirs", table="[synth]"), _another_flow_store),
    Case("run config with a byte that is not UTF-8", b"# caf\xe9\n" + DETECTION.encode(),
         CONFIG + "not valid TOML (byte 0xe9 at offset 5 is not UTF-8)"),
    Case("[detection.train] normalization = 'foo'",
         _detection(('stream = "flow"', 'stream = "flow"\nnormalization = "foo"')),
         CONFIG + "[detection.train] normalization 'foo': expected one of mars, unit"),
    Case("[detection.rc3d] dropout = 1.5", _detection((MODELS, 'models = ["s-cnn", "r-c3d"]'))
         + '\n[detection.rc3d]\nmode = "end-to-end"\ndropout = 1.5\n',
         CONFIG + "[detection.rc3d] dropout must lie in [0, 1), got 1.5"),
    Case("[detection.train] device = 'cuda' without a GPU", _detection(('device = "cpu"', 'device = "cuda"')),
         CONFIG + "[detection.train] device 'cuda': no CUDA device is available here (use cpu or auto)",
         needs_a_machine_without_cuda=True),
    Case("[train] device = 'cuda' without a GPU", RECOGNITION + 'device = "cuda"\n',
         CONFIG + "[train] device 'cuda': no CUDA device is available here (use cpu or auto)",
         needs_a_machine_without_cuda=True),
    Case("[detection] test_subset = 'foo'", _detection((MODELS, MODELS + '\ntest_subset = "foo"')),
         CONFIG + "[detection] test_subset 'foo': expected one of test, val, train, testing, validation, training"),
    *[Case(f"[detection.{table}] without an R-C3D row", DETECTION + f"\n[detection.{table}]\n{key} = {value}\n",
           CONFIG + f"[detection.{table}] is given but [detection] models lists no R-C3D row (r-c3d, sta-r-c3d), so "
                    "its values would be ignored: add a row or remove the table")
      for table, key, value in (("rc3d", "epochs", 2), ("rc3d_detect", "nms_threshold", 0.3))],
    Case("[detection.synth] with videos or annotations elsewhere",
         _detection((MODELS, MODELS + '\nannotations = "gt.json"')),
         CONFIG + "[detection] videos and annotations: [detection.synth] writes {case}/data/videos and "
                  "{case}/data/annotations.json (and the folder {case}/data/annotations), so they must name those, "
                  "not {case}/data/videos and {case}/gt.json"),
    Case("[synth] with videos or splits elsewhere", _recognition(('"data/videos"', '"data/clips"')),
         CONFIG + "[data] videos and splits: [synth] writes {case}/data/videos and {case}/data/splits, so they must "
                  "name those, not {case}/data/clips and {case}/data/splits"),
]


# -- running them ------------------------------------------------------------------------------------------------
def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: a file's SHA-256, ``/`` for a folder."""
    return {p.relative_to(folder).as_posix(): "/" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def _own_output_chain(folder: Path) -> SimpleNamespace:
    """A real run; a rerun with other preprocessing (refused); a rerun on newly generated videos (accepted)."""
    folder.mkdir()
    out, chain = folder / "out", SimpleNamespace(folder=folder)
    for name, text in {"run": DETECTION, "mid": _detection(('preset = "cheap"', 'preset = "mid"')),
                       "seed4": _detection(("seed = 2", "seed = 4"))}.items():
        (folder / f"{name}.toml").write_text(text)
    chain.first = run_cli("run", str(folder / "run.toml"), "--out", str(out), check=False)
    chain.before_refusal = _tree(folder)
    chain.refused = run_cli("run", str(folder / "mid.toml"), "--out", str(out), check=False)
    chain.after_refusal = _tree(folder)
    # Training on other videos into a detector's folder is refused (use another --out or delete it): delete it.
    shutil.rmtree(out / "detection" / "s-cnn")
    chain.second = run_cli("run", str(folder / "seed4.toml"), "--out", str(out), check=False)
    return chain


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, synth_store) -> SimpleNamespace:
    """Every case run once (a few at a time, beside the chain) with what its folder held before."""
    root = tmp_path_factory.mktemp("run-safety")
    shared = SimpleNamespace(store=synth_store.store)
    jobs = {}
    for case in CASES:
        if case.needs_a_machine_without_cuda and HAS_CUDA:
            continue  # there the config is valid: the run would start
        folder = root / re.sub(r"[^a-z0-9]+", "-", case.name.lower()).strip("-")
        folder.mkdir()
        case.user_files(folder, shared)
        config = case.config if isinstance(case.config, bytes) else case.config.encode()
        (folder / "run.toml").write_bytes(config)
        jobs[case.name] = (folder, _tree(folder))
    with ThreadPoolExecutor(PARALLEL) as pool:
        chain = pool.submit(_own_output_chain, root / "own-output")
        futures = {name: pool.submit(run_cli, "run", str(folder / "run.toml"), "--out", str(folder / "out"),
                                     check=False) for name, (folder, _) in jobs.items()}
        results = {name: (future.result(), *jobs[name]) for name, future in futures.items()}
        return SimpleNamespace(cases=results, chain=chain.result())


def _one_error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_run_refuses_before_any_work(case: Case, outcomes):
    if case.needs_a_machine_without_cuda and HAS_CUDA:
        pytest.skip("this machine has a CUDA device, so the config is valid here")
    result, folder, before = outcomes.cases[case.name]
    line = _one_error_line(result)
    assert line.startswith("error: " + case.says.format(case=folder)), line
    assert _tree(folder) == before  # the user's files byte for byte; no run folder, no generated data, no store


def test_a_rerun_with_other_preprocessing_is_refused_before_any_work(outcomes):
    chain = outcomes.chain
    assert chain.first.returncode == 0, chain.first.stderr
    store = chain.folder / "out" / "detection" / "store"
    assert _one_error_line(chain.refused).startswith(
        f"error: {store}: was extracted with other preprocessing; use another [detection] store or the same "
        "settings: ")
    assert chain.after_refusal == chain.before_refusal


def test_a_rerun_rewrites_its_own_synthetic_set_and_deletes_its_own_store(outcomes):
    chain = outcomes.chain
    data, store = chain.folder / "data", chain.folder / "out" / "detection" / "store"
    assert chain.second.returncode == 0, chain.second.stdout + chain.second.stderr
    assert "[run]  generate the untrimmed synthetic videos" in chain.second.stdout
    assert f"[del]  flow store {store}, made by this run: [detection.synth] wrote new videos" in chain.second.stdout
    info = json.loads((data / "synth.json").read_text())
    assert info["config"]["seed"] == 4
    written = {name for name, kind in _tree(data).items() if kind != "/"}
    assert written == {*info["files"], "synth.json"}  # nothing stale, no journal left over
    made = json.loads((chain.folder / "out" / "stages" / "stores.json").read_text())
    assert made == {str(store): hashlib.sha256((store / "manifest.json").read_bytes()).hexdigest()}
    assert json.loads((chain.folder / "out" / "detection" / "report.json").read_text())["rows"]


def test_every_case_has_its_row_in_the_errors_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    names = [case.name for case in CASES] + ["a rerun with other preprocessing"]
    assert [name for name in names if f"| {name} |" not in text] == []
