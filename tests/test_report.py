"""The HTML report of a real (tiny) pipeline run, the attention command, and their behaviour without matplotlib."""
from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import REPO, run_cli, tiny_train_toml
from flow.errors import InputError
from pipelines.inference.attention import upsample_weights
from pipelines.report.flow_colors import color_wheel, flow_to_rgb
from pipelines.report.fused_report import FusedReport
from pipelines.report.run_folder import open_run_folder, read_metrics
from pipelines.stages.stage_marker import StageMarker

INSTALL = "pip install 'mars-sta[report]'"
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason=f"matplotlib is not installed ({INSTALL})")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> SimpleNamespace:
    """Flow and STA-MARS, one epoch each, on 2 classes; 8-frame clips so every 16-pair test video has 2 clips."""
    root = tmp_path_factory.mktemp("report_run")
    config = root / "run.toml"
    config.write_text(
        "[synth]\nclasses = 2\nvideos_per_class = 5\nsize = 32\n\n"
        '[data]\nvideos = "data/videos"\nstreams = ["flow", "sta-mars"]\nsta = "layer3"\n\n'
        '[extract]\nshort_side = 0\npreset = "cheap"\nworkers = 2\n\n'
        + tiny_train_toml().replace("epochs = 2", "epochs = 1").replace("frames = 16", "frames = 8")
        .replace("val_fraction = 0.2", "val_fraction = 0.25"))
    out = root / "run"
    run_cli("run", str(config), "--out", str(out))
    return SimpleNamespace(config=config, out=out, store=out / "store",
                           sta=out / "split1" / "train-sta-mars" / "best.pth",
                           flow=out / "split1" / "train-flow" / "best.pth")


@pytest.fixture(scope="module")
def report(tiny_run) -> SimpleNamespace:
    result = run_cli("report", str(tiny_run.out))
    html_path = tiny_run.out / "report.html"
    return SimpleNamespace(stdout=result.stdout, html=html_path.read_text(), path=html_path,
                           files=tiny_run.out / "report_files")


def _image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable PNG"
    return image


@needs_matplotlib
def test_report_writes_and_embeds_every_picture(report):
    assert report.stdout.strip().endswith(f"report: {report.path}")
    expected = {"confusion_split1.png", "per_class_split1.png", "curves_split1_flow.png",
                "curves_split1_sta-mars.png", "flow_sample.png"}
    expected |= {f"attention{n}_{kind}.png" for n in (1, 2, 3) for kind in ("overlay", "frame_weights",
                                                                            "channel_frame")}
    assert {p.name for p in report.files.glob("*.png")} == expected
    for name in expected:
        image = _image(report.files / name)
        assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 150, (name, image.shape)
        assert image[..., :3].std() > 5, f"{name} is blank"
        encoded = base64.b64encode((report.files / name).read_bytes()).decode()
        assert f'src="data:image/png;base64,{encoded}"' in report.html, f"{name} is not embedded"
        assert f'data-file="report_files/{name}"' in report.html
    assert _image(report.files / "curves_split1_sta-mars.png").shape[:2] == (300, 1200)


@needs_matplotlib
def test_report_is_self_contained_and_holds_the_top1_table(report, tiny_run):
    assert re.findall(r'(?:src|href)="(?!data:|#)', report.html) == []
    assert "<link" not in report.html and "<script" not in report.html
    fused = json.loads((tiny_run.out / "fused" / "report.json").read_text())
    table = report.html.split("Top-1 accuracy (%)")[1].split("</table>")[0]
    for row in (r for r in fused["rows"] if r["split"] == 1):
        assert re.search(rf"<td>{re.escape(row['model'])}</td><td>{row['top1']:.2f}</td>", table), row["model"]
    for words in ("STA attention", "Optical flow", "Parameters and compute", "tiny_resnet + sta layer3",
                  "layer3.0.sta", "Preprocessing", "tvl1.nscales"):
        assert words in report.html


@needs_matplotlib
def test_report_attention_weights_cover_every_test_clip(report):
    weights = json.loads((report.files / "attention1_attention.json").read_text())
    assert weights["stream"] == "sta-mars" and len(weights["clips"]) == 2  # 16 flow pairs / 8-frame clips
    assert [clip["frames"] for clip in weights["clips"]] == [list(range(8)), list(range(8, 16))]
    module = weights["modules"][0]
    gate = np.array(module["weights"])
    assert gate.shape == (2, *module["shape"]) and module["shape"][1] == 8
    assert np.all((gate > 0) & (gate < 1))
    # the feature map keeps all 8 frames, so a frame's weight is exactly W's mean over channels
    assert np.allclose([clip["frame_weights"] for clip in weights["clips"]], gate.mean(axis=1), atol=1e-5)


@needs_matplotlib
def test_attention_command_matches_the_evaluation(tiny_run, tmp_path):
    scores = np.load(tiny_run.out / "split1" / "scores" / "sta-mars-test.npz")
    video = str(scores["video_ids"][0])
    result = run_cli("attention", "--checkpoint", str(tiny_run.sta), "--store", str(tiny_run.store),
                     "--video", video, "--out", str(tmp_path / "att"), "--window", "2:5")
    assert result.stdout.startswith(f"{video}: predicted ")
    assert re.search(r"^window 2:5: channel-mean weight inside 0\.\d{3} \(uniform 0\.\d{3}\); channels favouring it "
                     r"[01]\.\d{3}; mean \|W_in - W_out\| 0\.\d{3} \(\d+ clips\)$", result.stdout, re.M), result.stdout
    for name in ("overlay.png", "frame_weights.png", "channel_frame.png", "window_contrast.png"):
        assert _image(tmp_path / "att" / name)[..., :3].std() > 5
    weights = json.loads((tmp_path / "att" / "attention.json").read_text())
    assert weights["window"] == [2, 5] and all(0 < module["window_selection"]["uniform_share"] < 1
                                               for module in weights["modules"])
    classes = [str(c) for c in scores["classes"]]
    assert weights["video"] == video
    assert weights["predicted"] == classes[int(np.argmax(scores["logits"][0]))]  # same clips, same average


@needs_matplotlib
def test_report_gives_each_videos_window_selection_where_the_data_records_windows(tiny_run, tmp_path):
    data = tiny_run.out.parent / "data"
    saved = {name: (data / name).read_text() for name in ("synth.json", "clips.csv")}
    info = json.loads(saved["synth.json"])
    info["config"]["motion_window"] = 5
    rows = saved["clips.csv"].splitlines()
    header = rows[0].split(",")
    start, stop = header.index("window_start"), header.index("window_stop")
    edited = [rows[0]]
    for row in rows[1:]:
        cells = row.split(",")
        cells[start], cells[stop] = "4", "8"  # only clip 1 (frames 0-7) has frames on both sides of it
        edited.append(",".join(cells))
    try:
        (data / "synth.json").write_text(json.dumps(info))
        (data / "clips.csv").write_text("\n".join(edited) + "\n")
        run_cli("report", str(tiny_run.out), "--out", str(tmp_path / "windowed.html"), "--videos", "1")
    finally:
        for name, text in saved.items():
            (data / name).write_text(text)
    html = (tmp_path / "windowed.html").read_text()
    assert re.search(r"window 4:8: channel-mean weight inside 0\.\d{3} \(uniform 0\.\d{3}\); channels favouring it "
                     r"[01]\.\d{3}; mean \|W_in - W_out\| 0\.\d{3} \(1 clips\)", html), html[:2000]
    weights = json.loads((tmp_path / "windowed_files" / "attention1_attention.json").read_text())
    assert weights["window"] == [4, 8] and weights["modules"][0]["window_selection"]["clips"] == 1
    assert "W_in − W_out per channel and clip" in html
    assert _image(tmp_path / "windowed_files" / "attention1_window_contrast.png")[..., :3].std() > 5


def test_window_selection_sees_channels_that_the_channel_mean_hides():
    from pipelines.inference.attention import ModuleWeights, VideoAttention, window_selection

    inside = np.arange(8) < 3  # frames 0, 1, 2 of an 8-frame clip; the gate keeps all 8 frames
    gate = np.stack([np.where(inside, 0.9, 0.1), np.where(inside, 0.1, 0.9)])[None]  # (1 clip, 2 channels, 8)
    attention = VideoAttention(video_id="v", checkpoint="c", stream="sta-rgb", arch="tiny", sta="layer4", classes=["a"],
                               windows=[np.arange(8)], frames=np.zeros((1, 8, 4, 4, 3), np.uint8),
                               modules=[ModuleWeights("layer4.sta", gate)], probabilities=np.ones(1))
    found = window_selection(attention, 0, 3)
    # the two channels cancel in the mean (0.5 everywhere: the uniform share 3/8) yet each selects strongly
    assert found.channel_mean_share == pytest.approx(3 / 8) and found.uniform_share == pytest.approx(3 / 8)
    assert found.channels_favouring_window == 0.5 and found.mean_abs_contrast == pytest.approx(0.8)
    assert window_selection(attention, 0, 8) is None and found.clips == 1


def test_attention_window_must_be_start_before_stop(tmp_path):
    result = run_cli("attention", "--checkpoint", "x.pth", "--store", "s", "--video", "v", "--out",
                     str(tmp_path / "att"), "--window", "5:2", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--window" in result.stderr, result.stderr


@needs_matplotlib
def test_attention_needs_a_checkpoint_with_sta(tiny_run, tmp_path):
    result = run_cli("attention", "--checkpoint", str(tiny_run.flow), "--store", str(tiny_run.store),
                     "--video", "anything", "--out", str(tmp_path / "att"), check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert str(tiny_run.flow) in lines[0] and "has no STA module" in lines[0]
    assert not (tmp_path / "att").exists()


def test_stage_markers_and_the_fused_report_read_back_through_their_types(tiny_run):
    folder = tiny_run.out / "stages"
    markers = {path.name: StageMarker.read(path) for path in folder.glob("*.json") if path.name != "stores.json"}
    assert sorted(marker.stage for marker in markers.values()) == ["evaluate", "evaluate", "extract", "fuse",
                                                                  "synth", "train-flow", "train-sta-mars"]
    for name, marker in markers.items():
        assert dataclasses.asdict(marker) == json.loads((folder / name).read_text())  # nothing dropped or added
    path = tiny_run.out / "fused" / "report.json"
    written = json.loads(path.read_text())
    report = FusedReport.from_json(written, path)
    assert report.to_json() == written
    assert FusedReport.from_json(markers["fuse-scores.json"].summary, folder / "fuse-scores.json") == report
    assert [(row.model, row.split) for row in report.rows] == [("sta-mars", 1), ("flow", 1), ("sta-mars+flow", 1),
                                                               ("sta-mars", "mean"), ("flow", "mean"),
                                                               ("sta-mars+flow", "mean")]
    assert sorted((f.stream, f.role) for f in report.score_files) == [("flow", "test"), ("sta-mars", "test")]
    assert report.fusion.method == "equal" and report.fusion.learned_on is None and list(report.best) == ["1"]


@needs_matplotlib
def test_report_refuses_a_damaged_fused_report_in_one_line(tiny_run, tmp_path):
    content = json.loads((tiny_run.out / "fused" / "report.json").read_text())
    del content["rows"][0]["top1"]
    damaged = tmp_path / "fused" / "report.json"
    damaged.parent.mkdir()
    damaged.write_text(json.dumps(content))
    result = run_cli("report", str(tmp_path), check=False)
    assert result.returncode == 2
    assert result.stderr == f"error: {damaged}: is not a fusion report: rows[0].top1 is missing\n"
    assert json.loads(damaged.read_text()) == content and sorted(tmp_path.rglob("*")) == [damaged.parent, damaged]


def test_run_refuses_a_damaged_stage_marker_in_one_line(tiny_run, tmp_path):
    marker = tmp_path / "out" / "stages" / "generate-the-synthetic-dataset.json"
    marker.parent.mkdir(parents=True)
    marker.write_text('{"stage": "synth", "key": ')
    synth = (tiny_run.config.parent / "data" / "synth.json").read_bytes()
    result = run_cli("run", str(tiny_run.config), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert re.fullmatch(rf"error: {re.escape(str(marker))}: stage marker is not valid JSON \(.*\); delete it to "
                        r"rerun the stage\n", result.stderr), result.stderr
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "out", marker.parent, marker]
    assert (tiny_run.config.parent / "data" / "synth.json").read_bytes() == synth


@needs_matplotlib
def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    result = run_cli("report", str(tmp_path), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path}: holds neither fused/report.json nor detection/report.json: "
                                     "not a finished `mars-sta run` or demo folder")


def test_without_matplotlib_the_commands_say_how_to_install_it(tiny_run, tmp_path):
    hidden = tmp_path / "site"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(REPO)])}
    commands = [["report", str(tiny_run.out), "--out", str(tmp_path / "r.html")],
                ["attention", "--checkpoint", str(tiny_run.sta), "--store", str(tiny_run.store), "--video", "x",
                 "--out", str(tmp_path / "att")]]
    for args in commands:
        result = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env,
                                cwd=REPO, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and INSTALL in result.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "att").exists()


def test_flow_colours_follow_the_hsv_wheel():
    flow = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.5, 0.0]]], np.float32)
    rgb = flow_to_rgb(flow, max_magnitude=1.0)[0]
    assert rgb[0].tolist() == [255, 0, 0]  # rightwards: red
    assert rgb[1].tolist() == [0, 255, 255]  # leftwards: cyan, the opposite hue
    assert rgb[2].tolist() == [0, 0, 0]  # still: black
    assert rgb[3].tolist() == [128, 0, 0]  # half the magnitude: half the brightness
    wheel = color_wheel(33)
    assert wheel[16, 32].tolist() == [255, 0, 0] and wheel[0, 0].tolist() == [255, 255, 255]
    assert wheel[32, 16][1] > wheel[32, 16][2]  # downwards (y grows): hue 90°, green-yellow


def test_upsampled_weights_follow_frame_centres():
    assert np.allclose(upsample_weights(np.array([0.2, 0.4, 0.6]), 3), [0.2, 0.4, 0.6])
    assert np.allclose(upsample_weights(np.array([0.7]), 4), 0.7)
    assert np.allclose(upsample_weights(np.array([0.0, 1.0]), 4), [0.0, 0.25, 0.75, 1.0])


def test_run_folder_errors_name_the_file(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "loss": 1.0}\n{"epoch": 2, "loss"\n')
    with pytest.raises(InputError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        read_metrics(metrics)
    with pytest.raises(InputError, match="no such run folder"):
        open_run_folder(tmp_path / "missing")
