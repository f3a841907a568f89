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
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_cli
from flow.errors import InputError
from pipelines.data.annotations import read_annotations
from pipelines.scoring.detection_map import evaluate_detections, read_detections

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


def _outside(files, annotations: str):
    """RESULTS plus a top-scored jump detection in a val video (v9) and one in an unannotated test video."""
    path = _results(files, lambda r: r.update({name: [{"label": "jump", "score": 0.95, "segment": [0, 5]}]
                                               for name in ("v9", "video_test_0009")}))
    return [str(path), "--annotations", str(files[annotations]), "--tiou", "0.5", "--json"]


RUNS = {  # commands that succeed, run with the bad-input cases below
    "json": lambda f: [str(f["results"]), "--annotations", str(f["thumos"]), "--tiou", "0.5,0.6", "--json"],
    "table": lambda f: [str(f["results"]), "--annotations", str(f["anet"]), "--tiou", "0.5", "--protocol",
                        "thumos14"],
    "outside anet": lambda f: _outside(f, "anet"),
    "outside thumos": lambda f: _outside(f, "thumos"),
    "overrun": lambda f: _overrun(f),
}


def _overrun(files):
    """A kick in v2 from 45 s to 80 s, past the video's 50 s, and a kick detection at 45-50 s."""
    truth = _edit_json(files, lambda d: d["database"]["v2"]["annotations"].append(
        {"segment": [45.0, 80.0], "label": "kick"}))
    results = _results(files, lambda r: r["v2"].append({"label": "kick", "score": 0.9, "segment": [45, 50]}))
    return [str(results), "--annotations", str(truth), "--tiou", "0.5", "--json"]


def test_cli_json_output(outcomes):
    report = json.loads(outcomes["json"].stdout)
    assert set(report) == {"tiou", "mAP", "per_class"}
    assert report["tiou"] == [0.5, 0.6]
    assert report["mAP"] == pytest.approx([1 / 3, (1 / 3 + 0.5) / 3])
    assert report["per_class"]["jump"] == pytest.approx([0.5, 1 / 3])


def test_cli_table_and_protocol(outcomes):
    result = outcomes["table"]
    assert "mAP" in result.stdout and "44.4" in result.stdout  # (1/3 + 1 + 0) / 3


@pytest.mark.parametrize("fmt, outside", [("anet", ["v9", "video_test_0009"]), ("thumos", ["v3", "v9"])])
def test_result_videos_outside_the_subset_warn_and_count_as_false_positives(outcomes, files, fmt, outside):
    # The JSON lists v3 as a test video and knows v9 and video_test_0009 nowhere in test; the THUMOS'14 folder
    # names neither v3 nor v9, and takes video_test_0009 for a test video without instances (THUMOS'14's names).
    result = outcomes[f"outside {fmt}"]
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert re.fullmatch(rf"warning: \S+\.json: {len(outside)} of 5 videos are not videos of subset 'test' of "
                        rf"{re.escape(str(files[fmt]))} \(e\.g\. '{outside[0]}'\); their detections count as false "
                        rf"positives", line), line
    # jump: the extra detections rank first and are false: precision 0, 0, 1/3, 1/4, 1/5, 1/3 at recall
    # 0, 0, 1/3, 1/3, 1/3, 2/3 -> AP = 1/3 * 1/3 + 1/3 * 1/3 = 2/9.
    assert json.loads(result.stdout)["per_class"]["jump"] == pytest.approx([2 / 9])


def test_segment_past_the_video_is_clipped_with_one_warning(outcomes):
    result = outcomes["overrun"]
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert re.fullmatch(r"warning: \S+\.json: video 'v2', annotation 2: segment 45-80 s ends after the video "
                        r"\(50\.00 s\); clipped to 45-50\.00 s", line), line
    # kick: two instances, 30-40 and the clipped 45-50, which the detection at 45-50 matches: AP = 1/2. Unclipped,
    # its tIoU would be 5/35 and the AP 0.
    assert json.loads(result.stdout)["per_class"]["kick"] == pytest.approx([0.5])


def test_a_clipped_segment_is_said_once_per_process_however_often_it_is_read(files, capsys):
    # ``run`` reads the annotations in several stages of one process: the segment's warning is one line there too.
    truth = _edit_json(files, lambda d: d["database"]["v2"]["annotations"].append(
        {"segment": [45.0, 80.0], "label": "kick"}))
    for _ in range(3):
        assert read_annotations(truth, "test").videos["v2"].segments[-1].end == 50.0
    assert capsys.readouterr().err.count("segment 45-80 s ends after the video") == 1
    said: list[str] = []  # a caller's own warn still hears every reading
    read_annotations(truth, "test", warn=said.append)
    read_annotations(truth, "test", warn=said.append)
    assert len(said) == 2 and "ends after the video" in said[0]


def _thumos_text(files, class_numbers: bool) -> Path:
    """RESULTS as the THUMOS'14 toolkit's text lines, classes by number (detclasslist.txt) or by name."""
    numbers = {name: 10 + i for i, name in enumerate(CLASSES)}
    lines = [f"{video} {d['segment'][0]:.1f} {d['segment'][1]:.1f} "
             f"{numbers.get(d['label'], d['label']) if class_numbers else d['label']} {d['score']}\n"
             for video, found in RESULTS.items() for d in found]
    return _write(files, "".join(lines))


def test_thumos_text_detections_score_as_the_json(files, tmp_path):
    folder = write_thumos_folder(tmp_path / "thumos")
    (folder / "detclasslist.txt").write_text("".join(f"{10 + i} {name}\n" for i, name in enumerate(CLASSES)))
    by_name = run_cli("eval-detection", str(_thumos_text(files, False)), "--annotations", str(files["thumos"]),
                      "--tiou", "0.5,0.6", "--json")
    by_number = run_cli("eval-detection", str(_thumos_text(files, True)), "--annotations", str(folder),
                        "--tiou", "0.5,0.6", "--json")
    as_json = run_cli("eval-detection", str(files["results"]), "--annotations", str(files["thumos"]),
                      "--tiou", "0.5,0.6", "--json")
    assert json.loads(by_name.stdout) == json.loads(by_number.stdout) == json.loads(as_json.stdout)


def test_thumos_text_class_number_without_class_list_is_one_line(files):
    result = run_cli("eval-detection", str(_thumos_text(files, True)), "--annotations", str(files["thumos"]),
                     check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert re.fullmatch(r"error: \S+: line 1: class number 10 needs annotations with a detclasslist\.txt \(or "
                        r"give the class name\)\n", result.stderr), result.stderr


def test_subset_videos_are_the_annotated_ones_and_for_thumos_those_named_after_it(tmp_path):
    truth = {"v1": ("test", 100.0, [("jump", 0, 10)]), "v4": ("test", 50.0, [("Ambiguous", 0, 5)]),
             "v9": ("val", 20.0, [("jump", 0, 5)])}
    store = ["v1", "v4", "v9", "video_test_0003", "test/video_test_0004", "video_testing_0005", "video_val_0001",
             "video_test_0006.avi", "video_test_x", "avideo_test_0007", "other"]
    folder = read_annotations(write_thumos_folder(tmp_path / "gt", truth))
    assert folder.subset_videos(store) == ["test/video_test_0004", "v1", "v4", "video_test_0003",
                                           "video_testing_0005"]
    assert read_annotations(write_thumos_folder(tmp_path / "gt", truth), "val").subset_videos(store) == [
        "v9", "video_val_0001"]
    assert read_annotations(write_activitynet_json(tmp_path / "gt.json", truth)).subset_videos(store) == ["v1", "v4"]


# -- bad annotations and results: one line naming the file, exit 2 (docs/errors.md, "Detection annotations") -
PARALLEL = 3  # subprocesses at a time: each is mostly Python starting up


def _edit_thumos(files, name: str, content: str | bytes) -> Path:
    folder = write_thumos_folder(files["root"] / f"bad_{uuid.uuid4().hex[:8]}")
    (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


def _edit_json(files, edit) -> Path:
    data = json.loads(files["anet"].read_text())
    edit(data)
    return _write(files, json.dumps(data, indent=1))


def _write(files, content: str | bytes) -> Path:
    path = files["root"] / f"bad_{uuid.uuid4().hex[:8]}.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _results(files, edit) -> Path:
    """The results file of a copy of RESULTS that ``edit`` changed in place or replaced (by returning it)."""
    results = json.loads(json.dumps(RESULTS))
    return _write(files, json.dumps({"results": edit(results) or results}))


def _annotations(make):
    return lambda f: (f["results"], make(f))


def _in_results(make):
    return lambda f: (make(f), f["anet"])


def _first_detection(**fields):
    return lambda r: r["v1"][0].update(fields)


@dataclass(frozen=True)
class Case:
    row: str  # its row in docs/errors.md
    make: Callable[[dict], tuple[Path, Path]]  # files -> (results, annotations)
    says: list[str]  # patterns the one line holds, in order (the file first, then the problem)


CASES = {
    "annotation end not after start": Case("annotation end not after start", _annotations(
        lambda f: _edit_thumos(f, "jump_test.txt", "v1 0.0 10.0\nv1 30.0 20.0\n")),
        [r"jump_test\.txt", r"line 2: end 20 s is not after start 30 s"]),
    "annotation of an unknown class": Case("annotation of an unknown class", _annotations(
        lambda f: _edit_json(f, lambda d: d.update(taxonomy=[
            {"nodeName": "jump", "parentName": "Root"}, {"nodeName": "run", "parentName": "Root"},
            {"nodeName": "kick", "parentName": "Root"}]) or d["database"]["v1"]["annotations"].append(
            {"segment": [1.0, 2.0], "label": "swim"}))),
        [r"bad_\w+\.json", r"video 'v1', annotation 4: unknown class 'swim'"]),
    "malformed annotation line": Case("malformed annotation line", _annotations(
        lambda f: _edit_thumos(f, "run_test.txt", "v1 60.0 70.0\nv1 61.5\n")),
        [r"run_test\.txt", r"line 2: expected 'video start end', got 'v1 61\.5'"]),
    "annotation time not a number": Case("annotation time not a number", _annotations(
        lambda f: _edit_thumos(f, "kick_test.txt", "v2 3O.0 40.0\n")),
        [r"kick_test\.txt", r"line 1: '3O\.0' is not a time in seconds"]),
    "THUMOS'14 file not UTF-8": Case("file not UTF-8", _annotations(
        lambda f: _edit_thumos(f, "jump_test.txt", b"v1 0.0 10.0\nv\xe92 0.0 10.0\n")),
        [r"jump_test\.txt", r"line 2: byte 0xe9 is not UTF-8 text"]),
    "annotation JSON not UTF-8": Case("file not UTF-8", _annotations(
        lambda f: _write(f, json.dumps(json.loads(f["anet"].read_text()), indent=1).replace(
            '"v2"', '"v2\udcff"').encode("utf-8", "surrogateescape"))),
        [r"bad_\w+\.json", r"line \d+: byte 0xff is not UTF-8 text"]),
    "results JSON not UTF-8": Case("file not UTF-8", _in_results(
        lambda f: _write(f, b'{"results": {"v1": [{"label": "jump\xff", "score": 1, "segment": [0, 1]}]}}')),
        [r"bad_\w+\.json", r"line 1: byte 0xff is not UTF-8 text"]),
    "annotated video without a subset": Case("annotated video without a subset", _annotations(
        lambda f: _edit_json(f, lambda d: d["database"]["v2"].pop("subset"))),
        [r"bad_\w+\.json", r"video 'v2': 'subset' must name the video's subset, such as 'testing' or "
                           r"'validation' \(it has none\)"]),
    "video twice in the annotation JSON": Case("video listed twice in a JSON", _annotations(
        lambda f: _write(f, '{"database": {"v1": {"subset": "testing", "annotations": []}, '
                            '"v1": {"subset": "testing", "annotations": []}}}')),
        [r"bad_\w+\.json", r"video 'v1' is listed twice in 'database'"]),
    "video twice in the results": Case("video listed twice in a JSON", _in_results(
        lambda f: _write(f, '{"results": {"v1": [{"label": "jump", "score": 0.9, "segment": [0, 10]}], '
                            '"v1": []}}')),
        [r"bad_\w+\.json", r"video 'v1' is listed twice in 'results'"]),
    "key twice in a detection": Case("key repeated in a JSON object", _in_results(
        lambda f: _write(f, '{"results": {"v1": [{"label": "jump", "label": "run", "score": 0.9, '
                            '"segment": [0, 10]}]}}')),
        [r"bad_\w+\.json", r"key 'label' is repeated in one JSON object"]),
    "reversed detection": Case("detection segment reversed", _in_results(
        lambda f: _results(f, _first_detection(segment=[10, 0]))),
        [r"bad_\w+\.json", r"video 'v1', detection 0: segment \[10, 0\] ends before it starts"]),
    "NaN score": Case("detection score not finite", _in_results(
        lambda f: _results(f, _first_detection(score=float("nan")))),
        [r"bad_\w+\.json", r"video 'v1', detection 0: score NaN is not a finite number"]),
    "infinite score": Case("detection score not finite", _in_results(
        lambda f: _results(f, _first_detection(score=float("inf")))),
        [r"bad_\w+\.json", r"video 'v1', detection 0: score Infinity is not a finite number"]),
    "infinite time": Case("detection time not finite", _in_results(
        lambda f: _results(f, _first_detection(segment=[0, float("inf")]))),
        [r"bad_\w+\.json", r"video 'v1', detection 0: segment \[0, Infinity\] holds a time that is not a finite"]),
    "ids with an extension": Case("no result video in the subset", _in_results(
        lambda f: _results(f, lambda r: {f"{video}.avi": found for video, found in r.items()})),
        [r"bad_\w+\.json", r"none of its 3 videos is a video of subset 'test' of \S+gt\.json \(e\.g\. 'v1\.avi'\)"]),
    "malformed detection line": Case("malformed detection line", _in_results(
        lambda f: _write(f, "v1 0.0 10.0 jump 0.9\nv1 20.0 30.0 jump\n")),
        [r"bad_\w+\.json", r"line 2: expected 'video start end class score', got 'v1 20\.0 30\.0 jump'"]),
    "detection time not a number": Case("detection time not a number", _in_results(
        lambda f: _write(f, "v1 0.0 1O.0 jump 0.9\n")),
        [r"bad_\w+\.json", r"line 1: '1O\.0' is not a number"]),
    "malformed detection": Case("malformed detection", _in_results(
        lambda f: _results(f, lambda r: {"v1": [{"label": "jump", "segment": [0, 1]}]})),
        [r"bad_\w+\.json", r"video 'v1', detection 0: expected \{'label', 'score', 'segment': \[start, end\]\}"]),
}


@pytest.fixture(scope="module")
def outcomes(files) -> dict[str, subprocess.CompletedProcess]:
    """eval-detection of every case and run, a few at a time, by name."""
    commands = {name: [str(path) for path in case.make(files)] for name, case in CASES.items()}
    for name, (results, truth) in commands.items():
        commands[name] = [results, "--annotations", truth]
    commands.update({name: make(files) for name, make in RUNS.items()})
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(run_cli, "eval-detection", *args, check=False)
                   for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_detection_input(outcomes, case):
    result = outcomes[case]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and result.stdout == "", result.stderr
    position = 0
    for pattern in CASES[case].says:
        match = re.compile(pattern).search(lines[0], position)
        assert match, f"{pattern!r} not in {lines[0]!r}"
        position = match.end()


def test_every_bad_input_row_is_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    assert [case.row for case in CASES.values() if f"| {case.row} |" not in text] == []
    assert "| annotated video missing from the store |" in text
    assert "| result videos outside the subset |" in text


def test_annotated_video_missing_from_the_store(synth_store, tmp_path):
    from flow.store import FlowStore

    truth = read_annotations(write_thumos_folder(tmp_path / "gt", {"left/left_0001": ("test", 0, [("left", 0, .2)]),
                                                                 "nope/nope_0001": ("test", 0, [("left", 0, .2)])}))
    with FlowStore(synth_store.store) as store, pytest.raises(InputError) as caught:
        truth.check_videos(store)
    assert str(caught.value).startswith(str(tmp_path / "gt" / "left_test.txt") + ": line 2: video 'nope/nope_0001'")


def test_store_length_clips_a_thumos_segment_and_an_ambiguous_only_video_is_fine(synth_store, tmp_path):
    from flow.store import FlowStore

    with FlowStore(synth_store.store) as store:
        video, other = store.video_ids()[:2]
        seconds = store.num_frames(video) / float(store.attrs(video)["fps"])
        truth = read_annotations(write_thumos_folder(tmp_path / "gt", {
            video: ("test", 0, [("left", 0, seconds + 5), ("left", seconds + 1, seconds + 2)]),
            other: ("test", 0, [("Ambiguous", 0, 0.1)])}))
        said: list[str] = []
        truth.check_videos(store, warn=said.append)
    assert len(said) == 2 and all(f"video {video!r}" in line for line in said), said
    assert said[0].endswith(f"clipped to 0-{seconds:.2f} s") and said[1].endswith("left out"), said
    assert [(s.start, s.end) for s in truth.videos[video].segments] == [(0, pytest.approx(seconds))]
    assert truth.videos[other].segments == [] and truth.in_frames(other, 25.0) == []


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
