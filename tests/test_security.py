"""Files from elsewhere are data, never code, and never a way out of the folders they belong to.

The command-line side (a crafted checkpoint through ``train --pretrained``, ``train --teacher`` and ``evaluate
--checkpoint``, split lines with ``..`` or absolute paths) is in the table of tests/test_errors.py.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli
from flow import FlowStore
from flow.errors import InputError
from mars_sta import CheckpointError, build_model, load_pretrained
from pipelines.core.checkpoint import load_checkpoint, save_checkpoint

PRODUCT = [path for folder in ("mars_sta", "flow", "pipelines", "cli", "benchmarks")
           for path in sorted((REPO / folder).rglob("*.py"))]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return ast.literal_eval(keyword.value) if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


def test_the_scan_sees_the_product():
    assert len(PRODUCT) > 40
    loads = [f"{path.name}:{call.lineno}" for path in PRODUCT for call, name in _calls(path) if name == "torch.load"]
    assert [item.split(":")[0] for item in loads] == ["pretrained.py"]  # the one reader of checkpoint files


def test_every_checkpoint_load_is_weights_only_and_nothing_else_unpickles():
    unsafe = []
    for path in PRODUCT:
        for call, name in _calls(path):
            where = f"{path.relative_to(REPO)}:{call.lineno}: {name}"
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                unsafe.append(where)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load"):
                unsafe.append(where)
            if name == "np.load" and _keyword(call, "allow_pickle") is not False:
                unsafe.append(where)
    assert unsafe == []


def test_no_shell_is_ever_invoked():
    shells = []
    for path in PRODUCT:
        for call, name in _calls(path):
            where = f"{path.relative_to(REPO)}:{call.lineno}: {name}"
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput") \
                    or name.startswith("os.exec") or name.startswith("os.spawn"):
                shells.append(where)
            if name.startswith("subprocess.") and _keyword(call, "shell") not in (None, False):
                shells.append(where)
    assert shells == []


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"format": "mars-sta", "arch": "tiny_resnet", "model_kwargs": {}, "hook": _RunsCode(marker),
                "state_dict": build_model("tiny_resnet", num_classes=4).state_dict()}, path)
    return path


def test_a_crafted_checkpoint_runs_code_when_unpickled_but_not_when_loaded_here(tmp_path):
    live = tmp_path / "ran-under-plain-pickle"
    torch.load(_crafted(tmp_path / "control.pth", live), weights_only=False)
    assert live.exists(), "the payload must really run code, or the test below proves nothing"

    marker = tmp_path / "ran"
    crafted = _crafted(tmp_path / "crafted.pth", marker)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_pretrained(build_model("tiny_resnet", num_classes=4), crafted)
    with pytest.raises(InputError, match="refused to unpickle"):
        load_checkpoint(crafted)
    assert not marker.exists()


@pytest.mark.parametrize("video_id", ["../manifest", "../../outside", "/etc/passwd", "left/../../x", "", "left//a"])
def test_the_store_refuses_video_ids_that_leave_it(synth_store, video_id):
    store = FlowStore(synth_store.store)
    for read in (store.frames, store.flow_codes, store.num_frames):
        with pytest.raises(InputError, match="invalid video id"):
            read(video_id)


def test_a_video_list_naming_videos_outside_its_folder_writes_only_inside_the_store(synth_store, tmp_path):
    source = sorted(synth_store.videos.rglob("*.avi"))[0]
    (tmp_path / "lists").mkdir()
    listed = Path(os.path.relpath(source, tmp_path / "lists"))
    assert listed.parts[0] == ".."
    (tmp_path / "lists" / "videos.txt").write_text(f"{listed}\n")
    before = sorted(synth_store.videos.parent.rglob("*"))
    store = tmp_path / "store"
    run_cli("extract-flow", str(tmp_path / "lists" / "videos.txt"), "--out", str(store), "--preset", "cheap",
            "--short-side", "0", "--workers", "1", "--no-progress")
    root = Path(os.path.commonpath([tmp_path / "lists", source.parent]))
    video_id = source.relative_to(root).with_suffix("").as_posix()
    assert ".." not in video_id.split("/") and FlowStore(store).video_ids() == [video_id]
    assert [p for p in store.rglob("*.h5")] == [store / "videos" / f"{video_id}.h5"]
    assert sorted(synth_store.videos.parent.rglob("*")) == before


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_empty_or_truncated_checkpoint_is_one_line_for_every_reader(tmp_path, damage):
    model = build_model("tiny_resnet", num_classes=4)
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"arch": model.arch, "model_kwargs": model.build_kwargs, "stream": "rgb",
                           "classes": ["a", "b", "c", "d"], "state_dict": model.state_dict()})
    path.write_bytes(b"" if damage == "empty" else path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError) as stage_error:
        load_checkpoint(path)
    with pytest.raises(CheckpointError) as model_error:
        load_pretrained(model, path)
    for error in (stage_error.value, model_error.value):
        expected = "the file is empty" if damage == "empty" else "the file is cut short or damaged"
        assert str(error).startswith(f"{path}: not a readable checkpoint: {expected}")
        assert "\n" not in str(error)
