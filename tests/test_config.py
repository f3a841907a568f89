"""Stage configs: TOML values, then CLI overrides; unknown keys and wrong types are one-line errors."""
from __future__ import annotations

import pytest

from flow.errors import InputError
from pipelines.core.config import load_config
from pipelines.stages.evaluate import EvaluateConfig
from pipelines.stages.train import TrainConfig


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nepochs = 3\nlr = 1\narch = "tiny_resnet"\nsta = "layer3"\n')
    config = load_config(TrainConfig, path, {"epochs": 5, "lr": None}, table="train")
    assert (config.epochs, config.lr, config.arch, config.sta) == (5, 1.0, "tiny_resnet", "layer3")
    assert isinstance(config.lr, float)


@pytest.mark.parametrize("text, words", [
    ("[train]\nepoch = 3\n", ["unknown key 'epoch'", "epochs"]),
    ("[train]\nepochs = 'many'\n", ["'epochs' must be int", "'many'"]),
    ("[train]\nmse_normalize = 1\n", ["'mse_normalize' must be bool"]),
    ("[train\nepochs = 3\n", ["not valid TOML"]),
])
def test_bad_config_names_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_config(TrainConfig, path, table="train")
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for word in words:
        assert word in message


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "none.toml")


def test_train_config_takes_the_streams_own_table(tmp_path):
    from pipelines.stages.train import load_train_config

    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 3\nalpha = 50.0\n[train.mars]\nalpha = 10.0\n'
                    '[train.sta-mars]\nepochs = 4\npretrained = "k.pth"\n')
    (tmp_path / "k.pth").write_bytes(b"")  # its existence is checked with the config, its content when read
    mars, _ = load_train_config(path, {"stream": "mars"})
    sta, pretrained = load_train_config(path, {"stream": "mars", "sta": "layer4"})
    flow, _ = load_train_config(path, {"stream": "flow", "epochs": 9})
    assert (mars.alpha, mars.epochs) == (10.0, 3)
    assert (sta.alpha, sta.epochs, sta.sta, pretrained) == (10.0, 4, "layer4", (tmp_path / "k.pth").resolve())
    assert (flow.alpha, flow.epochs) == (50.0, 9)


@pytest.mark.parametrize("make, message", [
    (lambda: EvaluateConfig(subset="dev"), r"subset 'dev': expected one of test, val, train"),
    (lambda: EvaluateConfig(amp="fp8"), r"amp 'fp8': expected one of off, fp16, bf16"),
    (lambda: EvaluateConfig(batch_size=0), r"batch_size must be at least 1, got 0"),
    (lambda: EvaluateConfig(protocol="views:0x1"), r"--protocol 'views:0x1'"),
    (lambda: TrainConfig(stream="depth"), r"stream 'depth': expected one of flow, rgb, mars"),
    (lambda: TrainConfig(scheduler="warm"), r"scheduler 'warm': expected one of plateau"),
    (lambda: TrainConfig(scheduler="step"), r"scheduler 'step' needs lr_milestones"),
    (lambda: TrainConfig(epochs=0), r"epochs must be at least 1, got 0"),
    (lambda: TrainConfig(val_fraction=1.0), r"val_fraction must lie in \[0, 1\), got 1.0"),
])
def test_configs_refuse_bad_values_when_made(make, message):
    """Checked once, where the config is built (Python or TOML), so the stages trust it."""
    with pytest.raises(InputError, match=message):
        make()


def test_a_toml_value_outside_its_choices_is_refused_when_loaded(tmp_path):
    path = tmp_path / "evaluate.toml"
    path.write_text('[evaluate]\nsubset = "everything"\n')
    with pytest.raises(InputError, match="subset 'everything': expected one of test, val, train"):
        load_config(EvaluateConfig, path, table="evaluate")
