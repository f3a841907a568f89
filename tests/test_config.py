"""Stage configs: TOML values, then CLI overrides; unknown keys and wrong types are one-line errors."""
from __future__ import annotations

import pytest

from flow.errors import InputError
from pipelines.config import load_config
from pipelines.train import TrainConfig


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
