"""The shipped configs: every table builds a valid stage config, and the STA recipes are the authors' 64-frame ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from mars_sta.profile import attention_time_steps
from pipelines.stages.run import _train_config, load_plan

# thumos14.toml names the user's data, which a plan checks exists: test_thumos14_recipe builds it on stand-ins.
CONFIGS = sorted(path for path in (REPO / "configs").glob("*.toml") if path.name != "thumos14.toml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_stream_of_every_config_builds(path: Path, tmp_path):
    plan = load_plan(path, tmp_path)
    for stream in plan.data.streams:
        config, _ = _train_config(plan, stream, 1)
        assert config.stream == stream.removeprefix("sta-") and bool(config.sta) == stream.startswith("sta-")


@pytest.mark.parametrize("name", ["ucf101.toml", "hmdb51.toml"])
def test_sta_recipes_follow_the_authors_and_give_attention_time_to_weigh(name, tmp_path):
    plan = load_plan(REPO / "configs" / name, tmp_path)
    assert plan.data.teacher == "sta-flow" and set(plan.data.streams) == {"sta-flow", "sta-rgb", "sta-mars"}
    mars, _ = _train_config(plan, "sta-mars", 1)
    assert (mars.sta, mars.frames, mars.batch_size, mars.lr, mars.alpha, mars.attention_lr_mult) == \
        ("layer4:bn:init=authors", 64, 32, 1e-4, 50.0, 10.0)
    assert mars.finetune_from == "all"  # their model.py trains every layer (its ft_begin_index call is commented out)
    steps = attention_time_steps(mars.arch, sta=mars.sta, frames=mars.frames, size=mars.size)
    assert set(steps.values()) == {4}


def test_thumos14_recipe_is_the_papers_scnn_with_sta_in_the_localization_network(tmp_path):
    text = (REPO / "configs" / "thumos14.toml").read_text()
    for folder in ("videos", "annotations"):
        (tmp_path / folder).mkdir()
        text = text.replace(f"/data/thumos14/{folder}", str(tmp_path / folder))
    (tmp_path / "backbone.pth").write_bytes(b"")  # R-C3D end to end: a file where the checkpoint will be
    text = text.replace("/models/RGB_Kinetics_16f.pth", str(tmp_path / "backbone.pth"))
    text = text.replace("/models/c3d_sports1M.pth", str(tmp_path / "backbone.pth"))
    (tmp_path / "thumos14.toml").write_text(text)
    plan = load_plan(tmp_path / "thumos14.toml", tmp_path / "out")
    detection = plan.detection
    assert not plan.recognition and detection.config.protocol == "thumos14" and detection.extract.fps == 25
    assert detection.config.tiou == (0.1, 0.2, 0.3, 0.4, 0.5) and list(detection.train) == ["s-cnn", "sta-s-cnn"]
    assert detection.detect.parent_classes == detection.rc3d_detect.parent_classes == {"CliffDiving": "Diving"}
    plain, sta = detection.train["s-cnn"], detection.train["sta-s-cnn"]
    assert plain.sta is None and sta.sta == "layer4:bn" and sta.subset == "val"
    assert (sta.window_lengths, sta.window_overlap, sta.frames) == ((16, 32, 64, 128, 256, 512), 0.75, 16)
    assert (sta.proposal_positive, sta.localization_positive, sta.overlap_alpha) == (0.7, 0.5, 0.25)
    assert (sta.optimizer, sta.momentum, sta.lr, sta.weight_decay, sta.lr_gamma) == ("sgd", 0.9, 1e-3, 5e-5, 0.5)
    assert sta.lr_step * 4 == sta.epochs  # solver_r2.prototxt: the rate halves after each quarter of the training
    found = detection.detect  # eval_scnn_thumos14.m
    assert (found.proposal_threshold, found.drop_background, found.length_prior) == (0.7, True, True)
    assert found.nms_sets() == {0.1: 0.0, 0.2: 0.1, 0.3: 0.2, 0.4: 0.3, 0.5: 0.4}
    plain, sta = detection.rc3d["r-c3d"], detection.rc3d["sta-r-c3d"]
    assert (plain.sta, sta.sta, sta.mode, sta.buffer, sta.stride) == (None, "conv5:bn", "end-to-end", 768, 1)
    assert (plain.arch, plain.fine_tune_from, plain.buffer_overlap, plain.truth_inside) == ("c3d", "conv3", 0.75, 0.7)
    assert (sta.anchor_frames, sta.anchor_batch, sta.proposal_nms, sta.test_proposal_nms) == (
        (16, 32, 40, 48, 64, 72, 80, 96, 112, 128), 64, 0.8, 0.9)
    assert (plain.lr, plain.lr_step, plain.lr_gamma, plain.epochs) == (0.0001, 3, 0.1, 5)
