"""R-C3D parts by hand (anchors, offsets, labels, RoI pooling) and the real features / train-detector / detect CLI:
heads on cached features against end to end, a killed features run, a changed checkpoint, bad options."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO, run_cli, share_untrimmed
from mars_sta import build_model
from mars_sta.rc3d import (ProposalSubnet, backbone_map, decode_segments, encode_segments, make_anchors,
                           temporal_roi_pool)
from flow.errors import InputError
from flow.store import FlowStore
from pipelines.core.checkpoint import RC3DExtras, load_checkpoint, save_checkpoint
from pipelines.core.config import build_config
from pipelines.detection.rc3d import RC3DConfig, kept_truth, overlapping_buffers, rc3d_config_of
from pipelines.detection.rc3d_targets import anchor_targets, roi_targets, smooth_l1
from pipelines.inference.features import FeatureStore

HEADS = ["--detector", "rc3d", "--mode", "heads", "--sta", "layer3", "--size", "24", "--seed", "1", "--device",
         "cpu"]
ADDED_SINCE_FORMAT_1 = ("fine_tune_from", "buffer_overlap", "truth_inside", "lr_step", "lr_gamma")
RC3D_TOML = ('[detection.rc3d]\nlayer = "layer3"\nstride = 2\nbuffer = 16\nanchor_frames = [2, 4, 8]\n'
             'proposal_hidden = 16\nhidden = 32\noptimizer = "adamw"\nlr = 0.001\n')


def _faster_rcnn_smooth_l1(difference: torch.Tensor, sigma: float) -> torch.Tensor:
    """The R-C3D port's element loss (``_smooth_l1_loss`` of lib/model/utils/net_utils.py), written out in float64:
    σ²/2·x² where |x| < 1/σ², else |x| − 0.5/σ²."""
    quadratic = difference.abs() < 1.0 / sigma ** 2
    return torch.where(quadratic, difference ** 2 * (sigma ** 2 / 2.0), difference.abs() - 0.5 / sigma ** 2)


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_smooth_l1_is_the_ports_formula(sigma):
    """On both sides of the knee at 1/σ² (0.11 at σ = 3, the proposal subnet's): the sum over the elements, divided
    by the sample's size."""
    target = torch.zeros(6, 2, dtype=torch.float64)
    pred = torch.tensor([[0.0, 0.05], [-0.05, 0.1], [0.2, -0.3], [1.0, -2.0], [0.5, 0.02], [-0.9, 3.0]],
                        dtype=torch.float64)
    expected = _faster_rcnn_smooth_l1(pred - target, sigma).sum() / 16
    torch.testing.assert_close(smooth_l1(pred, target, sigma, count=16), expected, rtol=1e-12, atol=0)
    assert smooth_l1(pred[:0], target[:0], sigma, count=16).item() == 0.0


def test_anchors_and_offsets_by_hand():
    anchors = make_anchors(2, (2, 4))
    assert anchors.tolist() == [[-0.5, 1.5], [-1.5, 2.5], [0.5, 2.5], [-0.5, 3.5]]
    segments = torch.tensor([[1.0, 3.0], [0.0, 4.0]])
    base = torch.tensor([[0.0, 2.0], [1.0, 2.0]])
    offsets = encode_segments(segments, base)
    # centre 2 vs 1 over length 2; centre 2 vs 1.5 over length 1; lengths 2/2 and 4/1
    assert torch.allclose(offsets, torch.tensor([[0.5, 0.0], [0.5, math.log(4.0)]]))
    assert torch.allclose(decode_segments(offsets, base), segments)


def test_anchor_labels_and_targets_by_hand():
    anchors = make_anchors(4, (2,)).numpy()  # [-0.5,1.5] [0.5,2.5] [1.5,3.5] [2.5,4.5]: only 1 and 2 inside [0, 4]
    rng = np.random.default_rng(0)
    exact = anchor_targets(anchors, np.array([[0.5, 2.5]]), 4, 0.7, 0.3, 8, 0.5, rng)
    assert exact.indices.tolist() == [1] and exact.labels.tolist() == [1]  # anchor 2 at tIoU 1/3: ignored
    assert np.allclose(exact.targets, [[0.0, 0.0]])
    # tIoU 0.4 with anchor 1 (below 0.7, but the segment's best anchor), 0.5/2.3 with anchor 2 (background)
    best = anchor_targets(anchors, np.array([[1.2, 2.0]]), 4, 0.7, 0.3, 8, 0.5, rng)
    assert best.indices.tolist() == [1, 2] and best.labels.tolist() == [1, 0]
    assert np.allclose(best.targets, [[(1.6 - 1.5) / 2, math.log(0.8 / 2)]])
    rois = np.array([[0.0, 2.0], [0.0, 4.0], [3.0, 4.0], [1.5, 4.5]])  # tIoU 1, 0.5, 0, 0.125 with [0, 2]
    sample = roi_targets(rois, np.array([[0.0, 2.0]]), np.array([1]), 0.5, (0.1, 0.5), 4, 0.5, (0.1, 0.2), rng)
    assert sample.indices.tolist() == [0, 1, 3] and sample.labels.tolist() == [2, 2, 0]
    assert np.allclose(sample.targets, [[0.0, 0.0], [-0.25 / 0.1, math.log(0.5) / 0.2]])


def test_roi_pooling_shape_values_and_gradient():
    feature_map = torch.randn(3, 8, 4, 4, requires_grad=True)
    pooled = temporal_roi_pool(feature_map, torch.tensor([[0.0, 8.0], [2.0, 4.0]]), (4, 2, 2))
    assert pooled.shape == (2, 3, 4, 2, 2)
    spatial = torch.nn.functional.adaptive_max_pool3d(feature_map.detach(), (8, 2, 2))
    assert torch.equal(pooled[0, :, 1], spatial[:, 2:4].amax(dim=1))  # bin 1 of [0, 8): steps 2 and 3
    assert torch.equal(pooled[1, :, 0], spatial[:, 2])  # bins of [2, 4) are half a step: rounded out to one
    pooled[1].sum().backward()
    touched = feature_map.grad.abs().sum(dim=(0, 2, 3))
    assert (touched[2:4] > 0).all() and (touched[[0, 1, 4, 5, 6, 7]] == 0).all()
    scores, offsets = ProposalSubnet(3, 5, anchors=3)(feature_map.detach()[None])
    assert scores.shape == offsets.shape == (1, 8 * 3, 2)


@pytest.fixture(scope="module")
def data(tmp_path_factory, untrimmed_store):
    root = share_untrimmed(untrimmed_store, tmp_path_factory.mktemp("rc3d"))
    for seed in (0, 1):
        _backbone(root / f"backbone{seed}.pth", seed)
    (root / "rc3d.toml").write_text(RC3D_TOML)
    return root


def _backbone(path, seed):
    """A real tiny STA network with random weights, saved as a detector backbone checkpoint."""
    torch.manual_seed(seed)
    model = build_model("tiny_resnet", num_classes=3, in_channels=2, sample_size=24, sample_duration=4,
                        sta="layer3")
    save_checkpoint(path, {"arch": model.arch, "model_kwargs": dict(model.build_kwargs), "stream": "sta-flow",
                           "state_dict": model.state_dict(), "classes": ["left", "right"],
                           "train_config": {"normalization": "unit"}})


def _features(data, out, checkpoint="backbone0.pth", **kwargs):
    return run_cli("features", "--checkpoint", str(data / checkpoint), "--store", str(data / "store"), "--out",
                   str(out), "--layer", "layer3", "--stride", "2", "--buffer", "16", "--device", "cpu", **kwargs)


def _maps(folder):
    store = FeatureStore(folder)
    return {video: store.read(video)[0] for video in store.video_ids()}


def _train_heads(data, out, epochs, features="feats"):
    return run_cli("train-detector", "--store", str(data / "store"), "--annotations", str(data / "data" /
                   "annotations.json"), "--out", str(out), "--config", str(data / "rc3d.toml"), *HEADS,
                   "--pretrained", str(data / "backbone0.pth"), "--features", str(data / features), "--epochs",
                   str(epochs))


@pytest.mark.numerics
def test_heads_on_features_equal_end_to_end_and_resume_exactly(data):
    _features(data, data / "feats")
    store = FeatureStore(data / "feats")
    assert not store.verify()
    for video in store.video_ids():  # detection reads a video buffer by buffer: the same map as one read
        whole, bounds, attrs = store.read(video)
        chunk_attrs, chunks = store.read_chunks(video)
        parts = list(chunks)
        assert len(parts) == len(bounds) - 1 > 1 and chunk_attrs == attrs and torch.equal(torch.cat(parts, 1), whole)
    _train_heads(data, data / "straight", 2)
    _train_heads(data, data / "resumed", 1)
    second = _train_heads(data, data / "resumed", 2).stdout  # extending a finished run trains the added epoch only
    assert "epoch 1/2" not in second and second.count("epoch 2/2") == 1
    a, b = (load_checkpoint(data / run / "rc3d.pth") for run in ("straight", "resumed"))
    assert a.epoch == b.epoch == 2 and all(torch.equal(a.detector.heads[k], b.detector.heads[k])
                                          for k in a.detector.heads)
    _format_1_resumes_at_its_next_epoch(data, a)
    found = {}
    for name, source in (("cached", ["--features", str(data / "feats")]), ("e2e", ["--store", str(data / "store")])):
        run_cli("detect", "--model", str(data / "straight"), *source, "--out", str(data / f"{name}.json"),
                "--annotations", str(data / "data" / "annotations.json"), "--device", "cpu")
        found[name] = json.loads((data / f"{name}.json").read_text())["results"]
    assert sorted(found["cached"]) == ["video_test_0001", "video_test_0002"]
    assert sum(map(len, found["cached"].values())) > 0 and found["cached"] == found["e2e"]


def _format_1_resumes_at_its_next_epoch(data, straight):
    """An ``rc3d.pth`` as format 1 wrote it (JSON strings at the top, the epoch's 0-based index) reads as epoch 1
    and continues to the weights of the run trained straight."""
    _train_heads(data, data / "format1", 1)
    path = data / "format1" / "rc3d.pth"
    payload = torch.load(path, weights_only=True)
    detector = payload.pop("detector")
    for key in ("input", "preprocessing", "preprocessing_hash"):  # format 2 added them
        payload.pop(key)
    older = {key: value for key, value in detector["rc3d_config"].items() if key not in ADDED_SINCE_FORMAT_1}
    older["anchor_scales"] = older.pop("anchor_frames")  # in feature steps then: tiny_resnet keeps time
    payload.update(format_version=1, epoch=payload["epoch"] - 1, heads=detector["heads"],
                   features_checkpoint_sha256=detector["features_checkpoint_sha256"], rc3d_config=json.dumps(older),
                   **{key: json.dumps(detector[key]) for key in ("heads_kwargs", "reads")})
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.epoch == 1 and isinstance(loaded.detector, RC3DExtras)
    assert loaded.detector.rc3d_config["mode"] == "heads" and loaded.detector.reads["layer"] == "layer3"
    config = rc3d_config_of(loaded)
    assert config.anchor_frames == (2, 4, 8) and (config.lr_step, config.buffer_overlap) == (3, 0.75)
    second = _train_heads(data, data / "format1", 2).stdout
    assert "epoch 1/2" not in second and second.count("epoch 2/2") == 1
    resumed = load_checkpoint(path)
    assert resumed.epoch == 2 and all(torch.equal(straight.detector.heads[k], resumed.detector.heads[k])
                                      for k in straight.detector.heads)


def test_killed_features_run_resumes_to_the_same_store(data):
    out = data / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "cli", "features", "--checkpoint", str(data / "backbone0.pth"),
                                "--store", str(data / "store"), "--out", str(out), "--layer", "layer3", "--stride",
                                "2", "--buffer", "16", "--device", "cpu"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while process.poll() is None and not list((out / "videos").glob("*.h5")) and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted((out / "videos").glob("*.h5"))
    finished[-1].unlink()  # and as if killed while writing the next one: a temporary left behind
    (out / "videos" / (finished[-1].name + ".tmp-999999")).write_bytes(b"partial")
    rerun = _features(data, out)
    assert "computed" in rerun.stdout and not list((out / "videos").glob("*.tmp-*"))
    a, b = _maps(data / "feats"), _maps(out)
    assert sorted(a) == sorted(b) and all(torch.equal(a[v], b[v]) for v in a)


def test_changed_checkpoint_recomputes_and_stale_features_are_refused(data):
    out = data / "changing"
    _features(data, out)
    before = _maps(out)
    second = _features(data, out, checkpoint="backbone1.pth")
    assert "another checkpoint or other settings; recomputing its 5 videos" in second.stdout
    after = _maps(out)
    assert sorted(before) == sorted(after) and not any(torch.equal(before[v], after[v]) for v in before)
    with h5py.File(next((out / "videos").glob("*.h5")), "r") as handle:
        assert handle.attrs["key"] == json.loads((out / "manifest.json").read_text())["key"]
    result = run_cli("detect", "--model", str(data / "straight"), "--features", str(out), "--out",
                     str(data / "stale.json"), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "was computed with another backbone than this model's" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["features", "--checkpoint", "{data}/backbone0.pth", "--store", "{data}/store", "--out", "{data}/bad",
      "--stride", "0"], "stride must be at least 1"),
    (["features", "--checkpoint", "{data}/backbone0.pth", "--store", "{data}/store", "--out", "{data}/bad",
      "--layer", "layer9"], "--layer 'layer9': expected pool or one of layer1, layer2, layer3"),
    (["train-detector", "--detector", "rc3d", "--mode", "heads", "--store", "{data}/store", "--annotations",
      "{data}/data/annotations.json", "--out", "{data}/bad"], "mode 'heads' trains on cached features"),
    (["train-detector", "--detector", "rc3d", "--frames", "8", "--store", "{data}/store", "--annotations",
      "{data}/data/annotations.json", "--out", "{data}/bad"], "unknown key 'frames'"),
])
def test_bad_options_are_one_line_errors(data, args, message):
    result = run_cli(*[a.format(data=data) for a in args], check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("arch, toml, message", [
    ("resnet10", "anchor_frames = [8, 16]",
     "anchor_frames [8]: shorter than one feature step of resnet10 at layer4 (16 frames)"),
    ("c3d", "", "pool [4, 2, 2] and hidden 4096: c3d's fc6, the RoI head, takes 512 inputs and gives 4096"),
    ("tiny_resnet", 'fine_tune_from = "conv9"', "fine_tune_from 'conv9': tiny_resnet has the stages layer1, "
                                                "layer2, layer3"),
])
def test_backbone_settings_that_cannot_work_are_one_line_errors(data, tmp_path, arch, toml, message):
    (tmp_path / "bad.toml").write_text(f"[detection.rc3d]\n{toml}\n")
    result = run_cli("train-detector", "--detector", "rc3d", "--arch", arch, "--stream", "rgb", "--size", "16",
                     "--store", str(data / "store"), "--annotations", str(data / "data" / "annotations.json"),
                     "--out", str(tmp_path / "out"), "--config", str(tmp_path / "bad.toml"), "--device", "cpu",
                     check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert message in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("values, message", [
    ({"proposal_nms": 1.5}, "proposal_nms: NMS thresholds and fractions lie in [0, 1]"),
    ({"roi_fraction": -0.1, "test_proposal_nms": 2}, "test_proposal_nms, roi_fraction: NMS thresholds"),
    ({"min_length": -1}, "min_length: NMS thresholds and fractions lie in [0, 1], min_length is at least 0"),
])
def test_rc3d_ranges_are_checked(values, message):
    with pytest.raises(InputError, match=re.escape(message)):
        build_config(RC3DConfig, values, source=Path("run.toml"), table="[detection.rc3d]")


@pytest.mark.numerics
def test_two_processes_equal_one_process_accumulating_the_same_buffers(data, tmp_path, monkeypatch):
    """End to end, so backbone and heads are averaged over ranks; BatchNorm statistics stay per process."""
    def train(out, *extra, check=True):
        return run_cli("train-detector", "--store", str(data / "store"), "--annotations", str(data / "data" /
                       "annotations.json"), "--out", str(out), "--config", str(data / "rc3d.toml"), "--detector",
                       "rc3d", "--sta", "layer3", "--size", "24", "--pretrained", str(data / "backbone0.pth"),
                       "--epochs", "2", "--device", "cpu", *extra, check=check)

    two = train(tmp_path / "ddp", "--nproc", "2")
    assert two.stdout.count("epoch 2/2") == 1 and json.loads((tmp_path / "ddp" / "manifest.json").read_text())[
        "processes"] == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun's processes, so sums run in the same order
    train(tmp_path / "one", "--accumulate", "2")
    ddp, one = (load_checkpoint(tmp_path / run / "rc3d.pth") for run in ("ddp", "one"))
    for a, b in ((ddp.detector.heads, one.detector.heads), (ddp.state_dict, one.state_dict)):
        compared = [key for key in b if not key.endswith(("running_mean", "running_var", "batches_tracked"))]
        for key in compared:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    plain = train(tmp_path / "one", check=False)  # one buffer per step is another run: refused, not mixed
    assert plain.returncode == 2 and "was trained with another config" in plain.stderr


def test_feature_shards_merge_into_the_store_one_process_writes(data, tmp_path):
    _features(data, data / "feats")  # the whole store (cached when an earlier test built it)
    shards = [tmp_path / f"shard{index}" for index in (0, 1)]
    for index, shard in enumerate(shards):
        run_cli("features", "--checkpoint", str(data / "backbone0.pth"), "--store", str(data / "store"), "--out",
                str(shard), "--layer", "layer3", "--stride", "2", "--buffer", "16", "--device", "cpu", "--shard",
                f"{index}/2")
    first, second = (set(FeatureStore(shard).video_ids()) for shard in shards)
    assert first and second and not first & second
    run_cli("merge-stores", *map(str, shards), "--out", str(tmp_path / "merged"))
    merged, whole = _maps(tmp_path / "merged"), _maps(data / "feats")
    assert merged.keys() == whole.keys() and all(torch.equal(merged[v], whole[v]) for v in whole)
    assert run_cli("verify-store", str(tmp_path / "merged")).stdout.endswith("videos of features; OK\n")
    _features(data, tmp_path / "other", checkpoint="backbone1.pth")
    refused = run_cli("merge-stores", str(shards[0]), str(tmp_path / "other"), "--out", str(tmp_path / "bad"),
                      check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()
    assert "other: was computed with another checkpoint or other settings than" in refused.stderr
    next((shards[1] / "videos").glob("*.h5")).write_bytes(b"not hdf5")  # also the merged file: a hard link
    damaged = run_cli("verify-store", str(tmp_path / "merged"), check=False)
    assert damaged.returncode == 1 and "problem: " in damaged.stdout and "1 problem(s)" in damaged.stdout


def _rc3d_config(**values) -> RC3DConfig:
    return RC3DConfig(**{"stream": "rgb", "size": 16, "hidden": 4096, "pool": (1, 1, 1), **values})


def _port_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """C3D weights as R-C3D's port saves them (``features.<i>``, ``classifier.<i>``), written out from the
    published layer order: conv1 and conv2 are ``features.0`` and ``.3``, conv5b ``features.18``."""
    index = {"conv1": "features.0", "conv2": "features.3", "conv3a": "features.6", "conv3b": "features.8",
             "conv4a": "features.11", "conv4b": "features.13", "conv5a": "features.16", "conv5b": "features.18",
             "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}
    return {f"{index[key.rpartition('.')[0]]}.{key.rpartition('.')[2]}": value for key, value in state.items()}


def test_c3d_sports1m_file_of_the_port_builds_rc3d(untrimmed_store, tmp_path):
    """A real C3D state dict at 112 px (Sports-1M's 487 classes, fc6 of 8192 inputs) saved in the port's layout
    (``features.N``, ``classifier.N``): R-C3D gets its conv5b backbone, fc6 as the RoI head, the layers before
    pool2 fixed, and anchors of 2 to 16 steps of 8 frames. (c3d-pytorch's ``conv1 … fc8`` layout: the CLI test.)"""
    from pipelines.detection.rc3d import build_rc3d

    torch.manual_seed(0)
    state = build_model("c3d", num_classes=487, sample_size=112).state_dict()
    torch.save(_port_layout(state), tmp_path / "c3d_sports1M.pth")
    model = build_rc3d(RC3DConfig(arch="c3d", stream="rgb", size=112, normalization="mars",
                                  pretrained=str(tmp_path / "c3d_sports1M.pth")), 2, FlowStore(untrimmed_store.store))
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[key], state[key]) for key in state if not key.startswith("fc8."))
    fc = model.heads.classification.body[0]
    assert torch.equal(fc.weight, state["fc6.weight"]) and torch.equal(fc.bias, state["fc6.bias"])
    assert model.reads.layer == "conv5" and model.heads.anchor_scales == (2, 4, 5, 6, 8, 9, 10, 12, 14, 16)
    fixed = {key for key, p in model.backbone.named_parameters() if not p.requires_grad}
    assert fixed == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}


C3D_TOML = ('[detection.rc3d]\narch = "c3d"\nstream = "rgb"\nsize = 16\nbuffer = 32\nanchor_frames = [8, 16]\n'
            'pool = [1, 1, 1]\nproposal_hidden = 16\nlr_step = 1\nlr_gamma = 0.5\nepochs = 2\ndevice = "cpu"\n')


def test_c3d_pytorch_file_trains_rc3d_end_to_end_and_detects(data, tmp_path):
    """c3d-pytorch's ``conv1 … fc8`` file (C3D built at 16 px, so fc6 takes 512 = 512 × 1 × 1 × 1 pooled inputs)
    through train-detector and detect: the layers before pool2 keep the file's weights, the later ones and fc6 (the
    RoI head) train, the learning rate halves after each epoch, and an older rc3d.pth with anchors in steps reads
    as frames of C3D's 8."""
    torch.manual_seed(0)
    state = build_model("c3d", num_classes=487, sample_size=16).state_dict()
    torch.save(state, tmp_path / "c3d.pickle")
    (tmp_path / "c3d.toml").write_text(C3D_TOML)
    annotations = str(data / "data" / "annotations.json")
    trained = run_cli("train-detector", "--detector", "rc3d", "--store", str(data / "store"), "--annotations",
                      annotations, "--out", str(tmp_path / "run"), "--config", str(tmp_path / "c3d.toml"),
                      "--pretrained", str(tmp_path / "c3d.pickle"))
    assert "epoch 2/2" in trained.stdout
    checkpoint = load_checkpoint(tmp_path / "run" / "rc3d.pth")
    after = checkpoint.state_dict
    assert all(torch.equal(after[key], state[key]) for key in ("conv1.weight", "conv2.bias"))
    assert not torch.equal(after["conv5b.weight"], state["conv5b.weight"])
    assert not torch.equal(checkpoint.detector.heads["classification.body.0.weight"], state["fc6.weight"])
    assert checkpoint.resume.optimizer["param_groups"][0]["lr"] == pytest.approx(1e-4 * 0.25, rel=1e-12)
    assert checkpoint.detector.heads_kwargs["anchor_scales"] == [1.0, 2.0]
    run_cli("detect", "--model", str(tmp_path / "run"), "--store", str(data / "store"), "--out",
            str(tmp_path / "found.json"), "--annotations", annotations, "--device", "cpu")
    assert sorted(json.loads((tmp_path / "found.json").read_text())["results"]) == ["video_test_0001",
                                                                                   "video_test_0002"]
    payload = torch.load(tmp_path / "run" / "rc3d.pth", weights_only=True)
    older = {k: v for k, v in payload["detector"]["rc3d_config"].items() if k not in ADDED_SINCE_FORMAT_1}
    older["anchor_scales"] = [1.0, 2.0]
    older.pop("anchor_frames")
    payload["detector"]["rc3d_config"] = older
    torch.save(payload, tmp_path / "older.pth")
    assert rc3d_config_of(load_checkpoint(tmp_path / "older.pth")).anchor_frames == (8, 16)


def test_anchor_frames_on_a_3d_resnet_and_its_batchnorm_fixed(untrimmed_store):
    """The same frames as on C3D become steps of 16 frames (fractional ones too); the stem is fixed and every
    BatchNorm layer stays in eval mode with fixed scale and shift, so a training pass leaves it as it was."""
    from pipelines.detection.rc3d import build_rc3d

    torch.manual_seed(0)
    model = build_rc3d(_rc3d_config(arch="resnet10", size=32, hidden=32, pool=(4, 2, 2)), 2,
                       FlowStore(untrimmed_store.store))
    assert model.heads.anchor_scales == (1, 2, 2.5, 3, 4, 4.5, 5, 6, 7, 8)
    model.train("end-to-end")
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    assert norms and not any(m.training for m in norms) and model.backbone.layer1.training
    trained = {id(p) for p in model.parameters("end-to-end")}
    assert not any(id(p) in trained for m in norms for p in m.parameters())
    assert id(model.backbone.conv1.weight) not in trained and id(model.backbone.layer1[0].conv1.weight) in trained
    backbone_map(model.backbone, torch.randn(1, 3, 32, 32, 32), "layer4").sum().backward()
    assert all(torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var) and m.weight.grad is None
               for m, (mean, var) in zip(norms, before))
    assert model.backbone.layer1[0].conv1.weight.grad is not None


def test_training_buffers_overlap_as_the_ports_and_keep_truth_mostly_inside():
    """768-frame buffers every 192 frames from the start and back from the end (the port's THUMOS'14 windows);
    a segment trains a buffer when 70 % of it lies inside, clipped by at most the rest, never cut to a sliver."""
    assert overlapping_buffers(1000, 768, 0.75) == [(0, 768), (40, 808), (192, 960), (232, 1000)]
    assert overlapping_buffers(1152, 768, 0.75) == [(0, 768), (192, 960), (384, 1152)]
    assert overlapping_buffers(500, 768, 0.75) == [(0, 500)]
    segments = np.array([[700.0, 800.0], [730.0, 830.0], [100.0, 200.0], [760.0, 770.0]])
    assert kept_truth(segments, 0, 768, 0.7).tolist() == [False, False, True, True]  # 68 %, 38 %, all, 80 %
    assert kept_truth(segments, 40, 808, 0.7).tolist() == [True, True, True, True]  # 78 % of the second
    assert kept_truth(segments, 192, 960, 0.7).tolist() == [True, True, False, True]  # 8 % of the third
