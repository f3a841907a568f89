"""``mars-sta run`` with a [detection] table: cached detection stages (a mars stream with its flow teacher, R-C3D
heads-only on the S-CNN networks or end to end), the table checked whole before anything runs, and the report's
detection section."""
from __future__ import annotations

import json

import pytest

import torch

from conftest import run_cli
from flow.errors import InputError
from pipelines.core.checkpoint import load_checkpoint
from pipelines.stages.run import load_plan

CONFIG = """
[detection]
models = ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]
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
drop_background = true
length_prior = true
nms_below_tiou = 0.1
device = "cpu"

[detection.rc3d]
mode = "heads"
stride = 4
buffer = 16
anchor_frames = [2, 4]
proposal_hidden = 8
hidden = 16
epochs = 1
device = "cpu"

[detection.rc3d_detect]
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
    assert "[run]  cache the backbone features of sta-r-c3d" in first.stdout
    assert "[run]  train detector sta-r-c3d (heads, rgb)" in first.stdout  # on the mars S-CNN's RGB network
    report = json.loads((root / "out" / "detection" / "report.json").read_text())
    assert [(row["model"], row["stream"]) for row in report["rows"]] == [
        ("s-cnn", "mars"), ("sta-s-cnn", "sta-mars"), ("r-c3d", "rgb"), ("sta-r-c3d", "sta-rgb")]
    assert report["tiou"] == [0.1, 0.5] and all(len(row["mAP"]) == 2 for row in report["rows"])
    assert set(report["rows"][0]["pr"]) <= {"left", "right"} and report["pr_tiou"] == 0.5
    timeline = report["timelines"][0]
    assert timeline["video"] == "video_test_0001" and timeline["truth"]
    assert list(timeline["sta"]) == ["sta-s-cnn"] and len(timeline["sta"]["sta-s-cnn"]) > 40
    again = run_cli("run", str(root / "run.toml"), "--out", str(root / "out"))
    assert "[run]" not in again.stdout and "ran 0 stage(s), skipped 14" in again.stdout
    forced = run_cli("run", str(root / "run.toml"), "--out", str(root / "out"), "--from", "eval-detection")
    assert "ran 1 stage(s), skipped 13" in forced.stdout
    for model in ("r-c3d", "sta-r-c3d"):  # the report's mAP is the one eval-detection computes from the file
        scored = run_cli("eval-detection", str(root / "out" / "detection" / model / "detections.json"),
                         "--annotations", str(root / "data" / "annotations.json"), "--subset", "test",
                         "--tiou", "0.1,0.5", "--json")
        row = next(row for row in report["rows"] if row["model"] == model)
        assert json.loads(scored.stdout)["mAP"] == pytest.approx(row["mAP"], abs=1e-4)
    for model in ("s-cnn", "sta-s-cnn"):  # S-CNN: each tIoU's mAP is eval-detection's on that tIoU's own set
        folder = root / "out" / "detection" / model
        assert all((folder / f"{n}.pth").is_file() for n in ("proposal", "classification", "localization"))
        row = next(row for row in report["rows"] if row["model"] == model)
        for index, tiou in enumerate((0.1, 0.5)):
            scored = run_cli("eval-detection", str(folder / f"detections.tiou-{tiou:g}.json"), "--annotations",
                             str(root / "data" / "annotations.json"), "--subset", "test", "--tiou", str(tiou),
                             "--json")
            assert json.loads(scored.stdout)["mAP"][0] == pytest.approx(row["mAP"][index], abs=1e-4)
    shared = [load_checkpoint(root / "out" / "detection" / m / "classification.pth") for m in ("s-cnn", "sta-s-cnn")]
    assert all(torch.equal(shared[0].state_dict[k], shared[1].state_dict[k]) for k in shared[0].state_dict)


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
    (('models = ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]', 'models = ["s-cnn", "r-cnn"]'),
     "[detection] models ['s-cnn', 'r-cnn']: give distinct names among s-cnn, sta-s-cnn, r-c3d, sta-r-c3d"),
    (('models = ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]', 'models = ["s-cnn", "sta-r-c3d"]'),
     "[detection.rc3d] mode 'heads' without pretrained reads the backbone of sta-s-cnn: add sta-s-cnn to "
     "[detection] models or give pretrained"),
    (('mode = "heads"', 'mode = "heads"\npretrained = "nowhere.pth"'),
     "[detection.rc3d] pretrained: "),
    (("anchor_frames = [2, 4]", "anchor_frames = []"), "[detection.rc3d] anchor_frames"),
    (('mode = "heads"', 'mode = "heads"\nlayer = "layr3"'),
     "[detection.rc3d] layer 'layr3': expected pool or one of layer1, layer2, layer3"),
    (('stream = "mars"', 'stream = "mars"\narch = "tiny_resnt"'), "[detection.train] unknown architecture"),
    (('sta = "layer3"', ''), "[detection.train] sta: name where STA goes (e.g. 'layer3') for sta-s-cnn"),
    (("[detection.detect]", "[detection.detector]"), "unknown table [detection.detector] (known: [detection.synth]"),
    (("tiou = [0.1, 0.5]", "tiou = [0, 0.5]"), "[detection] tiou [0, 0.5]: thresholds must lie in (0, 1]"),
    (("tiou = [0.1, 0.5]", "tiou = [[0.1], 0.5]"), "[detection] 'tiou' must hold float or int items, got list [0.1]"),
    (("[detection.synth]", "[synth]"), "[synth] writes the trimmed recognition dataset"),
    (("epochs = 1", 'epochs = 1\noptimizer = "adam"'),
     "[detection.train] optimizer 'adam': expected one of adamw, sgd"),
    (("epochs = 1", "epochs = 1\nlr_gamma = 0"), "[detection.train] lr_gamma must be greater than 0, got 0"),
    (("nms_below_tiou = 0.1", "nms_below_tiou = 1.5"),
     "[detection.detect] proposal_threshold, nms_threshold and nms_below_tiou must be in [0, 1]"),
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


def test_rc3d_rows_end_to_end_without_s_cnn(tmp_path):
    config = tmp_path / "run.toml"
    end_to_end = (CONFIG.replace('models = ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]', 'models = ["r-c3d", '
                                 '"sta-r-c3d"]').replace('mode = "heads"', 'mode = "end-to-end"\nsize = 24')
                  .replace('stream = "mars"', 'stream = "flow"'))
    config.write_text(end_to_end.replace('sta = "layer3"', ''))
    with pytest.raises(InputError, match=r"\[detection.rc3d\] sta: name where STA goes"):
        load_plan(config, tmp_path / "out")
    config.write_text(end_to_end)
    result = run_cli("run", str(config), "--out", str(tmp_path / "out"))
    assert "train detector sta-r-c3d (end-to-end, flow)" in result.stdout and "features" not in result.stdout
    assert "teacher" not in result.stdout and "ran 7 stage(s)" in result.stdout
    report = json.loads((tmp_path / "out" / "detection" / "report.json").read_text())
    assert [(row["model"], row["stream"]) for row in report["rows"]] == [("r-c3d", "flow"), ("sta-r-c3d", "sta-flow")]
    assert not (tmp_path / "out" / "detection" / "features").exists()


def test_heads_only_backbone_from_a_checkpoint_sets_input_and_sta_by_it(run_dir, tmp_path):
    root, _ = run_dir
    backbone = root / "out" / "detection" / "s-cnn" / "localization.pth"  # a mars detector: RGB input, no STA
    config = tmp_path / "run.toml"
    edited = CONFIG.replace('mode = "heads"', f'mode = "heads"\npretrained = "{backbone}"')
    config.write_text(edited.replace('models = ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]', 'models = ["r-c3d"]'))
    planned = load_plan(config, tmp_path / "out").detection.rc3d["r-c3d"]
    assert (planned.pretrained, planned.stream, planned.sta, planned.size) == (str(backbone), "rgb", None, 24)
    config.write_text(edited.replace('models = ["s-cnn", "sta-s-cnn", "r-c3d", "sta-r-c3d"]', 'models = ["sta-r-c3d"]'))
    result = run_cli("run", str(config), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 2 and result.stderr == (
        f"error: {config}: [detection.rc3d] pretrained: {backbone} has no STA, so heads-only it makes r-c3d, "
        "not sta-r-c3d\n")
