"""The shipped configs: every table builds a valid stage config, and the STA recipes are the authors' 64-frame ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from mars_sta.profile import attention_time_steps
from pipelines.stages.run import _train_config, load_plan

CONFIGS = sorted(path for path in (REPO / "configs").glob("*.toml") if path.name != "detection-demo.toml")  # run's


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
        ("layer4:bn", 64, 32, 1e-4, 50.0, 10.0)
    steps = attention_time_steps(mars.arch, sta=mars.sta, frames=mars.frames, size=mars.size)
    assert set(steps.values()) == {4}
