"""Bad input to the detection commands, ``synth`` and ``verify-store``, through the real command line in a
subprocess: one line naming the option or the file, exit status 2, and nothing created or changed. Also what
``synth`` does with its own earlier output, and progress bars in a log (stderr not a terminal).

The commands are independent, except that some detect with the S-CNN detector that one of them trains; the module
runs them in two rounds, a few at a time, before the tests look at the results.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from conftest import REPO, immutable_folder, run_cli, tiny_train_toml
from flow.progress import LOG_INTERVAL
from pipelines.data.annotations import read_annotations
from pipelines.detection.rc3d import RC3DConfig
from pipelines.detection.scnn import DetectorConfig

PARALLEL = 3  # subprocesses at a time: most of each one's time is Python and torch starting up
LOOP = "video_test_0002"  # the store video whose file is made a symbolic link to itself
SMALL_UNTRIMMED = dict(classes=4, val_videos=2, test_videos=2, frames=(40, 48), action_frames=(8, 14),
                       idle_frames=(0, 3), instances=(1, 2), size=16)  # earlier outputs of synth --untrimmed
SCNN_TOML = "[detection.train]\nwindow_lengths = [8, 16]\nproposal_positive = 0.5\n"
TINY_SCNN = ["--config", "{detector_toml}", "--epochs", "1", "--frames", "4", "--size", "24", "--batch-size", "8",
             "--seed", "1"]


def _digest(folder: Path) -> dict[str, str]:
    """Every entry below ``folder``: files by content, folders and links by kind."""
    def kind(path: Path) -> str:
        if path.is_symlink() or not path.is_file():
            return "link" if path.is_symlink() else "folder"
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {path.relative_to(folder).as_posix(): kind(path) for path in sorted(folder.rglob("*"))}


TINY_RC3D = RC3DConfig(layer="layer3", stride=4, buffer=16, anchor_frames=(2, 4), proposal_hidden=8, hidden=16,
                       size=24, epochs=1, device="cpu")


def _tiny_rc3d(store: Path, annotations: Path, out: Path) -> Path:
    """A real R-C3D detector, trained for one epoch with the smallest heads."""
    from pipelines.detection.rc3d import train_rc3d

    train_rc3d(TINY_RC3D, store, read_annotations(annotations, "val"), out, log=lambda line: None)
    return out


def _edited_copy(model: Path, out: Path, edit: Callable[[dict], object]) -> Path:
    """A copy of an R-C3D folder whose checkpoint ``edit`` changed."""
    import torch

    shutil.copytree(model, out)
    payload = torch.load(out / "rc3d.pth", weights_only=True)
    edit(payload)
    torch.save(payload, out / "rc3d.pth")
    return out


def _recognition_checkpoints(out: Path) -> Path:
    """A folder holding recognition checkpoints under the S-CNN detector's file names."""
    from mars_sta import build_model
    from pipelines.core.checkpoint import Checkpoint, save_checkpoint

    out.mkdir()
    model = build_model("tiny_resnet", num_classes=3, in_channels=2, sample_size=24, sample_duration=4)
    for name in ("proposal.pth", "localization.pth"):
        save_checkpoint(out / name, Checkpoint.make(out / name, arch=model.arch, model_kwargs=model.build_kwargs,
                                                    state_dict=model.state_dict(), stream="flow",
                                                    classes=["a", "b", "c"], epoch=1).to_payload())
    return out


def _at_bound_10(payload: dict) -> None:
    """As if the detector's store had bounded its flow at 10 px, not 20."""
    payload["preprocessing"] = payload["input"]["flow"] = {**payload["preprocessing"], "bound": 10.0}
    payload.pop("preprocessing_hash")


@pytest.fixture(scope="module")
def c(untrimmed_store, synth_store, tmp_path_factory, request) -> SimpleNamespace:
    """Every input, made once; the shared stores are only ever read or copied."""
    from pipelines.data.synth import SynthConfig, generate
    from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed

    root = tmp_path_factory.mktemp("detection_cli")
    c = SimpleNamespace(root=root, store=untrimmed_store.store, annotations=untrimmed_store.annotations,
                        annotations_json=untrimmed_store.annotations_json, trimmed_store=synth_store.store,
                        model=root / "scnn", store_digest=_digest(untrimmed_store.store))
    c.loop_store = root / "loop_store"
    shutil.copytree(c.store, c.loop_store, ignore=shutil.ignore_patterns(".lock"))
    c.loop_file = c.loop_store / "videos" / f"{LOOP}.h5"
    c.loop_file.unlink()
    c.loop_file.symlink_to(c.loop_file.name)
    first, second = read_annotations(c.annotations_json, "test").classes[:2]
    c.parents = (first, second)
    for name, text in {"detector_toml": SCNN_TOML,
                       "parents_toml": f'[detection.detect]\nparent_classes = {{{first} = "{second}"}}\n',
                       "thumos_parents_toml": '[detection.detect]\nparent_classes = {CliffDiving = "Diving"}\n',
                       "tiny_toml": tiny_train_toml().replace("epochs = 2", "epochs = 1"),
                       "bad_sta_toml": '[detection.train]\nsta = "layer9"\n'}.items():
        setattr(c, name, root / f"{name}.toml")
        getattr(c, name).write_text(text)
    c.rc3d = _tiny_rc3d(c.store, c.annotations_json, root / "rc3d")
    c.rc3d_bound_10 = _edited_copy(c.rc3d, root / "rc3d_bound_10", _at_bound_10)
    c.rc3d_no_kwargs = _edited_copy(c.rc3d, root / "rc3d_no_kwargs", lambda p: p["detector"].pop("heads_kwargs"))
    c.rc3d_unknown = _edited_copy(c.rc3d, root / "rc3d_unknown", lambda p: p["detector"].update(kind="yolo"))
    c.rc3d_bad_input = _edited_copy(c.rc3d, root / "rc3d_bad_input", lambda p: p["input"].update(crop="centre"))
    c.recognition_pair = _recognition_checkpoints(root / "recognition_pair")
    c.locked = root / "locked"
    c.locked.mkdir()
    (c.locked / "kept.txt").write_text("written before\n")
    c.notes = root / "notes"  # a folder of the user's
    c.notes.mkdir()
    (c.notes / "notes.txt").write_text("mine\n")
    c.added = root / "added"  # synth's earlier output, and a file of the user's among its annotations
    generate_untrimmed(c.added, UntrimmedConfig(**{**SMALL_UNTRIMMED, "classes": 2}))
    (c.added / "annotations" / "notes.txt").write_text("mine\n")
    c.old_trimmed, c.old_untrimmed = root / "old_trimmed", root / "old_untrimmed"  # earlier runs with 4 classes
    generate(c.old_trimmed, SynthConfig(classes=4, videos_per_class=2, frames=5, size=16))
    generate_untrimmed(c.old_untrimmed, UntrimmedConfig(**SMALL_UNTRIMMED))
    c.before = {name: _digest(getattr(c, name)) for name in ("notes", "added", "rc3d")}
    c.read_only = immutable_folder(root / "read_only")
    if c.read_only is not None:
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(c.read_only)], check=True))
    return c


# -- refusals: one line, exit status 2 -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of docs/errors.md: the command and what its single stderr line must say, in order."""

    name: str
    args: list[str]  # "{name}" is an input of the fixture, "{out}" a fresh folder of the row's own
    says: Callable[[SimpleNamespace], list[str]]
    unchanged: Callable[[SimpleNamespace, Path], None] = field(default=lambda c, out: None)
    needs_model: bool = False  # detects with the S-CNN detector trained in the first round
    read_only: bool = False  # needs a folder that root cannot write into


def _train_detector(*extra: str, out: str = "{out}/detector") -> list[str]:
    return ["train-detector", "--store", "{store}", "--annotations", "{annotations}", "--out", out, "--device",
            "cpu", *extra]


def _detect(model: str, *extra: str, store: str = "{store}") -> list[str]:
    return ["detect", "--model", model, "--store", store, "--out", "{out}/d.json", "--device", "cpu", *extra]


def _nothing_created(c, out: Path) -> None:
    assert list(out.iterdir()) == [], "a refused command created files"
    assert _digest(c.store) == c.store_digest


def _kept(name: str) -> Callable[[SimpleNamespace, Path], None]:
    def check(c, out):
        _nothing_created(c, out)
        assert _digest(getattr(c, name)) == c.before[name]
    return check


def _path(c, name: str) -> str:
    return re.escape(str(getattr(c, name)))


ROWS = [
    Row("train-detector --arch unknown", _train_detector("--arch", "resnet11"),
        lambda c: ["--arch", r"unknown architecture 'resnet11' \(known: .*tiny_resnet\)"], _nothing_created),
    Row("train-detector --sta with an unknown stage", _train_detector("--sta", "layer9"),
        lambda c: ["--sta", r"unknown stage 'layer9' for tiny_resnet \(stages: layer1, layer2, layer3\)$"],
        _nothing_created),
    Row("train-detector --detector rc3d --sta with an unknown stage",
        _train_detector("--detector", "rc3d", "--sta", "layer9"),
        lambda c: ["--sta", r"unknown stage 'layer9' for tiny_resnet \(stages: layer1, layer2, layer3\)$"],
        _nothing_created),
    Row("train-detector with an unknown stage in its config file", _train_detector("--config", "{bad_sta_toml}"),
        lambda c: [_path(c, "bad_sta_toml"), r"\[detection.train\] sta: .*unknown stage 'layer9'"], _nothing_created),
    Row("train-detector --epochs 0", _train_detector("--epochs", "0"),
        lambda c: ["--epochs", r"0 is not in the range x>=1"], _nothing_created),
    Row("train-detector on a folder another process is writing",
        _train_detector(*TINY_SCNN, out="{locked}"),
        lambda c: [_path(c, "locked"), "another mars-sta process is writing to this folder; wait for it to finish "
                                       "or use another --out$"], _kept("locked")),
    Row("detect with an R-C3D model and neither --store nor --features",
        ["detect", "--model", "{rc3d}", "--out", "{out}/d.json", "--device", "cpu"],
        lambda c: [_path(c, "rc3d"), r"is an R-C3D model: give --store \(end to end\) or --features"],
        _kept("rc3d")),
    Row("detect on a store of other preprocessing than the detector's",
        _detect("{rc3d_bound_10}"),
        lambda c: [_path(c, "store"), r"was extracted with other preprocessing than the checkpoint was trained on: "
                                      r"bound 10\.0 \(checkpoint\) vs 20\.0 \(store\)$"], _nothing_created),
    Row("detect with a detector checkpoint lacking a field",
        _detect("{rc3d_no_kwargs}"),
        lambda c: [re.escape(f"{c.rc3d_no_kwargs}/rc3d.pth"), "checkpoint's detector fields lack 'heads_kwargs'$"],
        _nothing_created),
    Row("detect with a detector checkpoint of an unknown kind",
        _detect("{rc3d_unknown}"),
        lambda c: [re.escape(f"{c.rc3d_unknown}/rc3d.pth"), "checkpoint field 'detector' is of unknown kind 'yolo'$"],
        _nothing_created),
    Row("detect with recognition checkpoints as a detector",
        _detect("{recognition_pair}"),
        lambda c: [re.escape(f"{c.recognition_pair}/localization.pth"), "is not an S-CNN detector checkpoint$"],
        _nothing_created),
    Row("detect with a damaged input description",
        _detect("{rc3d_bad_input}"),
        lambda c: [re.escape(f"{c.rc3d_bad_input}/rc3d.pth"), "checkpoint field 'input' is damaged: unknown input "
                                                             "description keys: crop$"], _nothing_created),
    Row("features on a store of other preprocessing than the checkpoint's",
        ["features", "--checkpoint", "{rc3d_bound_10}/rc3d.pth", "--store", "{store}", "--out", "{out}/features",
         "--device", "cpu"],
        lambda c: [_path(c, "store"), r"was extracted with other preprocessing than the checkpoint was trained on: "
                                      r"bound 10\.0 \(checkpoint\) vs 20\.0 \(store\)$"], _nothing_created),
    Row("detect with a parent class the detector lacks",
        _detect("{model}", "--config", "{thumos_parents_toml}"),
        lambda c: [re.escape(f"{c.model}/localization.pth"), "parent_classes names 'CliffDiving', which is not one "
                                                              "of its classes"], _nothing_created, needs_model=True),
    Row("synth into a folder with other files", ["synth", "{notes}", "--classes", "2", "--videos-per-class", "2"],
        lambda c: [_path(c, "notes"), "folder is not empty and not a synthetic dataset written by synth "
                                      r"\(found 'notes.txt'"], _kept("notes")),
    Row("synth --untrimmed into its earlier output with a file added",
        ["synth", "--untrimmed", "{added}", "--classes", "2", "--size", "16"],
        lambda c: [_path(c, "added"), r"not a synthetic dataset written by synth \(found 'annotations/notes.txt'"],
        _kept("added")),
    Row("detect on a store whose video file is a symlink loop",
        _detect("{model}", store="{loop_store}"),
        lambda c: [_path(c, "loop_file"), "is a symbolic link that leads to no file"], _nothing_created,
        needs_model=True),
    Row("detect --out into a read-only folder",
        ["detect", "--model", "{model}", "--store", "{store}", "--out", "{read_only}/d.json", "--device", "cpu"],
        lambda c: ["--out", re.escape(f"{c.read_only}/d.json"), f"cannot be written: {_path(c, 'read_only')}: "
                   ".*not permitted"], lambda c, out: _read_only_untouched(c), needs_model=True, read_only=True),
]


def _read_only_untouched(c) -> None:
    assert [p.name for p in c.read_only.iterdir()] == ["kept.txt"]


# -- other commands the tests below look at ---------------------------------------------------------------------
RUNS = {  # name: (arguments, needs the S-CNN detector)
    "train-detector": (_train_detector(*TINY_SCNN, out="{model}"), False),
    "detect": (["detect", "--model", "{model}", "--store", "{store}", "--annotations", "{annotations_json}",
                "--out", "{out}/d.json", "--proposal-threshold", "0", "--device", "cpu"], True),
    "detect with parent classes": (["detect", "--model", "{model}", "--store", "{store}", "--annotations",
                                    "{annotations_json}", "--out", "{out}/d.json", "--proposal-threshold", "0",
                                    "--device", "cpu", "--config", "{parents_toml}"], True),
    "features": (["features", "--checkpoint", "{rc3d}/rc3d.pth", "--store", "{store}", "--out", "{out}/features",
                  "--layer", "layer3", "--stride", "4", "--buffer", "16", "--device", "cpu"], False),
    "train": (["train", "--config", "{tiny_toml}", "--stream", "flow", "--store", "{trimmed_store}", "--out",
               "{out}/train"], False),
    "verify-store": (["verify-store", "{loop_store}"], False),
    "synth": (["synth", "{old_trimmed}", "--classes", "2", "--videos-per-class", "2", "--frames", "5", "--size",
               "16"], False),
    "synth --untrimmed": (["synth", "--untrimmed", "{old_untrimmed}", "--classes", "2", "--size", "16"], False),
    "train-detector --help": (["train-detector", "--help"], False),
}


def _timed(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = run_cli(*args, check=False)
    return result, time.perf_counter() - started


def _run_all(jobs: dict[str, list[str]]) -> dict[str, tuple[subprocess.CompletedProcess, float]]:
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(_timed, args) for name, args in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def outcomes(c) -> dict[str, tuple[subprocess.CompletedProcess, float, Path]]:
    """Every row's and run's (result, seconds, out folder): first what needs no detector (the folder lock held by
    this process meanwhile, as a running training holds it), then what detects with the one trained then."""
    from pipelines.core.lock import folder_lock

    jobs, outs = {}, {}
    for index, (name, args, needs_model) in enumerate(
            [(row.name, row.args, row.needs_model) for row in ROWS if c.read_only or not row.read_only]
            + [(name, args, needs_model) for name, (args, needs_model) in RUNS.items()]):
        outs[name] = c.root / "out" / f"{index:02d}"
        outs[name].mkdir(parents=True)
        names = {"out": outs[name], **{k: v for k, v in vars(c).items() if isinstance(v, Path)}}
        jobs[name] = (needs_model, [arg.format(**names) for arg in args])
    with folder_lock(c.locked):
        c.before["locked"] = _digest(c.locked)  # with the holder's .lock
        done = _run_all({name: args for name, (needs_model, args) in jobs.items() if not needs_model})
    done.update(_run_all({name: args for name, (needs_model, args) in jobs.items() if needs_model}))
    return {name: (*result, outs[name]) for name, result in done.items()}


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input_row(row: Row, c, outcomes):
    if row.read_only and c.read_only is None:
        pytest.skip("no folder can be made read-only for root here (chattr +i refused by the file system)")
    result, _, out = outcomes[row.name]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    position = len("error: ")
    for pattern in row.says(c):  # in order: the option or path first, then the problem
        match = re.compile(pattern).search(lines[0], position)
        assert match, f"{pattern!r} not in {lines[0]!r}"
        position = match.end()
    row.unchanged(c, out)


def test_the_table_documents_every_row():
    text = (REPO / "docs" / "errors.md").read_text()
    assert [row.name for row in ROWS if f"| {row.name} |" not in text] == []


def _succeeded(outcomes, name: str) -> tuple[subprocess.CompletedProcess, float, Path]:
    result, seconds, out = outcomes[name]
    assert result.returncode == 0, result.stdout + result.stderr
    return result, seconds, out


def test_verify_store_lists_a_symlink_loop_as_a_problem(c, outcomes):
    result, _, _ = outcomes["verify-store"]
    assert result.returncode == 1 and result.stderr == "", result.stderr
    assert f"problem: {c.loop_file}: is a symbolic link that leads to no file (broken, or a loop)" in result.stdout
    assert result.stdout.rstrip().endswith("1 problem(s)")


# -- progress in a log ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, bars, prefixes, first", [
    ("detect", 1, ("detect:",), 1),  # a bar over the whole command prints its first state
    ("features", 1, ("features:",), 1),
    ("train-detector", 2, ("proposal 1/1:", "localization 1/1:"), 0),  # one per network and epoch, which prints
    ("train", 1, ("epoch 1/1:",), 0),  # only after LOG_INTERVAL seconds: the epoch lines on stdout mark each start
])
def test_progress_into_a_log_is_a_few_whole_lines(outcomes, command, bars, prefixes, first):
    """A bar prints whole lines, at most its first state, one per LOG_INTERVAL seconds, and its last: never a
    redraw (the detection bars used to write hundreds of carriage returns into a log)."""
    result, seconds, _ = _succeeded(outcomes, command)
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert first <= len(lines) <= bars * (2 + seconds // LOG_INTERVAL), lines
    assert all(line.startswith(prefixes) for line in lines), lines


def test_detections_of_the_run_with_a_bar_are_written(outcomes):
    _, _, out = _succeeded(outcomes, "detect")
    assert sorted(json.loads((out / "d.json").read_text())["results"]) == ["video_test_0001", "video_test_0002"]


# -- synth into its own earlier output ---------------------------------------------------------------------------
def _split_classes(out: Path) -> list[str]:
    return (out / "splits" / "classInd.txt").read_text().split()[1::2]  # "1 left", "2 right"


def _annotated_classes(out: Path) -> list[str]:
    return read_annotations(out / "annotations", "test").classes  # the class files of the THUMOS'14 folder


@pytest.mark.parametrize("command, folder, class_folders, classes_of", [
    ("synth", "old_trimmed", ["left", "right"], _split_classes),
    ("synth --untrimmed", "old_untrimmed", [], _annotated_classes),
])
def test_synth_rewrites_its_own_output_without_stale_files(c, outcomes, command, folder, class_folders, classes_of):
    """The earlier run had 4 classes, this one 2: nothing of up and down stays, and synth.json lists every file."""
    _succeeded(outcomes, command)
    out = getattr(c, folder)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted([*json.loads((out / "synth.json").read_text())["files"], "synth.json"])
    assert not [name for name in files if re.search(r"(^|/)(up|down)[_/]", name)], files
    assert sorted(p.name for p in (out / "videos").iterdir() if p.is_dir()) == class_folders
    assert classes_of(out) == ["left", "right"]


def test_train_detector_help_shows_every_default(outcomes):
    result, _, _ = _succeeded(outcomes, "train-detector --help")
    text = " ".join(result.stdout.split())  # Click wraps the help to the terminal's width
    scnn, rc3d = DetectorConfig(), RC3DConfig()
    for option, shown in [("--epochs", f"[default: {scnn.epochs}; R-C3D: {rc3d.epochs}]"),
                          ("--batch-size", f"[default: {scnn.batch_size}]"),
                          ("--lr", f"[default: {scnn.lr}; R-C3D: {rc3d.lr}]"),
                          ("--seed", f"[default: {scnn.seed}]")]:
        help_text = re.search(re.escape(option) + r" [A-Z ]+ (.*?) \[x>", text)
        assert help_text and shown in help_text[1], (option, text)


def test_a_detector_run_of_more_epochs_than_asked_is_refused(c, tmp_path):
    from flow.errors import InputError
    from pipelines.detection.rc3d import train_rc3d

    out = _edited_copy(c.rc3d, tmp_path / "rc3d", lambda payload: payload.update(epoch=3))
    before = _digest(out)
    with pytest.raises(InputError) as caught:
        train_rc3d(TINY_RC3D, c.store, read_annotations(c.annotations_json, "val"), out, log=lambda line: None)
    assert str(caught.value) == (f"{out / 'rc3d.pth'}: holds 3 trained epochs, more than the 1 asked for; ask for at "
                                 "least as many, or use a new --out folder")
    assert _digest(out) == before


def test_a_child_class_detection_is_also_one_of_its_parent(c, outcomes):
    child, parent = c.parents
    plain = json.loads((_succeeded(outcomes, "detect")[2] / "d.json").read_text())["results"]
    both = json.loads((_succeeded(outcomes, "detect with parent classes")[2] / "d.json").read_text())["results"]
    for video, found in plain.items():
        copies = [{**d, "label": parent} for d in found if d["label"] == child]
        assert sorted(both[video], key=json.dumps) == sorted(found + copies, key=json.dumps)
    assert any(d["label"] == child for found in plain.values() for d in found)
