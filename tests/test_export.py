"""export: MARS-format files that load_pretrained reads back exactly, and torch.export programs that need only torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.byod import EXPORT_FORMATS
from conftest import run_cli
from flow.errors import InputError
from mars_sta import build_model, list_models, load_pretrained
from mars_sta.pretrained import registry_arch
from pipelines.core.checkpoint import model_from_checkpoint, save_checkpoint
from pipelines.stages.export import FORMATS, export_checkpoint, mars_arch

CLASSES = ["left", "right", "up", "down", "still"]

RUN_WITH_TORCH_ONLY = '''\
import json, sys


class NotInstalled:
    """Make this package's modules unimportable, as on a machine where only torch is installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mars_sta", "flow", "pipelines", "cli"):
            raise ImportError(f"{name} is not installed here")
        return None


sys.meta_path.insert(0, NotInstalled())
import torch

extra = {"mars_sta.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra)
inputs = torch.load(sys.argv[2])
outputs = [program.module()(clips) for clips in inputs]
torch.save(outputs, sys.argv[3])
print(json.loads(extra["mars_sta.json"])["classes"])
'''


@pytest.fixture(scope="module")
def sta_checkpoint(tmp_path_factory) -> Path:
    """A tiny STA network (attention in layer3) with trained-looking BatchNorm statistics, saved as train saves."""
    torch.manual_seed(0)
    model = build_model("tiny_resnet", num_classes=len(CLASSES), sample_size=32, sample_duration=16, sta="layer3")
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 32, 32))  # moves the running statistics away from their initial values
    path = tmp_path_factory.mktemp("checkpoint") / "best.pth"
    save_checkpoint(path, {"arch": "tiny_resnet", "model_kwargs": model.build_kwargs, "stream": "sta-mars",
                           "classes": CLASSES, "preprocessing_hash": None, "state_dict": model.state_dict(),
                           "train_config": {"normalization": "unit"}, "epoch": 7})
    return path


def logits_of(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(clips)


def test_mars_arch_strings_map_back_to_the_registry():
    assert (mars_arch("resnext101"), mars_arch("resnet18"), mars_arch("tiny_resnet")) == \
        ("resnext-101", "resnet-18", "tiny_resnet")
    assert all(registry_arch(mars_arch(name)) == name for name in list_models())


def test_mars_format_loads_back_to_identical_logits(sta_checkpoint, tmp_path):
    out = tmp_path / "MARS_synth_16f.pth"
    result = run_cli("export", "--checkpoint", str(sta_checkpoint), "--format", "mars", "--out", str(out))
    assert json.loads(result.stdout)["arch"] == "tiny_resnet"
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"epoch", "arch", "state_dict", "optimizer"} and raw["epoch"] == 7
    assert raw["optimizer"] is None and all(key.startswith("module.") for key in raw["state_dict"])
    original, payload = model_from_checkpoint(sta_checkpoint)
    rebuilt = build_model(payload["arch"], **payload["model_kwargs"])
    report = load_pretrained(rebuilt, out)
    assert report.missing == [] and report.unexpected == [] and not report.classifier_replaced
    clips = torch.randn(3, 3, 16, 32, 32)
    assert torch.equal(logits_of(rebuilt, clips), logits_of(original, clips))


def test_torch_export_runs_with_torch_alone_at_any_batch_size(sta_checkpoint, tmp_path):
    out = tmp_path / "model.pt2"
    export_checkpoint(sta_checkpoint, "torch-export", out)  # the command line is exercised by the mars format
    inputs = [torch.randn(batch, 3, 16, 32, 32) for batch in (1, 3)]
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "run.py").write_text(RUN_WITH_TORCH_ONLY)
    # -I: no PYTHONPATH, no user site, no current folder; the script also blocks this package's modules, which an
    # editable install would otherwise still provide
    result = subprocess.run([sys.executable, "-I", str(tmp_path / "run.py"), str(out), str(tmp_path / "inputs.pt"),
                             str(tmp_path / "outputs.pt")], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(CLASSES)
    original, _ = model_from_checkpoint(sta_checkpoint)
    for clips, exported in zip(inputs, torch.load(tmp_path / "outputs.pt")):
        torch.testing.assert_close(exported, logits_of(original, clips), rtol=1e-5, atol=1e-5)


def test_the_command_offers_exactly_the_formats_there_are(sta_checkpoint, tmp_path):
    assert EXPORT_FORMATS == FORMATS
    with pytest.raises(InputError, match="--format 'onnx'"):
        export_checkpoint(sta_checkpoint, "onnx", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
