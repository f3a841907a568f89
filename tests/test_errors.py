"""The bad-input table of docs/errors.md, one test per row, each through the real command line in a subprocess.

Every row checks what the user sees (exit status, exactly one ``error: <path>: <problem>`` line on stderr, no
traceback) and that what was already written stays valid (stores verify, checkpoints load, inputs unchanged).
The rows' commands are independent, so the module runs them a few at a time before the row tests look at them.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import cv2
import h5py
import numpy as np
import pytest

from conftest import immutable_folder, run_cli, tiny_train_toml
from flow.verify import verify_store

PARALLEL = 3  # subprocesses at a time: most of each one's time is Python and torch starting up


# -- inputs ------------------------------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_splits(source: Path, target: Path, name: str, edit: Callable[[list[str]], list[str]]) -> Path:
    """A copy of a UCF-101 split folder with one list file's lines changed."""
    shutil.copytree(source, target)
    path = target / name
    path.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))
    return target


def _damaged_store(source: Path, target: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of a store with the file of a training video damaged; returns the damaged file."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    victim = target / "videos" / "left" / "left_0001.h5"  # first in trainlist01.txt
    damage(victim)
    return victim


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flow_as_float(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        codes = handle["flow"][()]
        del handle["flow"]
        handle.create_dataset("flow", data=codes.astype(np.float32))


def _drop_bound(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        del handle.attrs["bound"]


def _rot_a_flow_chunk(path: Path) -> None:
    """Bit rot inside one flow chunk: the file opens and passes every structural check, the chunk's checksum fails."""
    with h5py.File(path, "r") as handle:
        chunk = handle["flow"].id.get_chunk_info(3)
    data = bytearray(path.read_bytes())
    for offset in range(chunk.byte_offset + 2, chunk.byte_offset + chunk.size - 2):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


# Values of a config file out of range: (table, key, value); each is refused before any work, naming file and table.
TOML_RANGES = [("train", "batch_size", "0"), ("train", "lr", "0.0"), ("train", "frames", "0"),
               ("train", "val_fraction", "1.0"), ("evaluate", "batch_size", "0")]


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _code_running_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"arch": "tiny_resnet", "state_dict": {"fc.weight": torch.zeros(4, 8)}, "hook": _RunsCode(marker)},
               path)
    return path


def _unknown_codec_video(good: Path, target: Path) -> None:
    """A real AVI whose codec tag OpenCV's FFmpeg has no decoder for."""
    target.write_bytes(good.read_bytes().replace(b"MJPG", b"QZQZ"))


def _write_video(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frames.shape[2:0:-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def ctx(synth_store, flow_teacher, tmp_path_factory, request) -> SimpleNamespace:
    """Every bad input of the table, made once; the shared store and teacher are only ever copied or read."""
    import torch

    from flow.extract import ExtractConfig, extract_flow
    from mars_sta import build_model

    root = tmp_path_factory.mktemp("bad")
    c = SimpleNamespace(root=root, store=synth_store.store, videos=synth_store.videos, splits=synth_store.splits,
                        teacher=flow_teacher, teacher_sha=_sha(flow_teacher),
                        store_sha=_store_digest(synth_store.store))
    (root / "tiny.toml").write_text(tiny_train_toml().replace("epochs = 2", "epochs = 1"))
    c.tiny = root / "tiny.toml"

    # split files
    first_train = (synth_store.splits / "trainlist01.txt").read_text().splitlines()[0].split()[0]
    edits = {
        "s_list_missing": ("testlist01.txt", None),
        "s_empty": ("trainlist01.txt", lambda lines: []),
        "s_malformed": ("trainlist01.txt", lambda lines: lines[:3] + [f"{first_train} 1 extra"] + lines[3:]),
        "s_unknown_class": ("testlist01.txt", lambda lines: lines + ["jump/jump_0001.avi"]),
        "s_label_range": ("trainlist01.txt", lambda lines: lines + ["left/left_0099.avi 9"]),
        "s_duplicate": ("trainlist01.txt", lambda lines: lines + [lines[0]]),
        "s_overlap": ("testlist01.txt", lambda lines: lines + [first_train]),
        "s_escape": ("trainlist01.txt", lambda lines: lines + ["../../outside/left_0001.avi 1"]),
        "s_absolute": ("testlist01.txt", lambda lines: lines + ["/etc/passwd.avi"]),
    }
    for name, (file, edit) in edits.items():
        if edit is None:
            shutil.copytree(synth_store.splits, root / name)
            (root / name / file).unlink()
        else:
            _edit_splits(synth_store.splits, root / name, file, edit)
        setattr(c, name, root / name)
    c.crlf = root / "s_crlf"
    shutil.copytree(synth_store.splits, c.crlf)
    for path in c.crlf.iterdir():
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    c.two_classes = _edit_splits(synth_store.splits, root / "s_two_classes", "classInd.txt", lambda lines: lines[:2])
    for name in ("trainlist01.txt", "testlist01.txt"):
        path = c.two_classes / name
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                                if line.split("/")[0] in ("left", "right")))

    # stores
    for name, damage in {"d_truncated": _truncate, "d_dtype": _flow_as_float, "d_attribute": _drop_bound,
                         "d_missing": Path.unlink, "d_rotten": _rot_a_flow_chunk}.items():
        setattr(c, name, root / name)
        setattr(c, f"{name}_file", _damaged_store(synth_store.store, root / name, damage))
    c.mini = root / "s_mini"  # one training and one test video per class, copied into a dataset of their own
    shutil.copytree(synth_store.splits, c.mini)
    for name in ("trainlist01.txt", "testlist01.txt"):
        first_of_class: dict[str, str] = {}
        for line in (c.mini / name).read_text().splitlines():
            first_of_class.setdefault(line.split("/")[0], line)
        (c.mini / name).write_text("".join(line + "\n" for line in first_of_class.values()))
        for line in first_of_class.values():
            video = line.split()[0]
            (root / "mini_videos" / video).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(synth_store.videos / video, root / "mini_videos" / video)
    c.other_store = root / "other_store"  # the same videos, flow clipped at another bound
    extract_flow(ExtractConfig(short_side=0, preset="cheap", workers=2, bound=10.0), root / "mini_videos",
                 c.other_store, progress=False)

    # checkpoints
    c.truncated_ckpt = root / "truncated.pth"
    c.truncated_ckpt.write_bytes(flow_teacher.read_bytes()[: flow_teacher.stat().st_size // 2])
    c.resnet18 = root / "resnet18.pth"  # as MARS and 3D-ResNets save them
    model = build_model("resnet18", num_classes=4, sample_size=32, sample_duration=16)
    torch.save({"arch": "resnet-18", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               c.resnet18)
    c.plain_tiny = root / "plain_tiny.pth"
    torch.save(torch.load(flow_teacher, weights_only=True)["state_dict"], c.plain_tiny)
    c.marker = root / "code-ran"
    c.evil = _code_running_checkpoint(root / "evil.pth", c.marker)

    # configs
    for name, text in {"t_unknown_key": "[extract]\nworker = 2\n", "t_wrong_type": "[train]\nepochs = \"three\"\n",
                       "t_syntax": "[extract\nworkers = 2\n", "t_unknown_table": "[trian]\nepochs = 1\n",
                       "t_stream_table": "[train]\nepochs = 1\n[train.flwo]\nepochs = 1\n",
                       **{f"t_{table}_{key}": f"[{table}]\n{key} = {value}\n" for table, key, value in TOML_RANGES}}.items():
        (root / f"{name}.toml").write_text(text)
        setattr(c, name, root / f"{name}.toml")
    for name, extra in {"r_epochs": ("epochs = 1", "epochs = -1"),
                        "r_stream_table": ("epochs = 1", "epochs = 1\n[train.flwo]\nepochs = 2")}.items():
        (root / name).mkdir()  # a run whose [synth] would generate its videos here, were the config valid
        (root / name / "run.toml").write_text(
            '[synth]\nclasses = 2\nvideos_per_class = 2\n\n[data]\nvideos = "data/videos"\n\n'
            '[extract]\nshort_side = 0\npreset = "cheap"\n\n' + c.tiny.read_text().replace(*extra))
        setattr(c, name, root / name / "run.toml")

    # outputs
    c.a_file = root / "a_file"
    c.a_file.write_text("a regular file: nothing can be created below it, not even by root\n")
    c.read_only = immutable_folder(root / "read_only")
    if c.read_only is not None:
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(c.read_only)], check=True))
    return c


def _store_digest(store: Path) -> str:
    """Names, sizes and content of every file of a store (the lock excepted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in store.rglob("*") if p.is_file() and p.name != ".lock"):
        digest.update(f"{path.relative_to(store)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


# -- the table -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of docs/errors.md: the command, the exit status and what the single stderr line must say."""

    name: str
    args: Callable[[SimpleNamespace], list]
    says: Callable[[SimpleNamespace], list[str]]  # regular expressions the error line must match, in order
    still_valid: Callable[[SimpleNamespace, Path], None] = field(default=lambda c, out: None)
    status: int = 2
    read_only: bool = False  # needs a folder that root cannot write into


def _train(store_attr: str = "store", splits: str | None = None, *extra: str):
    """``train`` on the tiny settings; ``extra`` options come last, so they win over the ones before."""
    def args(c):
        chosen = [] if splits is None else ["--splits", getattr(c, splits)]
        return ["train", "--config", c.tiny, "--stream", "rgb", "--store", getattr(c, store_attr), "--out", "{out}",
                *chosen, *extra]
    return args


def _evaluate(checkpoint: str, store_attr: str = "store", splits: str | None = None):
    def args(c):
        chosen = [] if splits is None else ["--splits", getattr(c, splits)]
        return ["evaluate", "--checkpoint", getattr(c, checkpoint), "--store", getattr(c, store_attr),
                "--out", "{out}/scores.npz", *chosen]
    return args


def _nothing_written(c, out: Path) -> None:
    """The refused command left no checkpoint, score file or temporary file behind."""
    left = [p.name for p in out.rglob("*") if p.suffix in (".pth", ".npz", ".tmp") or ".tmp" in p.name]
    assert left == [], left


def _shared_inputs_intact(c, out: Path) -> None:
    _nothing_written(c, out)
    assert _sha(c.teacher) == c.teacher_sha
    assert _store_digest(c.store) == c.store_sha


def _only_the_damaged_file(attr: str):
    """verify-store finds the one damaged file and nothing else: the failed command changed nothing."""
    def check(c, out):
        _shared_inputs_intact(c, out)
        problems = verify_store(getattr(c, attr)).problems
        assert len(problems) == 1 and problems[0].startswith(str(getattr(c, f"{attr}_file"))), problems
    return check


def _read_only_untouched(c, out):
    _shared_inputs_intact(c, out)
    assert [p.name for p in c.read_only.iterdir()] == ["kept.txt"]


def _merge_refused(c, out):
    """Nothing linked: the output store was not even created; the damaged input is as it was."""
    assert not (out / "merged").exists()
    _only_the_damaged_file("d_truncated")(c, out)


def _run_did_nothing(attr: str):
    """The refused run created nothing: no run folder, no generated videos beside its config, no store."""
    def check(c, out):
        _shared_inputs_intact(c, out)
        assert not (out / "run").exists()
        assert [p.name for p in getattr(c, attr).parent.iterdir()] == ["run.toml"]
    return check


def _option(command: list[str], option: str, value: str):
    """A command refused for one option: every other argument is valid, so only that option can be at fault."""
    return lambda c: [*command, option, value]


def _refused(option: str, *problem: str):
    return lambda c: [re.escape(option), *problem]


def _no_code_ran(c, out):
    _shared_inputs_intact(c, out)
    assert not c.marker.exists(), "unpickling ran the checkpoint's code"


def _line(c, attr: str) -> str:
    return re.escape(str(getattr(c, attr)))


ROWS = [
    # split files (train reads them first; evaluate the same way)
    Row("split list missing", _train(splits="s_list_missing"),
        lambda c: [re.escape(str(c.s_list_missing / "testlist01.txt")), "missing split file"], _shared_inputs_intact),
    Row("split list empty", _train(splits="s_empty"),
        lambda c: [re.escape(str(c.s_empty / "trainlist01.txt")), "empty split file"], _shared_inputs_intact),
    Row("malformed split line", _train(splits="s_malformed"),
        lambda c: [re.escape(str(c.s_malformed / "trainlist01.txt")), "line 4: expected '<Class>/<video>.avi"],
        _shared_inputs_intact),
    Row("unknown class", _train(splits="s_unknown_class"),
        lambda c: ["testlist01.txt", r"line 9: unknown class 'jump' \(not in classInd.txt\)"], _shared_inputs_intact),
    Row("label out of range", _train(splits="s_label_range"),
        lambda c: ["trainlist01.txt", r"line 17: label 9 out of range 1..4"], _shared_inputs_intact),
    Row("duplicate video", _train(splits="s_duplicate"),
        lambda c: ["trainlist01.txt", r"line 17: duplicate video '.+' \(first listed at trainlist01.txt:1\)"],
        _shared_inputs_intact),
    Row("train/test overlap", _train(splits="s_overlap"),
        lambda c: ["testlist01.txt", r"line 9: video '.+' is in both train \(trainlist01.txt:1\) and test"],
        _shared_inputs_intact),
    Row("split path leaves the dataset root", _train(splits="s_escape"),
        lambda c: ["trainlist01.txt", r"line 17: path '../../outside/left_0001.avi' leaves the dataset root"],
        _shared_inputs_intact),
    Row("absolute split path", _train(splits="s_absolute"),
        lambda c: ["testlist01.txt", r"line 9: absolute path '/etc/passwd.avi'"], _shared_inputs_intact),
    Row("split files with CRLF line ends", _evaluate("teacher", splits="crlf"), lambda c: [],
        lambda c, out: _crlf_scored_every_test_video(c, out), status=0),
    # the flow store
    Row("store video file truncated", _train("d_truncated"),
        lambda c: [_line(c, "d_truncated_file"), r"cannot be read as HDF5 \(truncated or damaged\?\)"],
        _only_the_damaged_file("d_truncated")),
    Row("store video file with a wrong dtype", _train("d_dtype"),
        lambda c: [_line(c, "d_dtype_file"), r"'flow' must be uint8 \(16, 32, 32, 2\) .*found float32"],
        _only_the_damaged_file("d_dtype")),
    Row("store video file without an attribute", _train("d_attribute"),
        lambda c: [_line(c, "d_attribute_file"), r"not a complete flow-store video \(missing attribute bound\)"],
        _only_the_damaged_file("d_attribute")),
    Row("video missing from the store", _train("d_missing"),
        lambda c: [_line(c, "d_missing"), r"1 video\(s\) of split 1 are not in the store, e\.g\. 'left/left_0001'"],
        lambda c, out: (_shared_inputs_intact(c, out), _assert_verifies(c.d_missing))),
    Row("split of another dataset than the store's", _train("other_store", "splits"),
        lambda c: [_line(c, "other_store"), r"16 video\(s\) of split 1 are not in the store"],
        lambda c, out: (_shared_inputs_intact(c, out), _assert_verifies(c.other_store))),
    Row("store of other preprocessing than the checkpoint", _evaluate("teacher", "other_store", "mini"),
        lambda c: [_line(c, "other_store"), "was extracted with other preprocessing than the checkpoint was trained "
                                            r"on: bound 20\.0 \(checkpoint\) vs 10\.0 \(store\)"],
        lambda c, out: (_shared_inputs_intact(c, out), _assert_verifies(c.other_store))),
    # checkpoints
    Row("checkpoint missing", _evaluate("no_checkpoint"),
        lambda c: [_line(c, "no_checkpoint"), "checkpoint not found"], _shared_inputs_intact),
    Row("checkpoint truncated", _evaluate("truncated_ckpt"),
        lambda c: [_line(c, "truncated_ckpt"),
                   r"not a readable checkpoint: the file is cut short or damaged \(the end of its zip archive is "
                   r"missing\)"],
        _shared_inputs_intact),
    Row("pretrained checkpoint of another architecture", _train("store", None, "--pretrained", "{resnet18}"),
        lambda c: [_line(c, "resnet18"), "resnet-18 checkpoint, model is tiny_resnet"], _shared_inputs_intact),
    Row("pretrained weights of other shapes", _train("store", None, "--arch", "resnet10", "--pretrained",
                                                     "{plain_tiny}"),
        lambda c: [_line(c, "plain_tiny"), r"conv1.weight is \(16, 2, 3, 5, 5\) in the file but .* in the model "
                                           r"\(resnet10, shortcut B\): another architecture\?"],
        _shared_inputs_intact),
    Row("checkpoint of another class count", _evaluate("teacher", splits="two_classes"),
        lambda c: [_line(c, "teacher"), "was trained on 4 classes, the split has 2"], _shared_inputs_intact),
    Row("pickle that runs code: train --pretrained", _train("store", None, "--pretrained", "{evil}"),
        lambda c: [_line(c, "evil"), r"refused to unpickle: it would call (builtins|io)\.open"], _no_code_ran),
    Row("pickle that runs code: train --teacher", _train("store", None, "--stream", "mars", "--teacher", "{evil}"),
        lambda c: [_line(c, "evil"), r"refused to unpickle: it would call (builtins|io)\.open"], _no_code_ran),
    Row("pickle that runs code: evaluate --checkpoint", _evaluate("evil"),
        lambda c: [_line(c, "evil"), r"refused to unpickle: it would call (builtins|io)\.open"], _no_code_ran),
    # config files
    Row("config with an unknown key", lambda c: ["extract-flow", c.videos, "--out", "{out}/store", "--config",
                                                 c.t_unknown_key],
        lambda c: [_line(c, "t_unknown_key"), r"unknown key 'worker' \(known: .*workers"], _shared_inputs_intact),
    Row("config value of a wrong type", _train("store", None, "--config", "{t_wrong_type}"),
        lambda c: [_line(c, "t_wrong_type"), "'epochs' must be int, got str 'three'"], _shared_inputs_intact),
    Row("config that is not TOML", lambda c: ["extract-flow", c.videos, "--out", "{out}/store", "--config",
                                              c.t_syntax],
        lambda c: [_line(c, "t_syntax"), r"not valid TOML"], _shared_inputs_intact),
    Row("run config with an unknown table", lambda c: ["run", c.t_unknown_table, "--out", "{out}/run"],
        lambda c: [_line(c, "t_unknown_table"), r"unknown table \[trian\]"], _shared_inputs_intact),
    Row("train config with an unknown table", _train("store", None, "--config", "{t_unknown_table}"),
        lambda c: [_line(c, "t_unknown_table"), r"unknown table \[trian\] \(known: data, detection, evaluate"],
        _shared_inputs_intact),
    Row("train config with an unknown stream table", _train("store", None, "--config", "{t_stream_table}"),
        lambda c: [_line(c, "t_stream_table"), r"unknown table \[train\.flwo\] \(known: \[train\.flow\], "],
        _shared_inputs_intact),
    Row("run config with an unknown stream table", lambda c: ["run", c.r_stream_table, "--out", "{out}/run"],
        lambda c: [_line(c, "r_stream_table"), r"unknown table \[train\.flwo\]"], _run_did_nothing("r_stream_table")),
    Row("run config with a value out of range in a later stage", lambda c: ["run", c.r_epochs, "--out", "{out}/run"],
        lambda c: [_line(c, "r_epochs"), r"\[train\] epochs must be at least 1, got -1$"], _run_did_nothing("r_epochs")),
    *[Row(f"{table} config with {key} = {value}",
          _train("store", None, "--config", f"{{t_train_{key}}}") if table == "train" else
          lambda c: ["evaluate", "--checkpoint", c.teacher, "--store", c.store, "--out", "{out}/s.npz",
                     "--config", c.t_evaluate_batch_size],
          lambda c, k=key, t=table: [_line(c, f"t_{t}_{k}"), re.escape(f"[{t}] {k} must ")], _shared_inputs_intact)
      for table, key, value in TOML_RANGES],
    # outputs
    Row("train --out below a regular file", _train("store", None, "--out", "{a_file}/sub"),
        lambda c: [re.escape(f"{c.a_file}/sub"), "cannot be written: .* is a file, not a folder"],
        _shared_inputs_intact),
    Row("extract-flow --out below a regular file",
        lambda c: ["extract-flow", c.videos, "--out", c.a_file / "store", "--no-progress"],
        lambda c: [re.escape(f"{c.a_file}/store"), "cannot be written: .* is a file, not a folder"],
        _shared_inputs_intact),
    Row("evaluate --out below a regular file",
        lambda c: ["evaluate", "--checkpoint", c.teacher, "--store", c.store, "--out", c.a_file / "s.npz"],
        lambda c: [re.escape(str(c.a_file / "s.npz")), "cannot be written: .* is a file, not a folder"],
        _shared_inputs_intact),
    # options, refused while the command line is read (the option first, then why)
    *[Row(f"train {option} {value}", _train("store", None, option, value), _refused(option, *problem),
          _shared_inputs_intact)
      for option, value, problem in [
          ("--arch", "resnet11", [r"unknown architecture 'resnet11' \(known: .*resnet10, .*tiny_resnet\)"]),
          ("--sta", "layer9", [r"unknown stage 'layer9' for tiny_resnet \(stages: layer1, layer2, layer3\)"]),
          ("--sta", "layer4:bogus", [r"unknown option 'bogus'"]),
          ("--lr", "-1", [r"-1.0 is not in the range x>0"]),
          ("--lr", "nan", [r"'nan' is not a finite number"]),
          ("--frames", "0", [r"0 is not in the range x>=1"]),
          ("--val-fraction", "1.5", [r"1.5 is not in the range 0<=x<1"]),
          ("--batch-size", "0", [r"0 is not in the range x>=1"]),
          ("--batch-size", "-4", [r"-4 is not in the range x>=1"]),
          ("--epochs", "0", [r"0 is not in the range x>=1"]),
          ("--workers", "-1", [r"-1 is not in the range x>=0"])]],
    *[Row(f"{command[0]} {option} {value}", _option(command, option, value), _refused(option, problem),
          _shared_inputs_intact)
      for command, option, value, problem in [
          (["extract-flow", "{videos}", "--out", "{out}/store"], "--workers", "-2", r"-2 is not in the range x>=0"),
          (["extract-flow", "{videos}", "--out", "{out}/store"], "--fps", "0", r"0.0 is not in the range x>0"),
          (["extract-flow", "{videos}", "--out", "{out}/store"], "--jpeg-quality", "101",
           r"101 is not in the range 1<=x<=100"),
          (["extract-flow", "{videos}", "--out", "{out}/store"], "--shard", "4/4",
           r"'4/4': there is no share 4 of 4; shares are numbered from 0, so 0/4 to 3/4"),
          (["evaluate", "--checkpoint", "{teacher}", "--store", "{store}", "--out", "{out}/s.npz"], "--batch-size",
           "0", r"0 is not in the range x>=1"),
          (["evaluate", "--checkpoint", "{teacher}", "--store", "{store}", "--out", "{out}/s.npz"], "--protocol",
           "views:0x2", r"expected 'mars' or 'views:KxM'"),
          (["predict", "{videos}", "--checkpoint", "{teacher}"], "--top-k", "0", r"0 is not in the range x>=1"),
          (["fuse", "{out}", "--out", "{out}/fused"], "--weights", "rgb=-1",
           r"weight of 'rgb' must be a finite number > 0"),
          (["fuse", "{out}", "--out", "{out}/fused"], "--weights", "mars=1,sta-depth=2",
           r"stream 'sta-depth': expected one of flow, rgb, mars \(with 'sta-' in front when STA is inserted\)$"),
          (["profile", "--arch", "tiny_resnet"], "--frames", "0", r"0 is not in the range x>=1"),
          (["import-frames", "{videos}", "--out", "{out}/imported"], "--bound", "inf", r"'inf' is not a finite"),
          (["run", "{t_unknown_table}", "--out", "{out}/run"], "--split", "0", r"0 is not in the range x>=1")]],
    # outputs that cannot be written: refused before any work
    *[Row(f"{name} into a read-only folder", args, lambda c, o=option: [re.escape(o), _line(c, "read_only"),
                                                                          "cannot be written: .*not permitted"],
          _read_only_untouched, read_only=True)
      for name, option, args in [
          ("train --out", "--out", _train("store", None, "--out", "{read_only}/train")),
          ("extract-flow --out", "--out", lambda c: ["extract-flow", c.videos, "--out", c.read_only / "store"]),
          ("evaluate --out", "--out", lambda c: ["evaluate", "--checkpoint", c.teacher, "--store", c.store,
                                                 "--out", c.read_only / "s.npz"]),
          ("fuse --out", "--out", lambda c: ["fuse", c.root, "--out", c.read_only / "fused"]),
          ("report --out", "--out", lambda c: ["report", c.root, "--out", c.read_only / "report.html"]),
          ("export --out", "--out", lambda c: ["export", "--checkpoint", c.teacher, "--format", "mars",
                                               "--out", c.read_only / "model.pth"]),
          ("run --out", "--out", lambda c: ["run", c.t_unknown_table, "--out", c.read_only / "run"])]],
    # stores damaged after they were written
    Row("merge-stores with a truncated input file",
        lambda c: ["merge-stores", c.d_truncated, "--out", "{out}/merged"],
        lambda c: [r"1 damaged video file\(s\), nothing merged", _line(c, "d_truncated_file"),
                   r"cannot be read as HDF5 \(truncated or damaged\?\)"], _merge_refused),
    *[Row(f"flow chunk damaged after extraction, {workers} DataLoader workers",
          _train("d_rotten", None, "--stream", "flow", "--workers", workers),
          lambda c: [_line(c, "d_rotten_file"), r"damaged data in 'flow' \(.*\)$"], _shared_inputs_intact)
      for workers in ("0", "2")],
]


def _assert_verifies(store: Path) -> None:
    report = verify_store(store)
    assert report.ok, report.problems


def _crlf_scored_every_test_video(c, out: Path) -> None:
    from pipelines.scoring.scores import load_scores
    from pipelines.data.splits import load_split

    scores = load_scores(out / "scores.npz")
    assert list(scores.video_ids) == [video for video, _ in load_split(c.splits).test]
    assert load_split(c.crlf).train == load_split(c.splits).train


def _command(row: Row, c: SimpleNamespace, out: Path) -> list[str]:
    names = {"out": out, **{k: v for k, v in vars(c).items() if isinstance(v, Path)}}
    return [str(arg).format(**names) for arg in row.args(c)]


@pytest.fixture(scope="module")
def outcomes(ctx) -> dict[str, tuple]:
    """Run every row's command (a few at a time) and keep (result, out folder) by row name."""
    ctx.no_checkpoint = ctx.root / "no-such.pth"
    jobs = {}
    for index, row in enumerate(ROWS):
        if row.read_only and ctx.read_only is None:
            continue
        out = ctx.root / "out" / f"row{index:02d}"
        out.mkdir(parents=True)
        jobs[row.name] = (_command(row, ctx, out), out)
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(run_cli, *args, check=False) for name, (args, _) in jobs.items()}
        return {name: (future.result(), jobs[name][1]) for name, future in futures.items()}


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input_row(row: Row, ctx, outcomes):
    if row.read_only and ctx.read_only is None:
        pytest.skip("no folder can be made read-only for root here (chattr +i refused by the file system)")
    result, out = outcomes[row.name]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == row.status, result.stdout + result.stderr
    if row.status:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        position = len("error: ")
        for pattern in row.says(ctx):  # in order: the path first, then the problem
            match = re.compile(pattern).search(lines[0], position)
            assert match, f"{pattern!r} not in {lines[0]!r}"
            position = match.end()
    row.still_valid(ctx, out)


def test_the_table_documents_every_row():
    text = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    missing = [row.name for row in ROWS if f"| {row.name} |" not in text]
    assert missing == []


# -- videos that cannot be extracted: listed, not fatal ------------------------------------------------------------
BAD_VIDEOS = {
    "corrupt": ("Bad/corrupt.avi", ("cannot be opened as a video", "no frame could be decoded")),
    "empty": ("Bad/empty.avi", ("empty file (0 bytes)",)),
    "one frame": ("Bad/single.avi", ("has 1 frame; flow needs at least 2",)),
    "codec OpenCV cannot decode": ("Bad/codec.avi", ("cannot be opened as a video", "no frame could be decoded")),
    "not a video": ("Bad/text.mp4", ("cannot be opened as a video",)),
}


@pytest.fixture(scope="module")
def bad_extraction(tmp_path_factory):
    rng = np.random.default_rng(5)
    videos = tmp_path_factory.mktemp("bad_videos") / "videos"

    def clip(frames):
        return rng.integers(0, 256, (frames, 24, 32, 3), dtype=np.uint8)

    good = [_write_video(videos / "Good" / f"{name}.avi", clip(5)) for name in ("a", "b")]
    data = bytearray(good[0].read_bytes())
    start = data.find(b"00dc")
    data[start:] = bytes(len(data) - start)  # the header survives, the frames are zeros
    (videos / "Bad").mkdir()
    (videos / "Bad" / "corrupt.avi").write_bytes(bytes(data))
    (videos / "Bad" / "empty.avi").write_bytes(b"")
    _write_video(videos / "Bad" / "single.avi", clip(1))
    _unknown_codec_video(good[1], videos / "Bad" / "codec.avi")
    (videos / "Bad" / "text.mp4").write_text("not a video at all\n" * 50)
    store = videos.parent / "store"
    result = run_cli("extract-flow", str(videos), "--out", str(store), "--preset", "cheap", "--short-side", "0",
                     "--workers", "2", "--no-progress", check=False)
    return SimpleNamespace(result=result, store=store)


@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_a_video_that_cannot_be_extracted_is_listed_and_the_rest_extracts(kind, bad_extraction):
    source, reasons = BAD_VIDEOS[kind]
    result, store = bad_extraction.result, bad_extraction.store
    assert result.returncode == 1 and result.stderr == "", result.stderr
    failures = {item["source"]: item["reason"] for item in json.loads((store / "failures.json").read_text())}
    assert failures[source] in reasons
    assert f"failed: {source}: {failures[source]}" in result.stdout
    assert "2 extracted" in result.stdout and f"{len(BAD_VIDEOS)} failed" in result.stdout
    report = verify_store(store)
    assert report.ok and report.videos == 2 and report.failures == len(BAD_VIDEOS), report.problems
