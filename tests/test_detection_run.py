"""``mars-sta run`` with a [detection] table: cached detection stages (a mars stream with its flow teacher), the
table checked whole before anything runs, and the report's detection section."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from flow.errors import InputError
from pipelines.stages.run import load_plan

CONFIG = """
[detection]
models = ["s-cnn", "sta-s-cnn"]
tiou = [0.1, 0.5]
timeline_videos = 1

[detection.synth]
classes = 2
val_videos = 2
test_videos = 1
frames = [40, 48]
action_frames = [8, 14]
idle_frames = [0, 2]
instances = [1, 2]
size = 24
seed = 2

[extract]
short_side = 0
preset = "cheap"
workers = 1

[detection.train]
stream = "mars"
alpha = 10.0
sta = "layer3"
frames = 4
size = 24
window_lengths = [8, 16]
proposal_positive = 0.5
epochs = 1
batch_size = 8
device = "cpu"

[detection.detect]
proposal_threshold = 0.0
device = "cpu"
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection-run")
    (root / "run.toml").write_text(CONFIG)
    first = run_cli("run", str(root / "run.toml"), "--out", str(root / "out"))
    return root, first


def test_run_trains_detects_and_evaluates_then_skips_everything_unchanged(run_dir):
    root, first = run_dir
    assert "[run]  train detector teacher-flow (flow)" in first.stdout
    assert "[run]  train detector sta-s-cnn (mars)" in first.stdout and "fuse" not in first.stdout
    report = json.loads((root / "out" / "detection" / "report.json").read_text())
    assert [(row["model"], row["stream"]) for row in report["rows"]] == [("s-cnn", "mars"), ("sta-s-cnn", "sta-mars")]
    assert report["tiou"] == [0.1, 0.5] and all(len(row["mAP"]) == 2 for row in report["rows"])
    assert set(report["rows"][0]["pr"]) <= {"left", "right"} and report["pr_tiou"] == 0.5
    timeline = report["timelines"][0]
    assert timeline["video"] == "video_test_0001" and timeline["truth"]
    assert list(timeline["sta"]) == ["sta-s-cnn"] and len(timeline["sta"]["sta-s-cnn"]) > 40
    again = run_cli("run", str(root / "run.toml"), "--out", str(root / "out"))
    assert "[run]" not in again.stdout and "ran 0 stage(s), skipped 8" in again.stdout
    forced = run_cli("run", str(root / "run.toml"), "--out", str(root / "out"), "--from", "eval-detection")
    assert "ran 1 stage(s), skipped 7" in forced.stdout


def test_report_of_a_detection_run_has_the_detection_section(run_dir):
    pytest.importorskip("matplotlib")
    root, _ = run_dir
    run_cli("report", str(root / "out"))
    page = (root / "out" / "report.html").read_text()
    assert "Temporal action detection" in page and "Results" not in page
    assert "<td>sta-s-cnn (sta-mars)</td>" in page and page.count("data:image/png;base64") == 2
    assert (root / "out" / "report_files" / "detection_timelines.png").is_file()


@pytest.mark.parametrize("edit, problem", [
    (("epochs = 1", "epochs = 'one'"), "[detection.train] 'epochs' must be int, got str 'one'"),
    (('models = ["s-cnn", "sta-s-cnn"]', 'models = ["s-cnn", "r-cnn"]'),
     "[detection] models ['s-cnn', 'r-cnn']: give distinct names among s-cnn, sta-s-cnn"),
    (('sta = "layer3"', ''), "[detection.train] sta: name where STA goes (e.g. 'layer3') for sta-s-cnn"),
    (("[detection.detect]", "[detection.detector]"), "unknown table [detection.detector] (known: [detection.synth]"),
    (("tiou = [0.1, 0.5]", "tiou = [0, 0.5]"), "[detection] tiou [0, 0.5]: thresholds must lie in (0, 1]"),
    (("[detection.synth]", "[synth]"), "[synth] writes the trimmed recognition dataset"),
])
def test_detection_table_is_checked_whole_before_any_stage(tmp_path, edit, problem):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.replace(*edit))
    with pytest.raises(InputError) as raised:
        load_plan(config, tmp_path / "out")
    assert str(raised.value).startswith(f"{config}: ") and problem in raised.value.problem


def test_missing_annotations_stop_the_run_before_it_starts(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("\n\n".join(part for part in CONFIG.split("\n\n") if not part.startswith("[detection.synth]")))
    result = run_cli("run", str(config), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{config}: [detection] videos: {tmp_path / 'data' / 'videos'} not found" in result.stderr
    assert not (tmp_path / "out" / "stages").exists()
