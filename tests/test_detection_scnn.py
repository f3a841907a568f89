"""S-CNN parts by hand (windows, labels, sampling, NMS, overlap loss) and the real train-detector / detect CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli, share_untrimmed
from flow.store import FlowStore
from pipelines.core.checkpoint import SCNNExtras, load_checkpoint
from pipelines.core.stream_specs import stream_spec
from pipelines.data.annotations import read_annotations
from pipelines.detection.clips import WindowClips
from pipelines.detection.detect import DetectConfig, detect, window_scores
from pipelines.detection.scnn import (NETWORKS, DetectorConfig, WindowSet, _epoch_sample, build_network,
                                      detector_config_of, overlap_loss)
from pipelines.scoring.detection_map import (evaluate_detections, evaluate_result_sets, read_detections,
                                             segment_tiou, tiou_result_sets)
from pipelines.detection.windows import (clip_indices, label_windows, length_prior, prior_columns, sliding_windows,
                                        temporal_nms)
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


def test_length_prior_is_the_share_of_instances_each_window_length_suits():
    # lengths 16, 32, 64 suit instances of 8-32, 16-64 and 32-128 frames (S-CNN's cal_weight.py, bounds included)
    prior = length_prior([[10, 20, 40], [], [500], [8]], (16, 32, 64))
    assert prior[0] == pytest.approx([2 / 5, 2 / 5, 1 / 5])  # 10 suits 16; 20 suits 16, 32; 40 suits 32, 64
    assert prior[1] == pytest.approx([1 / 3] * 3) and prior[2] == pytest.approx([1 / 3] * 3)  # nothing suits: flat
    assert prior[3] == pytest.approx([1, 0, 0])
    windows = np.array([[0, 16], [8, 40], [5, 69], [0, 10], [0, 22], [0, 23]])
    assert prior_columns(windows, (16, 32, 64)).tolist() == [0, 1, 2, 0, 0, 1]  # log scale: 22.6 lies between


def test_classification_network_samples_as_much_background_as_an_average_class():
    labels = np.array([1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, -1])  # 6 action windows of 2 classes
    windows = WindowSet(["v"] * len(labels), np.zeros((len(labels), 2)), labels, np.zeros(len(labels)))
    config = DetectorConfig(background_ratio=1.0)
    for network, background in (("classification", 3), ("proposal", 6), ("localization", 6)):
        sample = _epoch_sample(windows, network, config, 0, num_classes=2)
        assert sorted(labels[sample] > 0).count(True) == 6 and (labels[sample] == 0).sum() == background
        assert (labels[sample] >= 0).all()


def test_each_tiou_gets_nms_0_1_below_it():
    assert DetectConfig().nms_sets() == {}
    assert DetectConfig(nms_below_tiou=0.1).nms_sets() == {0.1: 0.0, 0.2: 0.1, 0.3: 0.2, 0.4: 0.3, 0.5: 0.4}
    assert DetectConfig(nms_below_tiou=0.1, tiou=(0.05, 0.7)).nms_sets() == {0.05: 0.0, 0.7: 0.6}


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
    'proposal_threshold = 0.0\nnms_below_tiou = 0.1\ndevice = "cpu"\n[detection.rc3d]\nstride = 4\nbuffer = 16\n'
    'anchor_frames = [2, 4]\nproposal_hidden = 8\nhidden = 16\nepochs = 1\ndevice = "cpu"\n'
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
    for network in ("proposal", "classification"):  # STA-S-CNN takes both from S-CNN
        plain, sta = (load_checkpoint(out / "detection" / m / f"{network}.pth").payload for m in ("s-cnn", "sta-s-cnn"))
        assert all(torch.equal(plain["state_dict"][k], sta["state_dict"][k]) for k in plain["state_dict"])
    assert sorted(tiou_result_sets(out / "detection" / "s-cnn" / "detections.json")) == [
        0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # Table VI's and the demo's higher range, each its own result set
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
    for row in (row for report in seeds for row in report["rows"]):  # tIoU 0.3-0.5, in both tables of a seed
        assert row["mAP_high"][:3] == row["mAP"][2:]  # the same unrounded values, so their means agree too
    assert summary["seeds"] == [3, 4] and [row["model"] for row in summary["rows"]] == [
        "s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]
    for index, row in enumerate(summary["rows"]):
        runs = np.array([report["rows"][index]["mAP"] for report in seeds])
        assert row["mAP"] == pytest.approx(runs.mean(axis=0), abs=1e-4)
        assert row["mAP_sd"] == pytest.approx(runs.std(axis=0, ddof=1), abs=1e-4)
        assert row["per_seed"] == {"3": seeds[0]["rows"][index]["mAP"], "4": seeds[1]["rows"][index]["mAP"]}
        assert len(row["mAP_high"]) == len(row["mAP_high_sd"]) == 5
        assert row["mAP_high"][:3] == row["mAP"][2:]  # tIoU 0.3-0.5 are in both tables: one value each
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


SGD_RECIPE = ('[detection.train]\nwindow_lengths = [4, 8, 16]\nproposal_positive = 0.5\noptimizer = "sgd"\n'
              'momentum = 0.9\nlr = 1e-9\nweight_decay = 0.0\nlr_step = 1\nlr_gamma = 0.5\n')


@pytest.fixture(scope="module")
def sgd_model(data):
    """Three networks trained 2 epochs with S-CNN's SGD recipe at a learning rate so small that each network keeps
    the weights it started from (to within lr x steps x gradient, far below 1e-6)."""
    config = data / "sgd.toml"
    config.write_text(SGD_RECIPE)
    out = data / "sgd"
    result = run_cli("train-detector", "--store", str(data / "store"), "--annotations", str(data / "data" /
                     "annotations"), "--out", str(out), "--config", str(config), "--epochs", "2", "--sta", "layer3",
                     *TINY)
    assert all(f"{network} epoch 2/2" in result.stdout for network in NETWORKS)
    return out


@pytest.fixture(scope="module")
def trained_model(data):
    """Three networks trained 2 epochs with AdamW, on windows of 4, 8 and 16 frames (so the prior differs by
    length)."""
    config = data / "lengths.toml"
    config.write_text("[detection.train]\nwindow_lengths = [4, 8, 16]\nproposal_positive = 0.5\n")
    out = data / "lengths"
    run_cli("train-detector", "--store", str(data / "store"), "--annotations", str(data / "data" / "annotations"),
            "--out", str(out), "--config", str(config), "--epochs", "2", *TINY)
    return out


def test_sgd_recipe_decays_the_rate_by_gamma_every_step(sgd_model):
    for network in NETWORKS:
        payload = load_checkpoint(sgd_model / f"{network}.pth").payload
        group = payload["optimizer"]["param_groups"][0]
        assert group["lr"] == pytest.approx(1e-9 * 0.5**2) and group["momentum"] == 0.9
        assert "betas" not in group and payload["scheduler"]["step_size"] == 1 and payload["scheduler"]["gamma"] == 0.5


def test_classification_network_is_trained_and_starts_the_localization_network(sgd_model):
    classification, localization = (load_checkpoint(sgd_model / f"{n}.pth") for n in ("classification",
                                                                                        "localization"))
    assert classification.epoch == 2 and classification.model_kwargs["num_classes"] == 3  # K + 1
    assert classification.stream == "flow" and localization.stream == "sta-flow"  # STA in localization only
    attention = [key for key in localization.state_dict if key not in classification.state_dict]
    assert attention and all(".sta." in key for key in attention)  # only STA's modules are new
    assert not [key for key in classification.state_dict if key not in localization.state_dict]
    started = {key: value for key, value in classification.state_dict.items() if value.is_floating_point()
               and "running" not in key}  # BatchNorm's running statistics move with every training forward pass
    assert all(torch.allclose(localization.state_dict[key], value, atol=1e-6) for key, value in started.items())
    fresh = build_network("localization", detector_config_of(localization), 2).state_dict()
    assert max(float((fresh[key] - value).abs().max()) for key, value in started.items()) > 1e-2


def test_length_prior_is_learned_from_the_training_annotations(sgd_model, data):
    truth = json.loads((data / "data" / "annotations.json").read_text())["database"]
    durations: dict[str, list[float]] = {"left": [], "right": []}
    for entry in truth.values():
        if entry["subset"] == "validation":
            for found in entry["annotations"]:  # Ambiguous stretches are no class's instances
                durations.get(found["label"], []).append((found["segment"][1] - found["segment"][0]) * 25.0)
    stored = load_checkpoint(sgd_model / "localization.pth").detector
    assert isinstance(stored, SCNNExtras) and stored.length_prior is not None
    expected = length_prior([durations["left"], durations["right"]], (4, 8, 16))
    assert np.asarray(stored.length_prior) == pytest.approx(expected)
    assert len({tuple(row) for row in expected}) > 1 or len(set(expected[0])) > 1  # a prior that can tell apart
    assert all(load_checkpoint(sgd_model / f"{n}.pth").detector.length_prior is None
               for n in ("proposal", "classification"))


def _window_probabilities(model, data, video):
    """Every window of ``video`` with the proposal network's action probability and the localization network's
    K + 1 probabilities, computed here from the networks themselves."""
    localization = load_checkpoint(model / "localization.pth")
    trained = detector_config_of(localization)
    store = FlowStore(data / "store")
    clips = WindowClips(store, stream_spec(trained.stream).test_clips, trained.frames, trained.size,
                        trained.normalization, False)
    windows = sliding_windows(store.num_frames(video) - 1, trained.window_lengths, trained.window_overlap)
    device = torch.device("cpu")
    action = window_scores(clips, video, windows, load_checkpoint(model / "proposal.pth").build_model(), 64,
                           device)[:, 1]
    return windows, action, window_scores(clips, video, windows, localization.build_model(), 64, device)


def _detections(model, data, out, **settings):
    """detect on the test videos with NMS off (every scored window stays); {video: {(start, end): detection}}."""
    config = DetectConfig(nms_threshold=1.0, device="cpu", **settings)
    detect(model, data / "store", ["video_test_0001", "video_test_0002"], out, config, log=lambda line: None,
           progress=False)
    found = json.loads(out.read_text())["results"]
    return {video: {tuple(d["segment"]): d for d in items} for video, items in found.items()}


def test_post_processing_is_eval_scnn_thumos14s(trained_model, data, tmp_path):
    classes = ["left", "right"]
    prior = np.asarray(load_checkpoint(trained_model / "localization.pth").detector.length_prior)
    scored = {video: _window_probabilities(trained_model, data, video)
              for video in ("video_test_0001", "video_test_0002")}
    middle = float(np.median(np.concatenate([action for _, action, _ in scored.values()])))
    found = {name: _detections(trained_model, data, tmp_path / f"{name}.json", **settings) for name, settings in {
        "all": dict(proposal_threshold=0.0), "drop": dict(proposal_threshold=0.0, drop_background=True),
        "prior": dict(proposal_threshold=0.0, drop_background=True, length_prior=True),
        "proposal": dict(proposal_threshold=middle)}.items()}
    for video, (windows, action, probabilities) in scored.items():
        seconds = [(round(a / 25.0, 3), round(b / 25.0, 3)) for a, b in windows]
        best = probabilities[:, 1:].argmax(axis=1)
        assert found["all"][video].keys() == set(seconds)  # threshold 0: every window, its best action class
        for key, label, row in zip(seconds, best, probabilities):
            assert found["all"][video][key]["label"] == classes[label]
            assert found["all"][video][key]["score"] == pytest.approx(row[label + 1], abs=1e-6)  # 6 decimals kept
        action_argmax = probabilities.argmax(axis=1) > 0
        assert found["drop"][video].keys() == {k for k, keep in zip(seconds, action_argmax) if keep}
        assert found["prior"][video].keys() == found["drop"][video].keys()
        columns = prior_columns(windows, (4, 8, 16))
        for index, key in enumerate(seconds):
            if action_argmax[index]:
                expected = probabilities[index, best[index] + 1] * prior[best[index], columns[index]]
                assert found["prior"][video][key]["score"] == pytest.approx(expected, abs=1e-6)
        assert found["proposal"][video].keys() == {k for k, a in zip(seconds, action) if a >= middle}
    assert 0 < sum(map(len, found["proposal"].values())) < sum(map(len, found["all"].values()))
    assert sum(map(len, found["drop"].values())) < sum(map(len, found["all"].values()))


def test_each_tiou_has_its_own_result_set_with_nms_0_1_below_it(trained_model, data, tmp_path):
    out = tmp_path / "detections.json"
    everything = _detections(trained_model, data, out, proposal_threshold=0.0, nms_below_tiou=0.1, tiou=(0.1, 0.3, 0.5))
    sets = tiou_result_sets(out)
    assert sorted(sets) == [0.1, 0.3, 0.5] and all(path.parent == tmp_path for path in sets.values())
    for tiou, path in sets.items():
        kept = json.loads(path.read_text())["results"]
        for video, candidates in everything.items():
            for label in ("left", "right"):
                mine = [d for d in kept[video] if d["label"] == label]
                frames = np.array([d["segment"] for d in mine]).reshape(-1, 2) * 25.0
                for index, segment in enumerate(frames):  # no two kept ones overlap by more than tIoU - 0.1
                    assert (segment_tiou(segment, np.delete(frames, index, axis=0)) <= tiou - 0.1 + 1e-9).all()
                for key, candidate in candidates.items():  # each dropped one overlaps a kept one of higher score
                    if candidate["label"] == label and candidate not in mine:
                        overlaps = segment_tiou(np.array(key) * 25.0, frames)
                        assert any(o > tiou - 0.1 and d["score"] >= candidate["score"] for o, d in zip(overlaps, mine))
    truth = read_annotations(data / "data" / "annotations.json", "test")
    per_set = evaluate_result_sets(out, truth, [0.1, 0.3, 0.5])
    for index, (tiou, path) in enumerate(sorted(sets.items())):  # each column: the evaluator on its own file
        assert per_set.mAP[index] == evaluate_detections(read_detections(path), truth, [tiou]).mAP[0]
        scored = run_cli("eval-detection", str(path), "--annotations", str(data / "data" / "annotations.json"),
                         "--tiou", str(tiou), "--json")
        assert json.loads(scored.stdout)["mAP"][0] == pytest.approx(per_set.mAP[index], abs=1e-12)
    assert len(json.loads(sets[0.1].read_text())["results"]["video_test_0001"]) < len(everything["video_test_0001"])


def test_an_older_detector_without_classification_network_or_prior_still_detects(sgd_model, data, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(sgd_model, old)
    (old / "classification.pth").unlink()
    payload = torch.load(old / "localization.pth", weights_only=True)
    del payload["detector"]["length_prior"]
    torch.save(payload, old / "localization.pth")
    command = ["detect", "--model", str(old), "--store", str(data / "store"), "--out", str(tmp_path / "d.json"),
               "--proposal-threshold", "0", "--device", "cpu", "--no-progress"]
    run_cli(*command)
    assert json.loads((tmp_path / "d.json").read_text())["results"]["video_test_0001"]
    config = tmp_path / "prior.toml"
    config.write_text("[detection.detect]\nlength_prior = true\n")
    refused = run_cli(*command, "--config", str(config), check=False)
    assert refused.returncode == 2 and refused.stderr == (
        f"error: {old / 'localization.pth'}: holds no window-length prior (trained before S-CNN's prior was kept): "
        "set length_prior = false in [detection.detect], or train it again\n")
