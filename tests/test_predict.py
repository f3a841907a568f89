"""predict through the real CLI: the same scores as evaluate, no optical flow for RGB-input networks, fusion."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_TRAIN
from flow.errors import InputError
from pipelines.stages.evaluate import EvaluateConfig, evaluate
from pipelines.scoring.scores import load_scores
from pipelines.data.splits import load_split

NO_TVL1 = '''\
"""Started by Python before anything else: any TV-L1 solver created in this process fails loudly."""
import cv2


def _refuse(*args, **kwargs):
    raise RuntimeError("TV-L1 was called")


cv2.optflow.DualTVL1OpticalFlow_create = _refuse
'''


@pytest.fixture(scope="module")
def mars_checkpoint(synth_store, flow_teacher, tmp_path_factory) -> Path:
    """A tiny MARS student distilled from the shared Flow teacher for one epoch."""
    from pipelines.stages.train import TrainConfig, TrainPaths, train

    config = TrainConfig(**{**TINY_TRAIN, "stream": "mars", "epochs": 1, "alpha": 10.0, "mse_normalize": True})
    summary = train(config, TrainPaths(store=synth_store.store, out=tmp_path_factory.mktemp("mars"),
                                       teacher=flow_teacher))
    return Path(summary["last"])


@pytest.fixture(scope="module")
def test_videos(synth_store, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder of three test videos (nested as in the dataset) plus one broken file; path -> video id."""
    folder = tmp_path_factory.mktemp("predict") / "inbox"
    ids = {}
    for vid, _ in load_split(synth_store.splits, 1).test[::3]:
        target = folder / f"{vid}.avi"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_store.videos / f"{vid}.avi", target)
        ids[str(target.resolve())] = vid
    (folder / "broken.avi").write_text("not a video\n")
    return folder, ids


@pytest.fixture(scope="module")
def evaluated(synth_store, mars_checkpoint, flow_teacher, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """evaluate's test logits per stream and video id."""
    out = tmp_path_factory.mktemp("scores")
    logits = {}
    for name, checkpoint in (("mars", mars_checkpoint), ("flow", flow_teacher)):
        evaluate(EvaluateConfig(device="cpu"), checkpoint, synth_store.store, out / f"{name}.npz", progress=False)
        scores = load_scores(out / f"{name}.npz")
        logits[name] = dict(zip(scores.video_ids.tolist(), scores.logits))
    return logits


def predict_cli(folder: Path, *checkpoints: Path, env_path: Path | None = None, json_lines: bool = True):
    args = ["predict", str(folder), "--top-k", "4", "--device", "cpu", "--no-progress"] + ["--json"] * json_lines
    for checkpoint in checkpoints:
        args += ["--checkpoint", str(checkpoint)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (env_path, REPO) if p)}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)


def predicted_logits(stdout: str, classes: list[str]) -> dict[str, np.ndarray]:
    """Full logit vectors (top-k = all classes) from the JSON lines, by video path."""
    result = {}
    for line in stdout.splitlines():
        entry = json.loads(line)
        by_class = {item["class"]: item["logit"] for item in entry["top"]}
        result[entry["video"]] = np.array([by_class[name] for name in classes])
    return result


@pytest.fixture(scope="module")
def no_tvl1(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("no-tvl1")
    (folder / "sitecustomize.py").write_text(NO_TVL1)
    return folder


def test_mars_prediction_equals_evaluate_and_computes_no_flow(test_videos, mars_checkpoint, evaluated, no_tvl1,
                                                              synth_store):
    folder, ids = test_videos
    result = predict_cli(folder, mars_checkpoint, env_path=no_tvl1)
    assert result.returncode == 1, result.stderr  # the broken file, and nothing else, failed
    assert result.stderr.strip().splitlines() == [f"failed: {(folder / 'broken.avi').resolve()}: cannot be opened "
                                                  "as a video"]
    classes = load_split(synth_store.splits, 1).classes
    logits = predicted_logits(result.stdout, classes)
    assert set(logits) == set(ids)
    for path, vid in ids.items():
        expected = evaluated["mars"][vid]
        np.testing.assert_allclose(logits[path], expected, atol=1e-4, err_msg=vid)
        assert logits[path].argmax() == expected.argmax()


def test_a_flow_checkpoint_computes_flow(test_videos, flow_teacher, no_tvl1):
    folder, _ = test_videos
    result = predict_cli(folder, flow_teacher, env_path=no_tvl1)
    assert result.returncode != 0 and "TV-L1 was called" in result.stderr and not result.stdout


def test_two_checkpoints_fuse_by_the_mean_of_raw_logits(test_videos, mars_checkpoint, flow_teacher, evaluated,
                                                        synth_store):
    folder, ids = test_videos
    result = predict_cli(folder, mars_checkpoint, flow_teacher, json_lines=False)
    assert result.returncode == 1 and "broken.avi: cannot be opened as a video" in result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"mars+flow: {len(ids)} predicted, 1 failed")
    classes = load_split(synth_store.splits, 1).classes
    tables = parse_tables(result.stdout)
    assert set(tables) == set(ids)
    for path, vid in ids.items():  # TV-L1 on the fly with the store's preset gives the store's flow codes
        expected = (evaluated["mars"][vid] + evaluated["flow"][vid]) / 2
        names = [name for name, _ in tables[path]]
        assert names == [classes[i] for i in np.argsort(-expected)], vid
        np.testing.assert_allclose([logit for _, logit in tables[path]], np.sort(expected)[::-1], atol=1e-3)


def parse_tables(stdout: str) -> dict[str, list[tuple[str, float]]]:
    """{video: [(class, logit), ...]} from the table: a line naming the video, then one line per rank."""
    tables: dict[str, list[tuple[str, float]]] = {}
    for line in stdout.splitlines()[:-1]:
        ranked = re.match(r"^  \d+\. (\S+) +[\d.]+% +logit +(-?[\d.]+)$", line)
        if ranked:
            tables[video].append((ranked[1], float(ranked[2])))
        else:
            video = line.rsplit("  (", 1)[0]
            tables[video] = []
    return tables


def test_checkpoints_of_other_classes_are_not_fused(mars_checkpoint, tmp_path):
    import torch

    from pipelines.stages.predict import load_streams

    payload = torch.load(mars_checkpoint, weights_only=True)
    payload["classes"] = list(reversed(payload["classes"]))
    torch.save(payload, tmp_path / "other.pth")
    with pytest.raises(InputError, match="other classes"):
        load_streams([mars_checkpoint, tmp_path / "other.pth"])


def _recorded_torch_tvl1(checkpoint: Path, target: Path, device_kind: str) -> Path:
    """``checkpoint`` as if its training store's flow had come from the torch TV-L1 on ``device_kind``."""
    from flow.tvl1 import BACKEND_CLASSES
    from pipelines.core.manifest import config_hash

    payload = torch.load(checkpoint, weights_only=True)
    preprocessing = {**payload["preprocessing"], "tvl1_backend": "torch", "tvl1_class": BACKEND_CLASSES["torch"],
                     "tvl1_device": device_kind}
    payload.update(preprocessing=preprocessing, preprocessing_hash=config_hash(preprocessing))
    payload["input"]["flow"] = preprocessing  # the description a checkpoint of such a store holds
    torch.save(payload, target)
    return target


def test_a_checkpoint_trained_on_torch_tvl1_flow_is_fed_torch_tvl1_flow(flow_teacher, synth_store, tmp_path,
                                                                       monkeypatch):
    import cv2

    from flow.quantize import quantize
    from flow.tvl1_torch import TorchTVL1
    from flow.video import VideoReader
    from pipelines.stages.predict import PredictConfig, Predictor

    def refuse(*args, **kwargs):
        raise RuntimeError("OpenCV's TV-L1 was called")

    # On these frames both backends give the same codes, so what tells them apart is that OpenCV's is never made.
    monkeypatch.setattr(cv2.optflow, "DualTVL1OpticalFlow_create", refuse)
    checkpoint = _recorded_torch_tvl1(flow_teacher, tmp_path / "torch-flow.pth", "cpu")
    predictor = Predictor([checkpoint], PredictConfig(device="cpu"))
    video = synth_store.videos / f"{load_split(synth_store.splits, 1).test[0][0]}.avi"
    (decoded,) = predictor.decode(video)

    preprocessing = predictor.engines[0].checkpoint.preprocessing
    gray = np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in VideoReader(video, 0)])
    torch_codes = quantize(TorchTVL1(preprocessing["tvl1"])(gray[:-1], gray[1:]), preprocessing["bound"],
                           preprocessing["quantization"])
    np.testing.assert_array_equal(decoded.flow_codes(decoded.video_id), torch_codes)  # 16 pairs: one batch
    assert len(predictor(video).classes) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the CUDA it asks for")
def test_a_checkpoint_of_cuda_tvl1_flow_is_refused_without_cuda(flow_teacher, test_videos, tmp_path):
    checkpoint = _recorded_torch_tvl1(flow_teacher, tmp_path / "cuda-flow.pth", "cuda")
    before = checkpoint.read_bytes()
    result = predict_cli(test_videos[0], checkpoint)
    assert result.returncode == 2 and not result.stdout, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {checkpoint}: its flow was computed by the torch TV-L1 on CUDA and torch sees no CUDA device here "
        "(flow computed on the CPU differs slightly, so it is not used instead)"]
    assert checkpoint.read_bytes() == before


def test_a_checkpoint_that_needs_no_flow_predicts_whatever_tvl1_its_store_used(mars_checkpoint, test_videos, tmp_path):
    # MARS reads RGB only at test time: the TV-L1 backend of its training store never runs, so CUDA is not asked for
    checkpoint = _recorded_torch_tvl1(mars_checkpoint, tmp_path / "cuda-mars.pth", "cuda")
    result = predict_cli(test_videos[0], checkpoint)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"failed: {(test_videos[0] / 'broken.avi').resolve()}: cannot be opened as a video"], result.stderr
    assert len(result.stdout.splitlines()) >= len(test_videos[1])


def test_a_checkpoint_of_an_unknown_tvl1_backend_is_refused(flow_teacher, test_videos, tmp_path):
    from pipelines.core.manifest import config_hash

    target = tmp_path / "magic.pth"
    payload = torch.load(flow_teacher, weights_only=True)
    payload["preprocessing"] = payload["input"]["flow"] = {**payload["preprocessing"], "tvl1_backend": "magic"}
    payload["preprocessing_hash"] = config_hash(payload["preprocessing"])
    torch.save(payload, target)
    result = predict_cli(test_videos[0], target)
    assert result.returncode == 2 and not result.stdout, result.stderr
    assert result.stderr.splitlines() == [f"error: {target}: records an unknown TV-L1 backend 'magic' (known: "
                                          "opencv, torch)"]
