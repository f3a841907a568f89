"""S-CNN parts by hand (windows, labels, sampling, NMS, overlap loss) and the real train-detector / detect CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli, share_untrimmed
from pipelines.core.checkpoint import SCNNExtras, load_checkpoint
from pipelines.detection.scnn import NETWORKS, detector_config_of, overlap_loss
from pipelines.scoring.detection_map import segment_tiou
from pipelines.detection.windows import clip_indices, label_windows, sliding_windows, temporal_nms
from pipelines.inference.features import FeatureStore

TINY = ["--frames", "4", "--size", "24", "--batch-size", "8", "--seed", "1", "--device", "cpu", "--no-progress"]


def test_sliding_windows_cover_each_scale_with_75_percent_overlap():
    windows = sliding_windows(40, (16, 32), 0.75)
    assert windows[:7].tolist() == [[s, s + 16] for s in (0, 4, 8, 12, 16, 20, 24)]
    assert windows[7:].tolist() == [[0, 32], [8, 40]]
    assert sliding_windows(42, (16,), 0.75)[-1].tolist() == [26, 42]  # the end of the video gets a window
    assert sliding_windows(10, (16, 32)).tolist() == [[0, 10]]  # shorter than every scale: the whole video


def test_windows_are_sampled_to_fixed_length_clips():
    assert clip_indices(0, 16, 16).tolist() == list(range(16))
    assert clip_indices(0, 64, 16).tolist() == list(range(2, 64, 4))
    assert clip_indices(10, 14, 8).tolist() == [10, 10, 11, 11, 12, 12, 13, 13]


def test_window_labels_follow_the_best_overlap():
    windows = np.array([[0, 10], [5, 15], [20, 30], [40, 50]])
    labels, overlap = label_windows(windows, np.array([[0, 10], [20, 28]], float), np.array([2, 0]), 0.5, 0.3)
    assert labels.tolist() == [3, -1, 1, 0]  # tIoU 1, 1/3 (ignored), 0.8, 0
    assert overlap == pytest.approx([1, 1 / 3, 0.8, 0])


def test_temporal_nms_keeps_the_best_of_each_cluster():
    segments = np.array([[0, 10], [1, 11], [20, 30], [2, 12]], float)
    kept = temporal_nms(segments, np.array([0.5, 0.9, 0.4, 0.8]), threshold=0.5)
    assert kept.tolist() == [1, 2]  # [0, 10] and [2, 12] overlap [1, 11] by 9/11 and 9/11


def test_temporal_nms_equals_the_greedy_definition_on_random_segments():
    rng = np.random.default_rng(0)
    for trial in range(30):
        starts = rng.integers(0, 50, 200).astype(float)
        segments = np.stack([starts, starts + rng.integers(0, 12, 200)], axis=1)  # some of zero length
        scores = rng.integers(0, 20, 200) / 20.0  # ties: the earlier index ranks first
        threshold = rng.choice([0.0, 0.3, 0.7, 1.0])
        expected: list[int] = []
        for index in sorted(range(200), key=lambda i: -scores[i]):
            with np.errstate(invalid="ignore"):
                overlaps = [segment_tiou(segments[index], segments[[k]])[0] for k in expected]
            if all(tiou <= threshold for tiou in overlaps):
                expected.append(index)
        assert temporal_nms(segments, scores, threshold).tolist() == expected
        assert temporal_nms(segments, scores, threshold, limit=5).tolist() == expected[:5]
    assert temporal_nms(np.zeros((0, 2)), np.zeros(0), 0.5).tolist() == []


def test_overlap_loss_is_scnn_formula_and_pulls_the_score_to_the_overlap():
    logits = torch.log(torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))
    labels, overlaps = torch.tensor([1, 1, 0]), torch.tensor([0.5, 1.0, 0.0])
    expected = (0.5 * (0.8**2 / 0.5**0.25 - 1) + 0.5 * (0.4**2 / 1.0 - 1)) / 3  # background row counts in N only
    assert float(overlap_loss(logits, labels, overlaps, 0.25)) == pytest.approx(expected)
    # softmax loss + overlap loss is least where P = v ** (alpha / 2)
    grid = torch.linspace(0.05, 0.99, 500)
    total = -grid.log() + 0.5 * (grid**2 / 0.5**0.25 - 1)
    assert float(grid[total.argmin()]) == pytest.approx(0.5**0.125, abs=0.005)


@pytest.fixture(scope="module")
def data(tmp_path_factory, untrimmed_store):
    root = share_untrimmed(untrimmed_store, tmp_path_factory.mktemp("scnn"))
    config = root / "detector.toml"
    config.write_text("[detection.train]\nwindow_lengths = [8, 16]\nproposal_positive = 0.5\n")
    return root


def _train(data, out, epochs: int, *extra: str):
    return run_cli("train-detector", "--store", str(data / "store"), "--annotations", str(data / "data" /
                   "annotations"), "--out", str(out), "--config", str(data / "detector.toml"), "--epochs",
                   str(epochs), *TINY, *extra)


def _assert_extended(stdout: str) -> None:
    """A run extended from 1 to 2 epochs: proposal and classification train their second epoch only; the
    localization network trains both anew from the extended classification network."""
    assert "proposal epoch 1/2" not in stdout and "classification epoch 1/2" not in stdout
    assert "localization: its classification network now has 2 epochs, not 1" in stdout
    assert stdout.count("epoch 2/2") == 3 and "localization epoch 1/2" in stdout


@pytest.mark.numerics
def test_train_detect_evaluate_and_exact_resume(data):
    straight, resumed = data / "straight", data / "resumed"
    _train(data, straight, 2, "--sta", "layer3")
    _train(data, resumed, 1, "--sta", "layer3")
    second = _train(data, resumed, 2, "--sta", "layer3")  # extending a finished run trains the added epoch only,
    _assert_extended(second.stdout)                        # and localization anew from the extended classification
    for network in NETWORKS:
        a, b = (load_checkpoint(folder / f"{network}.pth").payload for folder in (straight, resumed))
        assert a["epoch"] == b["epoch"] == 2
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    loc = load_checkpoint(straight / "localization.pth").payload
    assert loc["stream"] == "sta-flow" and loc["model_kwargs"]["num_classes"] == 3 and loc["classes"] == [
        "left", "right"]
    assert json.loads((straight / "manifest.json").read_text())["stage"] == "train-detector"

    results = data / "detections.json"
    run_cli("detect", "--model", str(straight), "--store", str(data / "store"), "--out", str(results),
            "--annotations", str(data / "data" / "annotations.json"), "--proposal-threshold", "0",
            "--device", "cpu", "--no-progress")
    detections = json.loads(results.read_text())["results"]
    assert sorted(detections) == ["video_test_0001", "video_test_0002"]
    assert all(d["label"] in ("left", "right") and d["segment"][0] < d["segment"][1]
               for found in detections.values() for d in found)
    report = json.loads(run_cli("eval-detection", str(results), "--annotations", str(data / "data" / "annotations"),
                                "--json").stdout)
    assert len(report["mAP"]) == 5 and all(0 <= v <= 1 for v in report["mAP"])


def _as_format_1(path):
    """Rewrite a detector checkpoint as format 1 wrote it: JSON strings at the top, the epoch's 0-based index."""
    payload = torch.load(path, weights_only=True)
    detector = payload.pop("detector")
    for key in ("input", "preprocessing", "preprocessing_hash"):  # format 2 added them
        payload.pop(key)
    payload.update(format_version=1, epoch=payload["epoch"] - 1, network=detector["network"],
                   detector_config=json.dumps(detector["detector_config"]), epochs=payload["epoch"])
    torch.save(payload, path)
    return detector


@pytest.mark.numerics
def test_a_format_1_detector_loads_and_resumes_at_its_next_epoch(data):
    old = data / "format1"
    _train(data, old, 1, "--sta", "layer3")
    written = {network: _as_format_1(old / f"{network}.pth") for network in NETWORKS}
    loaded = load_checkpoint(old / "localization.pth")
    assert loaded.epoch == 1 and loaded.detector == SCNNExtras("localization", json.loads(json.dumps(
        written["localization"]["detector_config"])))
    assert detector_config_of(loaded).sta == "layer3"
    second = _train(data, old, 2, "--sta", "layer3")
    _assert_extended(second.stdout)
    for network in NETWORKS:  # the same weights as the run trained straight (the test above)
        a, b = (load_checkpoint(folder / f"{network}.pth") for folder in (data / "straight", old))
        assert a.epoch == b.epoch == 2 and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_changed_config_refuses_to_resume(data):
    out = data / "straight"  # trained by the test above; a refused run trains nothing
    result = run_cli("train-detector", "--store", str(data / "store"), "--annotations", str(data / "data" /
                     "annotations"), "--out", str(out), "--config", str(data / "detector.toml"), "--epochs", "2",
                     "--lr", "0.01", *TINY, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "proposal.pth: was trained with another config" in result.stderr



def test_detect_with_a_thumos_folder_runs_on_every_test_video_of_the_store(data):
    # A THUMOS'14 folder names test videos without instances in no file, yet the evaluation counts false positives
    # on them: video_test_0001 keeps only an Ambiguous stretch here, video_test_0002 no line at all.
    folder = data / "sparse_annotations"
    shutil.copytree(data / "data" / "annotations", folder)
    for path in folder.glob("*_test.txt"):
        path.write_text("video_test_0001 0.1 0.5\n" if path.name == "Ambiguous_test.txt" else "")
    results = data / "sparse.json"
    run_cli("detect", "--model", str(data / "straight"), "--store", str(data / "store"), "--out", str(results),
            "--annotations", str(folder), "--proposal-threshold", "0", "--device", "cpu", "--no-progress")
    assert sorted(json.loads(results.read_text())["results"]) == ["video_test_0001", "video_test_0002"]

TINY_DEMO = (
    '[detection.synth]\nclasses = 2\nval_videos = 2\ntest_videos = 1\nframes = [40, 48]\naction_frames = [8, 14]\n'
    'idle_frames = [0, 2]\ninstances = [1, 2]\nsize = 24\n[extract]\nshort_side = 0\npreset = "cheap"\n'
    'workers = 1\n[detection.train]\nsta = "layer3"\nframes = 4\nsize = 24\nwindow_lengths = [8, 16]\n'
    'proposal_positive = 0.5\nepochs = 1\nbatch_size = 8\ndevice = "cpu"\n[detection.detect]\n'
    'proposal_threshold = 0.0\ndevice = "cpu"\n[detection.rc3d]\nstride = 4\nbuffer = 16\n'
    'anchor_scales = [2, 4]\nproposal_hidden = 8\nhidden = 16\nepochs = 1\ndevice = "cpu"\n'
    '[detection.rc3d_detect]\ndevice = "cpu"\n')


def test_detection_demo_layout(tmp_path):
    config = tmp_path / "tiny-demo.toml"
    config.write_text(TINY_DEMO)
    out = tmp_path / "demo"
    run_cli("demo", "--task", "detection", "--out", str(out), "--seed", "3", "--config", str(config))
    report = json.loads((out / "detection" / "report.json").read_text())
    assert report["tiou"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [row["model"] for row in report["rows"]] == ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]
    assert all(len(row["mAP"]) == 5 and len(row["mAP_high"]) == 5 for row in report["rows"])
    for model in ("s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"):
        assert json.loads((out / "detection" / model / "detections.json").read_text())["results"]
    assert (out / "data" / "annotations" / "left_test.txt").exists() and (out / "data" / "annotations.json").exists()
    plain, sta = (load_checkpoint(out / "detection" / m / "proposal.pth").payload for m in ("s-cnn", "sta-s-cnn"))
    assert all(torch.equal(plain["state_dict"][k], sta["state_dict"][k]) for k in plain["state_dict"])
    assert load_checkpoint(out / "detection" / "sta-s-cnn" / "localization.pth").payload["stream"] == "sta-flow"
    assert "| sta-s-cnn |" in (out / "detection" / "report.md").read_text()
    sta_rc3d = load_checkpoint(out / "detection" / "sta-r-c3d" / "rc3d.pth").payload
    assert sta_rc3d["stream"] == "sta-flow" and load_checkpoint(out / "detection" / "r-c3d" / "rc3d.pth").payload[
        "stream"] == "flow"
    assert FeatureStore(out / "detection" / "features" / "sta-r-c3d").manifest["checkpoint"].endswith(
        "sta-s-cnn/localization.pth")
    assert (out / "detection" / "sta-s-cnn" / "sta_timelines.npz").exists()
    assert (out / "detection" / "report.html").read_text().count("data:image/png;base64") == 2
    again = run_cli("demo", "--task", "detection", "--out", str(out), "--seed", "3", "--config", str(config))
    assert "epoch" not in again.stdout  # a rerun resumes: extraction rewrites the store's manifest, nothing retrains


def test_detection_demo_over_seeds_reports_mean_and_sd(tmp_path):
    config = tmp_path / "tiny-demo.toml"
    config.write_text(TINY_DEMO)
    result = run_cli("demo", "--task", "detection", "--out", str(tmp_path / "demo"), "--seed", "3", "--seed", "4",
                     "--config", str(config))
    assert "mean ± sd over seeds 3, 4" in result.stdout
    summary = json.loads((tmp_path / "demo" / "detection" / "report.json").read_text())
    seeds = [json.loads((tmp_path / "demo" / f"seed-{s}" / "detection" / "report.json").read_text()) for s in (3, 4)]
    assert summary["seeds"] == [3, 4] and [row["model"] for row in summary["rows"]] == [
        "s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]
    for index, row in enumerate(summary["rows"]):
        runs = np.array([report["rows"][index]["mAP"] for report in seeds])
        assert row["mAP"] == pytest.approx(runs.mean(axis=0), abs=1e-4)
        assert row["mAP_sd"] == pytest.approx(runs.std(axis=0, ddof=1), abs=1e-4)
        assert row["per_seed"] == {"3": seeds[0]["rows"][index]["mAP"], "4": seeds[1]["rows"][index]["mAP"]}
        assert len(row["mAP_high"]) == len(row["mAP_high_sd"]) == 5
    assert "±" in (tmp_path / "demo" / "detection" / "report.md").read_text()
    if (tmp_path / "demo" / "detection" / "report.html").exists():  # with matplotlib: the run report draws it too
        run_cli("report", str(tmp_path / "demo"))
        assert "mean ± sd over seeds 3, 4" in (tmp_path / "demo" / "report.html").read_text()
    for seeds in (["3"], ["3", "4"], ["3"]):  # one seed into the same folder, then both again (all cached)
        run_cli("demo", "--task", "detection", "--out", str(tmp_path / "demo"), "--config", str(config),
                *[arg for seed in seeds for arg in ("--seed", seed)])
    single = json.loads((tmp_path / "demo" / "detection" / "report.json").read_text())
    assert single["seed"] == 3 and "seeds" not in single and all("per_class" in row for row in single["rows"])
    refused = run_cli("demo", "--task", "detection", "--out", str(tmp_path / "x"), "--seed", "3", "--seed", "3",
                      check=False)
    assert refused.returncode == 2 and "--seed" in refused.stderr and "Traceback" not in refused.stderr
