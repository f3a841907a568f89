"""Detection evaluation on small cases computed by hand, in both annotation formats and both protocols.

The ground truth (seconds), subset test unless said:
  jump: v1 [0, 10], v1 [20, 30], v2 [0, 10]        (and v9 [0, 5] in val, which must not count)
  run:  v1 [60, 70]; Ambiguous v1 [45, 55]
  kick: v2 [30, 40]                                (no predictions at all)
Predictions:
  jump: a v1 [0, 10] .9 (hit), b v1 [0, 10] .8 (duplicate), c v3 [0, 10] .7 (video without ground truth),
        d v2 [0, 5] .6 (tIoU exactly 0.5 with v2 [0, 10])
  run:  z v1 [40, 50] .7 (overlaps Ambiguous), x v1 [60, 70] .5 (hit), y v1 [80, 90] .5 (tie with x, listed after)
  ghost: a class without ground truth, ignored.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_cli
from flow.errors import InputError
from pipelines.detection.annotations import read_annotations
from pipelines.detection.evaluation import evaluate_detections, read_detections

TRUTH = {  # video -> (subset, duration, [(label, start, end)])
    "v1": ("test", 100.0, [("jump", 0, 10), ("jump", 20, 30), ("run", 60, 70), ("Ambiguous", 45, 55)]),
    "v2": ("test", 50.0, [("jump", 0, 10), ("kick", 30, 40)]),
    "v3": ("test", 60.0, []),
    "v9": ("val", 20.0, [("jump", 0, 5)]),
}
CLASSES = ["jump", "kick", "run"]
RESULTS = {
    "v1": [{"label": "jump", "score": 0.9, "segment": [0, 10]}, {"label": "jump", "score": 0.8, "segment": [0, 10]},
           {"label": "run", "score": 0.7, "segment": [40, 50]}, {"label": "run", "score": 0.5, "segment": [60, 70]},
           {"label": "run", "score": 0.5, "segment": [80, 90]}, {"label": "ghost", "score": 0.9, "segment": [0, 1]}],
    "v2": [{"label": "jump", "score": 0.6, "segment": [0, 5]}],
    "v3": [{"label": "jump", "score": 0.7, "segment": [0, 10]}],
}


def write_thumos_folder(folder: Path, truth: dict = TRUTH) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for video, (subset, _, segments) in truth.items():
        for label, start, end in segments:  # two spaces, as some of the official files have
            lines.setdefault(f"{label}_{subset}.txt", []).append(f"{video}  {start:.1f} {end:.1f}\n")
    for name, rows in lines.items():
        (folder / name).write_text("".join(rows))
    return folder


def write_activitynet_json(path: Path, truth: dict = TRUTH) -> Path:
    database = {video: {"subset": {"test": "testing", "val": "validation"}[subset], "duration": duration,
                        "annotations": [{"segment": [s, e], "label": label} for label, s, e in segments]}
                for video, (subset, duration, segments) in truth.items()}
    path.write_text(json.dumps({"version": "1.3", "database": database}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection_eval")
    (root / "results.json").write_text(json.dumps({"version": "VERSION 1.3", "results": RESULTS}))
    return {"thumos": write_thumos_folder(root / "thumos"), "anet": write_activitynet_json(root / "gt.json"),
            "results": root / "results.json", "root": root}


@pytest.mark.parametrize("fmt", ["thumos", "anet"])
def test_both_formats_read_the_same_ground_truth(files, fmt):
    truth = read_annotations(files[fmt], "test")
    assert truth.classes == CLASSES
    assert sorted(truth.videos) in (["v1", "v2"], ["v1", "v2", "v3"])  # v3 has no segment to list in THUMOS files
    assert truth.ground_truth("jump")["v1"].tolist() == [[0, 10], [20, 30]]
    assert "v9" not in truth.videos
    assert truth.ambiguous()["v1"].tolist() == [[45, 55]]


@pytest.mark.parametrize("fmt", ["thumos", "anet"])
def test_activitynet_protocol_by_hand(files, fmt):
    result = evaluate_detections(read_detections(files["results"]), read_annotations(files[fmt]), [0.5, 0.6])
    # jump @0.5: a hit, b duplicate, c no ground truth, d at exactly 0.5 is a hit (>=): precision 1, .5, .33, .5
    # at recall 1/3, 1/3, 1/3, 2/3 -> AP = 1/3 * 1 + 1/3 * .5 = .5; @0.6 d misses -> 1/3.
    assert result.per_class["jump"] == pytest.approx([0.5, 1 / 3])
    # run: z (ambiguous, a plain false positive here), then the tie x, y in file order -> precision 0, .5 -> .5.
    assert result.per_class["run"] == pytest.approx([0.5, 0.5])
    assert result.per_class["kick"] == [0.0, 0.0]  # no predictions
    assert "ghost" not in result.per_class
    assert result.mAP == pytest.approx([1 / 3, (1 / 3 + 0.5) / 3])


def test_tied_scores_keep_the_file_order(files, tmp_path):
    swapped = json.loads(json.dumps(RESULTS))
    v1 = swapped["v1"]
    v1[3], v1[4] = v1[4], v1[3]  # y (false) now listed before x (hit) at the same score
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps({"results": swapped}))
    result = evaluate_detections(read_detections(path), read_annotations(files["anet"]), [0.5])
    assert result.per_class["run"] == pytest.approx([1 / 3])  # precision 0, 0, 1/3 at the hit


@pytest.mark.parametrize("fmt", ["thumos", "anet"])
def test_thumos14_protocol_by_hand(files, fmt):
    result = evaluate_detections(read_detections(files["results"]), read_annotations(files[fmt]), [0.4, 0.5],
                                 protocol="thumos14")
    # jump @0.4: a hit, b and c false, d hit -> (1 + 2/4) / 3 = .5; @0.5 d's tIoU 0.5 is not > 0.5 -> 1/3.
    assert result.per_class["jump"] == pytest.approx([0.5, 1 / 3])
    # run: z touches Ambiguous and matches nothing, so it is dropped: x hit first -> AP 1.
    assert result.per_class["run"] == pytest.approx([1.0, 1.0])
    assert result.per_class["kick"] == [0.0, 0.0]
    assert result.mAP == pytest.approx([0.5, (1 / 3 + 1) / 3])


def test_thumos14_matching_is_driven_by_the_ground_truth(tmp_path):
    # One ground truth [0, 10]; detections p [0, 6] .9 (tIoU .6) and q [0, 10] .5 (tIoU 1). The ground truth takes
    # q (highest overlap), so p is false and AP = (1/2) / 1; ActivityNet lets p take it first: AP 1.
    truth = write_activitynet_json(tmp_path / "gt.json", {"v": ("test", 20.0, [("jump", 0, 10)])})
    (tmp_path / "r.json").write_text(json.dumps({"results": {"v": [
        {"label": "jump", "score": 0.9, "segment": [0, 6]}, {"label": "jump", "score": 0.5, "segment": [0, 10]}]}}))
    predictions, annotations = read_detections(tmp_path / "r.json"), read_annotations(truth)
    assert evaluate_detections(predictions, annotations, [0.5], "thumos14").per_class["jump"] == [0.5]
    assert evaluate_detections(predictions, annotations, [0.5]).per_class["jump"] == [1.0]


def test_cli_json_output(files):
    result = run_cli("eval-detection", str(files["results"]), "--annotations", str(files["thumos"]),
                     "--tiou", "0.5,0.6", "--json")
    report = json.loads(result.stdout)
    assert set(report) == {"tiou", "mAP", "per_class"}
    assert report["tiou"] == [0.5, 0.6]
    assert report["mAP"] == pytest.approx([1 / 3, (1 / 3 + 0.5) / 3])
    assert report["per_class"]["jump"] == pytest.approx([0.5, 1 / 3])


def test_cli_table_and_protocol(files):
    result = run_cli("eval-detection", str(files["results"]), "--annotations", str(files["anet"]),
                     "--tiou", "0.5", "--protocol", "thumos14")
    assert "mAP" in result.stdout and "44.4" in result.stdout  # (1/3 + 1 + 0) / 3


# -- bad annotations: one line naming the file and the line, exit 2 (docs/errors.md, "Detection annotations") ----
def _edit_thumos(files, name: str, text: str) -> Path:
    folder = write_thumos_folder(files["root"] / f"bad_{len(list(files['root'].iterdir()))}")
    (folder / name).write_text(text)
    return folder


def _edit_json(files, edit) -> Path:
    data = json.loads(files["anet"].read_text())
    edit(data)
    path = files["root"] / f"bad_{len(list(files['root'].iterdir()))}.json"
    path.write_text(json.dumps(data))
    return path


BAD_ANNOTATIONS = {  # row name in docs/errors.md -> (make the annotations, what the line says in order)
    "annotation end not after start": (
        lambda f: _edit_thumos(f, "jump_test.txt", "v1 0.0 10.0\nv1 30.0 20.0\n"),
        [r"jump_test\.txt", r"line 2: end 20 s is not after start 30 s"]),
    "annotation beyond the video": (
        lambda f: _edit_json(f, lambda d: d["database"]["v2"]["annotations"].append(
            {"segment": [45.0, 80.0], "label": "kick"})),
        [r"bad_\d+\.json", r"video 'v2', annotation 2: segment 45-80 s ends after the video \(50\.00 s\)"]),
    "annotation of an unknown class": (
        lambda f: _edit_json(f, lambda d: d.update(taxonomy=[
            {"nodeName": "jump", "parentName": "Root"}, {"nodeName": "run", "parentName": "Root"},
            {"nodeName": "kick", "parentName": "Root"}]) or d["database"]["v1"]["annotations"].append(
            {"segment": [1.0, 2.0], "label": "swim"})),
        [r"bad_\d+\.json", r"video 'v1', annotation 4: unknown class 'swim'"]),
    "malformed annotation line": (
        lambda f: _edit_thumos(f, "run_test.txt", "v1 60.0 70.0\nv1 61.5\n"),
        [r"run_test\.txt", r"line 2: expected 'video start end', got 'v1 61\.5'"]),
    "annotation time not a number": (
        lambda f: _edit_thumos(f, "kick_test.txt", "v2 3O.0 40.0\n"),
        [r"kick_test\.txt", r"line 1: '3O\.0' is not a time in seconds"]),
}


@pytest.mark.parametrize("row", list(BAD_ANNOTATIONS))
def test_bad_annotation_row(files, row):
    make, says = BAD_ANNOTATIONS[row]
    result = run_cli("eval-detection", str(files["results"]), "--annotations", str(make(files)), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and result.stdout == ""
    position = 0
    for pattern in says:
        match = re.compile(pattern).search(lines[0], position)
        assert match, f"{pattern!r} not in {lines[0]!r}"
        position = match.end()


def test_bad_detections_file_is_one_line(files, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"results": {"v1": [{"label": "jump", "segment": [0, 1]}]}}))
    result = run_cli("eval-detection", str(path), "--annotations", str(files["anet"]), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "video 'v1', detection 0: expected" in result.stderr


def test_every_bad_annotation_row_is_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    assert [row for row in BAD_ANNOTATIONS if f"| {row} |" not in text] == []
    assert "| annotated video missing from the store |" in text


def test_annotated_video_missing_from_the_store(synth_store, tmp_path):
    from flow.store import FlowStore

    truth = read_annotations(write_thumos_folder(tmp_path / "gt", {"left/left_0001": ("test", 0, [("left", 0, .2)]),
                                                                 "nope/nope_0001": ("test", 0, [("left", 0, .2)])}))
    with FlowStore(synth_store.store) as store, pytest.raises(InputError) as caught:
        truth.check_videos(store)
    assert str(caught.value).startswith(str(tmp_path / "gt" / "left_test.txt") + ": line 2: video 'nope/nope_0001'")


def test_detection_commands_have_help():
    top = run_cli("--help").stdout
    for command in ("eval-detection", "train-detector", "detect"):
        assert command in top and "Usage:" in run_cli(command, "--help").stdout
    assert "--untrimmed" in run_cli("synth", "--help").stdout and "--task" in run_cli("demo", "--help").stdout


def test_unknown_detection_config_key_is_one_line(files, tmp_path):
    config = tmp_path / "x.toml"
    config.write_text("[detection.train]\nwindow_length = [16]\n")
    result = run_cli("train-detector", "--store", str(tmp_path), "--annotations", str(files["anet"]), "--out",
                     str(tmp_path / "out"), "--config", str(config), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "x.toml: [detection.train] unknown key 'window_length'" in result.stderr
