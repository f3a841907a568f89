"""Late fusion: numbers equal hand computations, mismatched inputs are refused, test scores never steer weights."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flow.errors import InputError
from pipelines.scoring import metrics
from pipelines.stages.fuse import FuseConfig, combinations, fuse
from pipelines.scoring.fusion_weights import learn_logit_weights, learn_softmax_weights, softmax
from pipelines.scoring.scores import save_scores

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["Archery", "Biking", "Climbing"]
IDS = ["Archery/v1", "Biking/v2", "Climbing/v3", "Archery/v4"]
LABELS = [0, 1, 2, 0]
# Each stream is wrong on a different video (mars on v4, rgb on v3, flow on v2); their equal average is right on
# all four, so the fused argmax differs from every single stream's somewhere.
HAND = {
    "mars": [[3, 0, 0], [0, 3, 0], [0, 0, 3], [0, 5, 0]],
    "rgb": [[3, 0, 0], [0, 3, 0], [1, 0, 0], [3, 0, 0]],
    "flow": [[3, 0, 0], [1, 0, 0], [0, 0, 3], [3, 0, 0]],
}


def write(folder: Path, stream: str, logits, *, split=1, subset="test", ids=IDS, labels=LABELS, classes=CLASSES,
          protocol="mars:16", name=None) -> Path:
    path = folder / (name or f"{stream}_s{split}_{subset}.npz")
    return save_scores(path, video_ids=ids, labels=labels, logits=np.asarray(logits, dtype=np.float64),
                       classes=classes, split=split, subset=subset, stream=stream, protocol=protocol)


def hand_files(folder: Path, streams=("mars", "rgb", "flow"), split=1) -> list[Path]:
    return [write(folder, stream, HAND[stream], split=split) for stream in streams]


def by_model(report, split=1):
    return {row["model"]: row for row in report["rows"] if row["split"] == split}


def test_equal_average_of_raw_logits_matches_hand_computation(tmp_path):
    report = fuse(hand_files(tmp_path), tmp_path / "out").to_json()
    rows = by_model(report)
    # Sums per video: mars+rgb+flow v4 = [6, 5, 0] -> right; mars+rgb v4 = [3, 5, 0] -> wrong; rgb+flow all right.
    assert {model: row["top1"] for model, row in rows.items()} == {
        "mars": 75.0, "rgb": 75.0, "flow": 75.0,
        "mars+rgb": 75.0, "mars+flow": 75.0, "rgb+flow": 100.0, "mars+rgb+flow": 100.0,
    }
    # mars misses one of two Archery videos: (50 + 100 + 100) / 3; rgb misses the only Climbing video.
    assert rows["mars"]["mean_class"] == pytest.approx(250 / 3)
    assert rows["rgb"]["mean_class"] == pytest.approx(200 / 3)
    assert rows["flow"]["mean_class"] == pytest.approx(200 / 3)
    assert all(row["top5"] == 100.0 and row["videos"] == 4 for row in rows.values())  # 3 classes < 5
    assert report["fusion"]["method"] == "equal" and report["fusion"]["scores"] == "logits"
    assert report["fusion"]["weights"]["1"]["mars+rgb+flow"] == pytest.approx({"mars": 1 / 3, "rgb": 1 / 3,
                                                                                "flow": 1 / 3})
    # Ties on top-1, mean class and top-5 go to the simpler model.
    assert report["best"]["1"]["model"] == "rgb+flow"


def test_softmax_average_differs_from_logit_average_as_computed_by_hand(tmp_path):
    # Video 1 (label Biking): mars is very sure of Archery, rgb and flow fairly sure of Biking.
    #   logits summed:  [20, 10, 0]                 -> Archery (wrong)
    #   softmax summed: [1 + 2/(e^5+2), 2 e^5/(e^5+2), ...] = [1.013, 1.973, ...] -> Biking (right)
    streams = {"mars": [[20, 0, 0], [4, 0, 0]], "rgb": [[0, 5, 0], [4, 0, 0]], "flow": [[0, 5, 0], [4, 0, 0]]}
    files = [write(tmp_path, s, z, ids=["v1", "v2"], labels=[1, 0]) for s, z in streams.items()]
    logits_report = fuse(files, tmp_path / "logits").to_json()
    softmax_report = fuse(files, tmp_path / "softmax", FuseConfig(softmax=True)).to_json()
    assert by_model(logits_report)["mars+rgb+flow"]["top1"] == 50.0
    assert by_model(softmax_report)["mars+rgb+flow"]["top1"] == 100.0
    assert by_model(softmax_report)["mars"]["top1"] == 50.0  # a single stream's argmax is the same either way
    assert softmax_report["fusion"]["scores"] == "softmax"


def test_fixed_weights(tmp_path):
    config = FuseConfig(weights={"mars": 3, "rgb": 1, "flow": 1})
    report = fuse(hand_files(tmp_path), tmp_path / "out", config).to_json()
    rows = by_model(report)
    # 3*mars + rgb + flow on v4: [6, 15, 0] -> wrong, so the triple drops from 100 (equal) to 75.
    assert rows["mars+rgb+flow"]["top1"] == 75.0
    assert rows["rgb+flow"]["top1"] == 100.0
    assert report["fusion"]["method"] == "fixed"
    assert report["fusion"]["weights"]["1"]["mars+rgb+flow"] == pytest.approx({"mars": 0.6, "rgb": 0.2, "flow": 0.2})
    with pytest.raises(InputError, match="no weight for stream flow"):
        fuse(hand_files(tmp_path), tmp_path / "out2", FuseConfig(weights={"mars": 1, "rgb": 1}))
    with pytest.raises(InputError, match="exclude each other"):
        FuseConfig(weights={"mars": 1}, learn_weights=True)
    with pytest.raises(InputError, match="positive"):
        FuseConfig(weights={"mars": -1})


def test_metrics_by_hand():
    scores = np.array([[0.1, 0.9, 0.0, 0.3, 0.2, 0.8], [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])
    labels = np.array([5, 5])
    # Video 1 ranks class 5 second; video 2 ranks it last (sixth).
    assert metrics.top_k_accuracy(scores, labels, 1) == 0.0
    assert metrics.top_k_accuracy(scores, labels, 2) == 50.0
    assert metrics.top_k_accuracy(scores, labels, 5) == 50.0
    tied = np.array([[1.0, 1.0, 1.0]])  # equal scores rank lower class indices first, as argmax does
    assert [metrics.top_k_accuracy(tied, np.array([2]), k) for k in (1, 2, 3)] == [0.0, 0.0, 100.0]
    assert metrics.top_k_accuracy(tied, np.array([0]), 1) == 100.0
    true, predicted = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    confusion = metrics.confusion_matrix(true, predicted, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    per_class = metrics.per_class_accuracy(true, predicted, 4)
    assert per_class[:3].tolist() == [50.0, 100.0, 0.0] and np.isnan(per_class[3])  # class 3 has no videos
    assert metrics.mean_class_accuracy(true, predicted, 4) == 50.0


def test_ties_go_to_the_lower_class_index_when_only_some_classes_have_videos():
    """Labels of two classes out of four (scikit-learn would read them as a binary problem without ``labels=``),
    and equal scores that only the tie rule orders."""
    scores = np.array([[2.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 3.0, 3.0, 3.0]])
    labels = np.array([2, 2, 1])
    # ranks of the labels: video 1 third (class 1 ties it at a lower index), video 2 third, video 3 first
    assert [metrics.top_k_accuracy(scores, labels, k) for k in (1, 2, 3, 4)] == pytest.approx([100 / 3, 100 / 3, 100, 100])
    assert metrics.predictions(scores).tolist() == [0, 0, 1]
    assert metrics.confusion_matrix(labels, metrics.predictions(scores), 4)[2].tolist() == [2, 0, 0, 0]
    two = np.array([[0.5, 0.5], [0.2, 0.9]])  # two classes: logits, not probabilities of class 1
    assert metrics.top_k_accuracy(two, np.array([1, 1]), 1) == 50.0


@pytest.mark.parametrize("change, fragment", [
    (dict(classes=["Archery", "Biking", "Cycling"]), "classes differ"),
    (dict(protocol="mars:64"), "protocol 'mars:64' differs"),
    (dict(ids=["Archery/v1", "Biking/v2", "Climbing/v3", "Archery/v9"]), "videos differ"),
    (dict(labels=[0, 1, 2, 1]), "labels differ"),
    (dict(stream="mars", name="mars_again.npz"), "a second mars score file for split 1 test"),
])
def test_disagreeing_files_are_refused_naming_both(tmp_path, change, fragment):
    first = write(tmp_path, "mars", HAND["mars"])
    stream = change.pop("stream", "rgb")
    second = write(tmp_path, stream, HAND["rgb"], **change)
    with pytest.raises(InputError) as caught:
        fuse([first, second], tmp_path / "out")
    message = str(caught.value)
    assert fragment in message and str(first) in message and str(second) in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_rows_of_other_files_are_aligned_by_video_id(tmp_path):
    order = [3, 1, 0, 2]
    files = [write(tmp_path, "mars", HAND["mars"]),
             write(tmp_path, "rgb", np.asarray(HAND["rgb"])[order], ids=[IDS[i] for i in order],
                   labels=[LABELS[i] for i in order]),
             write(tmp_path, "flow", HAND["flow"])]
    assert by_model(fuse(files, tmp_path / "out").to_json())["mars+rgb+flow"]["top1"] == 100.0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "fuse", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_refuses_mismatched_split_files_in_one_line(tmp_path):
    first = write(tmp_path, "mars", HAND["mars"])
    second = write(tmp_path, "rgb", HAND["rgb"], protocol="mars:64")
    result = _cli(str(first), str(second), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(second) in lines[0] and str(first) in lines[0]


def test_cli_reports_a_corrupt_score_file_in_one_line(tmp_path):
    good = write(tmp_path, "mars", HAND["mars"])
    bad = tmp_path / "rgb.npz"
    bad.write_bytes(good.read_bytes()[:100])
    result = _cli(str(good), str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {bad}: not a readable .npz score file")


def test_cli_fuses_a_folder_and_prints_the_table_with_the_best_row_marked(tmp_path):
    hand_files(tmp_path / "scores")
    out = tmp_path / "out"
    result = _cli(str(tmp_path / "scores"), "--out", str(out), "--weights", "mars=3,rgb=1,flow=1",
                  "--dataset", "toy")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("top-1 (%) - fixed-weight average of raw logits")
    marked = [line for line in lines if line.startswith("* ") and "100.00" in line]
    assert len(marked) == 1 and marked[0].split()[1] == "rgb+flow"
    assert json.loads((out / "report.json").read_text())["dataset"] == "toy"
    bad = _cli(str(tmp_path / "scores"), "--out", str(out), "--weights", "mars:3")
    assert bad.returncode == 2 and "STREAM=WEIGHT" in bad.stderr


def _learning_setup(folder: Path, garbage_test: bool, subset: str = "val") -> list[Path]:
    """Val scores where mars is informative and flow is noise; test scores real or replaced by noise."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 90)
    informative = rng.normal(size=(90, 3)) + 3.0 * np.eye(3)[labels]
    noise = rng.normal(size=(90, 3))
    ids = [f"Train/v{i}" for i in range(90)]
    files = [write(folder, "mars", informative, subset=subset, ids=ids, labels=labels),
             write(folder, "flow", noise, subset=subset, ids=ids, labels=labels)]
    garbage = np.random.default_rng(1).normal(scale=50.0, size=(4, 3))
    for stream in ("mars", "flow"):
        files.append(write(folder, stream, garbage if garbage_test else HAND[stream]))
    return files


@pytest.mark.parametrize("use_softmax", [False, True])
def test_learned_weights_never_read_test_scores(tmp_path, use_softmax):
    config = FuseConfig(learn_weights=True, softmax=use_softmax)
    real = fuse(_learning_setup(tmp_path / "real", garbage_test=False), tmp_path / "out_real", config).to_json()
    garbage = fuse(_learning_setup(tmp_path / "garbage", garbage_test=True), tmp_path / "out_garbage", config).to_json()
    assert real["fusion"]["weights"] == garbage["fusion"]["weights"]
    assert real["fusion"]["learned_on"] == {"1": "val"}
    weights = real["fusion"]["weights"]["1"]["mars+flow"]
    assert weights["mars"] > 0.8 > weights["flow"]  # the noisy stream is down-weighted
    assert sum(weights.values()) == pytest.approx(1.0)
    roles = {(Path(f["path"]).name, f["role"]) for f in real["manifest"]["score_files"]}
    assert ("mars_s1_val.npz", "learning") in roles and ("mars_s1_test.npz", "test") in roles


def test_learned_weights_fall_back_to_train_and_refuse_test_videos(tmp_path):
    report = fuse(_learning_setup(tmp_path / "a", garbage_test=False, subset="train"), tmp_path / "out",
                  FuseConfig(learn_weights=True)).to_json()
    assert report["fusion"]["learned_on"] == {"1": "train"}
    assert any("learned on train" in note for note in report["notes"])
    leaky = [write(tmp_path / "b", s, HAND[s], subset="val") for s in ("mars", "flow")] + hand_files(
        tmp_path / "b", streams=("mars", "flow"))
    with pytest.raises(InputError, match="shares 4 videos with the test scores"):
        fuse(leaky, tmp_path / "out2", FuseConfig(learn_weights=True))
    with pytest.raises(InputError, match="no val scores of stream rgb"):
        fuse(_learning_setup(tmp_path / "c", garbage_test=False) + [write(tmp_path / "c", "rgb", HAND["rgb"])],
             tmp_path / "out3", FuseConfig(learn_weights=True))


def test_learners_recover_known_weights():
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    z1, z2 = rng.normal(size=(n, c)), rng.normal(size=(n, c))
    # Labels drawn from softmax(2 z1 + 1 z2): the fitted normalised weights should be near (2/3, 1/3).
    probs = softmax(2.0 * z1 + 1.0 * z2)
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    assert learn_logit_weights([z1, z2], labels) == pytest.approx([2 / 3, 1 / 3], abs=0.04)
    # Labels drawn from the mixture 0.7 softmax(3 z1) + 0.3 softmax(3 z2).
    mixture = 0.7 * softmax(3 * z1) + 0.3 * softmax(3 * z2)
    labels = (mixture.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    assert learn_softmax_weights([3 * z1, 3 * z2], labels) == pytest.approx([0.7, 0.3], abs=0.05)


def test_mean_over_splits_only_for_models_in_every_split(tmp_path):
    split2 = {"mars": [[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]],  # wrong on v3 -> 75
              "rgb": [[0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]}  # wrong on v1 -> 75
    files = hand_files(tmp_path) + [write(tmp_path, s, z, split=2) for s, z in split2.items()]
    report = fuse(files, tmp_path / "out").to_json()
    means = {row["model"]: row for row in report["rows"] if row["split"] == "mean"}
    assert sorted(means) == ["mars", "mars+rgb", "rgb"]
    # mars+rgb: split 1 75; split 2: v1 [1,1,0] ties -> Archery (right), v3 [1,0,1] ties -> Archery (wrong) -> 75.
    assert by_model(report, 2)["mars+rgb"]["top1"] == 75.0
    assert means["mars+rgb"]["top1"] == 75.0
    assert means["mars"]["top1"] == 75.0 and means["rgb"]["top1"] == 75.0
    assert means["mars"]["mean_class"] == pytest.approx((250 / 3 + 200 / 3) / 2)
    assert means["mars"]["videos"] == 8 and means["mars"]["splits"] == [1, 2]
    assert [row["split"] for row in report["rows"]][:7] == [1] * 7
    assert set(report["best"]) == {"1", "2"} and (tmp_path / "out" / "confusion_split2.csv").is_file()


def test_model_names_follow_the_fusion_order(tmp_path):
    files = [write(tmp_path, s, HAND["mars"]) for s in ("flow", "rgb", "sta-mars", "mars")]
    models = list(by_model(fuse(files, tmp_path / "out").to_json()))
    assert models == ["sta-mars", "mars", "rgb", "flow", "sta-mars+mars", "sta-mars+rgb", "sta-mars+flow",
                      "mars+rgb", "mars+flow", "rgb+flow", "sta-mars+mars+rgb", "sta-mars+mars+flow",
                      "sta-mars+rgb+flow", "mars+rgb+flow", "sta-mars+mars+rgb+flow"]
    assert combinations(["flow", "sta-rgb"]) == [("sta-rgb",), ("flow",), ("sta-rgb", "flow")]


def test_report_files_and_schema(tmp_path):
    files = hand_files(tmp_path)
    out = tmp_path / "out"
    returned = fuse(files, out, FuseConfig(dataset="toy"))
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(returned.to_json()))
    assert set(report) == {"dataset", "protocol", "classes", "fusion", "rows", "best", "notes", "manifest"}
    assert (report["dataset"], report["protocol"], report["classes"]) == ("toy", "mars:16", CLASSES)
    for row in report["rows"]:
        assert {"model", "split", "top1", "top5", "mean_class", "videos"} <= set(row)
        assert isinstance(row["split"], int) or row["split"] == "mean"
        assert all(0.0 <= row[key] <= 100.0 for key in ("top1", "top5", "mean_class"))
    inputs = report["manifest"]["score_files"]
    assert {Path(f["path"]) for f in inputs} == {p.resolve() for p in files}
    for entry in inputs:
        assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
        assert entry["role"] == "test" and entry["videos"] == 4
    assert report["manifest"]["config"]["dataset"] == "toy" and "numpy" in report["manifest"]["versions"]

    best = report["best"]["1"]
    assert best["model"] == "rgb+flow"
    assert best["confusion"] == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert best["per_class"] == {"Archery": 100.0, "Biking": 100.0, "Climbing": 100.0}
    with open(out / "confusion_split1.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0][1:] == CLASSES and [row[0] for row in table[1:]] == CLASSES
    assert [[int(v) for v in row[1:]] for row in table[1:]] == best["confusion"]
    assert (out / "per_class_split1.csv").read_text().splitlines()[1] == "Archery,2,2,100.00"
    markdown = (out / "report.md").read_text()
    assert "| model | split | top-1 | top-5 | mean class | videos |" in markdown
    assert "| mars+rgb+flow | 1 | 100.00 | 100.00 | 100.00 | 4 |" in markdown
    assert sorted(p.name for p in out.iterdir()) == ["confusion_split1.csv", "per_class_split1.csv",
                                                     "report.json", "report.md"]
