"""Detection on every stream (MARS distilled from a flow detector, RGB at test time) and train-detector under DDP."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import run_cli
from pipelines.core.checkpoint import load_checkpoint
from pipelines.data.annotations import read_annotations
from pipelines.detection.scnn import DetectorConfig, train_detector
from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed

TINY = {"frames": 4, "size": 24, "batch_size": 8, "epochs": 1, "seed": 1, "device": "cpu", "window_lengths": (8, 16),
        "proposal_positive": 0.5}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    generate_untrimmed(root / "data", UntrimmedConfig(classes=2, val_videos=3, test_videos=1, frames=(40, 48),
                                                      action_frames=(8, 16), idle_frames=(0, 3), instances=(1, 2),
                                                      size=24, seed=4))
    run_cli("extract-flow", str(root / "data" / "videos"), "--out", str(root / "store"), "--short-side", "0",
            "--preset", "cheap", "--workers", "1", "--no-progress")
    (root / "detector.toml").write_text("[detection.train]\nwindow_lengths = [8, 16]\nproposal_positive = 0.5\n")
    truth = read_annotations(root / "data" / "annotations.json", "val")
    for name, values, teacher in (("flow", {"stream": "flow"}, None), ("rgb", {"stream": "rgb"}, None),
                                  ("mars0", {"stream": "mars", "alpha": 0.0}, root / "flow"),
                                  ("mars", {"stream": "mars"}, root / "flow")):
        config = DetectorConfig(**TINY, **values, sta=None if name == "flow" else "layer3")
        train_detector(config, root / "store", truth, root / name, log=lambda line: None, progress=False,
                       teacher=teacher)
    return root


def _weights(folder, network="localization"):
    return load_checkpoint(folder / f"{network}.pth").payload["state_dict"]


def _train(data, out, *extra, check=True):
    return run_cli("train-detector", "--store", str(data / "store"), "--annotations",
                   str(data / "data" / "annotations.json"), "--out", str(out), "--config", str(data / "detector.toml"),
                   "--frames", "4", "--size", "24", "--batch-size", "8", "--epochs", "1", "--seed", "1",
                   "--device", "cpu", "--no-progress", *extra, check=check)


def test_mars_detector_distils_from_a_flow_detector_and_detects_on_rgb(data, tmp_path):
    payload = load_checkpoint(data / "mars" / "localization.pth").payload
    assert payload["stream"] == "sta-mars" and payload["model_kwargs"]["in_channels"] == 3
    assert load_checkpoint(data / "mars" / "proposal.pth").payload["stream"] == "mars"
    # without the feature-matching term MARS is the RGB detector; with it the weights move towards the teacher
    for network in ("proposal", "localization"):
        rgb, mars0, mars = (_weights(data / name, network) for name in ("rgb", "mars0", "mars"))
        assert all(torch.equal(rgb[key], mars0[key]) for key in rgb)
        assert not all(torch.equal(rgb[key], mars[key]) for key in rgb)
    results = tmp_path / "detections.json"
    run_cli("detect", "--model", str(data / "mars"), "--store", str(data / "store"), "--out", str(results),
            "--annotations", str(data / "data" / "annotations.json"), "--proposal-threshold", "0", "--device", "cpu",
            "--no-progress")
    assert list(json.loads(results.read_text())["results"]) == ["video_test_0001"]


def test_mars_detector_needs_a_flow_teacher(data, tmp_path):
    missing = _train(data, tmp_path / "a", "--stream", "mars", check=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "needs --teacher" in missing.stderr
    wrong = _train(data, tmp_path / "b", "--stream", "mars", "--teacher", str(data / "rgb"), check=False)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "proposal.pth: teacher must be a flow-stream detector, got stream 'rgb'" in wrong.stderr
    older = tmp_path / "older"  # a teacher folder of two networks, written before the classification network
    older.mkdir()
    for network in ("proposal", "localization"):
        shutil.copyfile(data / "rgb" / f"{network}.pth", older / f"{network}.pth")
    refused = _train(data, tmp_path / "c", "--stream", "mars", "--teacher", str(older), check=False)
    assert refused.returncode == 2 and refused.stderr == (
        f"error: {older / 'classification.pth'}: not found: --teacher must be a folder written by train-detector "
        "--stream flow, with its three networks\n")
    assert not (tmp_path / "c").exists()


@pytest.mark.numerics
def test_ddp_detector_equals_one_process_accumulating_the_same_micro_batches(data, tmp_path, monkeypatch):
    two = _train(data, tmp_path / "ddp", "--nproc", "2")
    assert two.stdout.count("localization epoch 1/1") == 1  # only rank 0 reports
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["processes"] == 2
    # torchrun gives each process one thread; so does the baseline, or AdamW magnifies the other summation order
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _train(data, tmp_path / "one", "--accumulate", "2")
    for network in ("proposal", "classification", "localization"):
        ddp, one = _weights(tmp_path / "ddp", network), _weights(tmp_path / "one", network)
        compared = [key for key in one if not key.endswith(BN_BUFFERS)]
        for key in compared:
            torch.testing.assert_close(ddp[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
        assert len(compared) > 10 and not any(key.startswith("module.") for key in ddp)
