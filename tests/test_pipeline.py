"""The staged pipeline on real data: tiny networks really train on a real synthetic store."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_TRAIN, run_cli, tiny_train_toml
from flow.errors import InputError
from pipelines.core.checkpoint import load_checkpoint
from pipelines.stages.evaluate import EvaluateConfig, evaluate
from pipelines.scoring.scores import load_scores
from pipelines.data.splits import load_split
from pipelines.data.dataset import open_stage_data
from pipelines.stages.train import TrainPaths, _load_teacher, train


def test_mars_distillation_leaves_teacher_unchanged(synth_store, flow_teacher, tiny_config, tmp_path):
    before = load_checkpoint(flow_teacher).state_dict
    teacher_bytes = flow_teacher.read_bytes()
    summary = train(tiny_config(stream="mars", alpha=10.0, mse_normalize=True),
                    TrainPaths(store=synth_store.store, out=tmp_path, teacher=flow_teacher))
    data = open_stage_data(synth_store.store, None, 1, 0.1, 1)
    teacher = _load_teacher(flow_teacher, "flow", data, torch.device("cpu"))  # as training holds it
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert flow_teacher.read_bytes() == teacher_bytes
    student = load_checkpoint(summary["last"])
    assert student.stream == "mars" and student.model_kwargs["in_channels"] == 3
    assert all(torch.equal(before[k], load_checkpoint(flow_teacher).state_dict[k]) for k in before)
    rows = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == TINY_TRAIN["epochs"] and '"mse"' in rows[0]


def test_sta_mars_checkpoint_names_stream_and_spec(synth_store, flow_teacher, tiny_config, tmp_path):
    summary = train(tiny_config(stream="mars", sta="layer3", epochs=1),
                    TrainPaths(store=synth_store.store, out=tmp_path, teacher=flow_teacher))
    checkpoint = load_checkpoint(summary["last"])
    assert checkpoint.stream == "sta-mars" and "layer3" in checkpoint.model_kwargs["sta"]
    assert any(".sta." in key for key in checkpoint.state_dict)


def test_mars_refuses_rgb_teacher(synth_store, tiny_config, tmp_path):
    rgb = train(tiny_config(stream="rgb", epochs=1), TrainPaths(store=synth_store.store, out=tmp_path / "rgb"))
    with pytest.raises(InputError, match="flow-stream checkpoint"):
        train(tiny_config(stream="mars"), TrainPaths(store=synth_store.store, out=tmp_path / "m",
                                                     teacher=rgb["best"]))


def test_evaluate_scores_every_test_video(synth_store, flow_teacher, tmp_path):
    out = tmp_path / "flow.npz"
    summary = evaluate(EvaluateConfig(), flow_teacher, synth_store.store, out, progress=False)
    scores = load_scores(out)
    split = load_split(synth_store.splits, 1)
    assert list(scores.video_ids) == [vid for vid, _ in split.test]
    assert list(scores.labels) == [label for _, label in split.test]
    assert scores.stream == "flow" and scores.subset == "test" and scores.protocol == "mars:16f"
    expected = 100.0 * np.mean(scores.logits.argmax(1) == scores.labels)
    assert summary["top1"] == pytest.approx(expected)


def test_evaluate_refuses_other_classes(synth_store, flow_teacher, tmp_path):
    csv = tmp_path / "other.csv"
    videos = sorted(p.relative_to(synth_store.videos).with_suffix("").as_posix()
                    for p in synth_store.videos.rglob("*.avi"))
    three_classes = [v for v in videos if not v.startswith(videos[0].split("/")[0] + "/")]
    csv.write_text("video,subset\n" + "".join(f"{v},{'train' if i % 2 else 'test'}\n"
                                              for i, v in enumerate(three_classes)))
    with pytest.raises(InputError, match="classes"):
        evaluate(EvaluateConfig(), flow_teacher, synth_store.store, tmp_path / "x.npz", splits=csv, progress=False)


def _final_weights(folder):
    return load_checkpoint(folder / "last.pth").state_dict


@pytest.mark.numerics
def test_training_killed_and_resumed_matches_uninterrupted(synth_store, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(tiny_train_toml().replace("epochs = 2", "epochs = 8"))
    args = ["train", "--config", str(config), "--stream", "rgb", "--store", str(synth_store.store)]
    assert run_cli(*args, "--out", str(tmp_path / "whole"), "--no-progress").stderr == ""  # no bar, nothing else

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "cli", *args, "--out", str(killed)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(killed / "last.pth").epoch
    assert 2 <= interrupted_at < 8, "the kill must land mid-run"

    resumed = run_cli(*args, "--out", str(killed))
    assert f"resuming rgb from epoch {interrupted_at}" in resumed.stdout
    whole, again = _final_weights(tmp_path / "whole"), _final_weights(killed)
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert len(metrics.read_text().splitlines()) == 8


@pytest.mark.numerics
def test_a_finished_run_extended_with_more_epochs_equals_a_longer_run(synth_store, tmp_path):
    """plateau continues from last.pth (the same weights as one longer run); onecycle refuses, saying why."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.stages.train import TrainConfig

    schedules = {"plateau": dict(scheduler="plateau", lr_patience=0), "onecycle": dict(scheduler="onecycle")}
    tomls = {name: tmp_path / f"{name}.toml" for name in schedules}
    for name, path in tomls.items():
        path.write_text(tiny_train_toml().replace('scheduler = "none"', "".join(
            f"{key} = {value!r}\n".replace("'", '"') for key, value in schedules[name].items())))

    def train_cli(schedule, out, epochs):
        return run_cli("train", "--config", str(tomls[schedule]), "--stream", "rgb", "--store",
                       str(synth_store.store), "--out", str(tmp_path / out), "--epochs", str(epochs), check=False)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(train_cli, "plateau", "extended", 2)
        for schedule, out, epochs in (("plateau", "whole", 3), ("onecycle", "cycle", 1)):
            config = TrainConfig(**{**TINY_TRAIN, **schedules[schedule], "stream": "rgb", "epochs": epochs})
            train(config, TrainPaths(store=synth_store.store, out=tmp_path / out))
        assert first.result().returncode == 0, first.result().stderr
        shutil.copytree(tmp_path / "whole", tmp_path / "copied")  # best.pth copied over last.pth by hand
        shutil.copy(tmp_path / "copied" / "best.pth", tmp_path / "copied" / "last.pth")
        extended, refused, fewer, copied = pool.map(lambda job: train_cli(*job), [
            ("plateau", "extended", 3), ("onecycle", "cycle", 2), ("plateau", "whole", 2), ("plateau", "copied", 3)])

    assert extended.returncode == 0, extended.stderr
    assert "extending rgb from 2 to 3 epochs" in extended.stdout and "resuming rgb from epoch 2" in extended.stdout
    whole, again = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "extended")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert load_checkpoint(tmp_path / "extended" / "last.pth").epoch == 3
    rates = [[json.loads(line)["lr"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
             for name in ("whole", "extended")]
    assert rates[0] == rates[1] and len(set(rates[0])) > 1  # the plateau scheduler's state was carried over
    manifest = json.loads((tmp_path / "extended" / "manifest.json").read_text())
    assert manifest["config"]["epochs"] == 3
    assert [(e["from_epochs"], e["to_epochs"], e["at_epoch"]) for e in manifest["extended"]] == [(2, 3, 2)]

    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"error: {tmp_path / 'cycle' / 'last.pth'}: was written by a 1-epoch run; scheduler 'onecycle' sets its "
        "learning rates from the total number of epochs, so it cannot be extended to 2 (extendable: plateau, step, "
        "none); use a new --out folder"]
    assert load_checkpoint(tmp_path / "cycle" / "last.pth").epoch == 1
    assert fewer.returncode == 2 and fewer.stderr.splitlines() == [
        f"error: {tmp_path / 'whole' / 'last.pth'}: holds 3 trained epochs, more than the 2 asked for; ask for at "
        "least as many, or use a new --out folder"]
    assert copied.returncode == 2 and copied.stderr.splitlines() == [
        f"error: {tmp_path / 'copied' / 'last.pth'}: holds no optimizer state to resume from"]


def test_run_twice_runs_nothing_the_second_time(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        "[synth]\nclasses = 2\nvideos_per_class = 5\nsize = 32\n\n"
        '[data]\nvideos = "data/videos"\nstreams = ["flow", "rgb", "mars"]\n\n'
        '[extract]\nshort_side = 0\npreset = "cheap"\nworkers = 2\n\n'
        + tiny_train_toml().replace("epochs = 2", "epochs = 1").replace("val_fraction = 0.2", "val_fraction = 0.25"))
    first = run_cli("run", str(config), "--out", str(tmp_path / "out"))
    assert "[run]  train mars (split 1)" in first.stdout and "top-1" in first.stdout.lower()
    report = tmp_path / "out" / "fused" / "report.json"
    assert report.exists()
    stamp = report.stat().st_mtime_ns
    second = run_cli("run", str(config), "--out", str(tmp_path / "out"))
    assert "[run]" not in second.stdout and "ran 0 stage(s)" in second.stdout
    assert report.stat().st_mtime_ns == stamp
    forced = run_cli("run", str(config), "--out", str(tmp_path / "out"), "--force", "fuse")
    assert "[run]  fuse scores" in forced.stdout and "ran 1 stage(s)" in forced.stdout


def test_views_protocol_is_recorded_and_scores_every_video(synth_store, flow_teacher, tmp_path):
    out = tmp_path / "views.npz"
    evaluate(EvaluateConfig(protocol="views:2x3", subset="val"), flow_teacher, synth_store.store, out,
             progress=False)
    scores = load_scores(out)
    assert scores.protocol == "views:2x3:16f" and scores.subset == "val" and len(scores.video_ids) >= 4
    with pytest.raises(InputError, match="views:KxM"):
        evaluate(EvaluateConfig(protocol="views:2x2"), flow_teacher, synth_store.store, out, progress=False)


def test_run_distils_sta_mars_from_the_sta_flow_stream(synth_store, tmp_path):
    from pipelines.stages.run import load_plan, run

    config = tmp_path / "run.toml"
    config.write_text(
        f'[data]\nvideos = "{synth_store.videos}"\nstore = "{synth_store.store}"\n'
        'streams = ["sta-mars", "sta-flow"]\nteacher = "sta-flow"\nsta = "layer3:bn"\n\n'
        '[extract]\nshort_side = 0\npreset = "cheap"\nworkers = 2\n\n'
        + tiny_train_toml().replace("epochs = 2", "epochs = 1"))
    result = run(load_plan(config, tmp_path / "out"), log=lambda message: None, progress=False)
    assert result["ran"][1:3] == ["train sta-flow (split 1)", "train sta-mars (split 1)"]
    manifest = (tmp_path / "out" / "split1" / "train-sta-mars" / "manifest.json").read_text()
    assert str(tmp_path / "out" / "split1" / "train-sta-flow" / "best.pth") in manifest

    config.write_text(config.read_text().replace('teacher = "sta-flow"', 'teacher = "flow"'))
    with pytest.raises(InputError, match="distil from the flow stream"):
        run(load_plan(config, tmp_path / "other"), log=lambda message: None, progress=False)
    assert not (tmp_path / "other" / "split1").exists()
