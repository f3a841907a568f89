"""How a network reads its input: the registry's default, and the one check before frames reach a network."""
from __future__ import annotations

import pytest

from flow.errors import InputError
from mars_sta import build_model, model_entry
from mars_sta.inputs import InputConfig
from pipelines.core.inputs import check_input

FLOW = {"bound": 20.0, "tvl1_backend": "opencv", "tvl1": {"warps": 5, "tau": 0.25}}


def test_registry_entries_say_how_their_usual_weights_read_clips():
    assert model_entry("resnext101").default_input == InputConfig(stream="rgb", frames=16, size=112)
    assert model_entry("p3d199").default_input.size == 160
    assert model_entry("tiny_resnet").default_input.normalization == "unit"
    assert build_model("p3d199", num_classes=3).build_kwargs["sample_size"] == 160
    assert build_model("tiny_resnet", num_classes=3, sample_size=48).build_kwargs["sample_size"] == 48


def test_input_config_round_trips_through_plain_values():
    described = InputConfig("sta-mars", 64, 112, "mars", FLOW)
    assert InputConfig.from_dict(described.to_dict()) == described
    with pytest.raises(ValueError, match="unknown input description keys: crop"):
        InputConfig.from_dict({**described.to_dict(), "crop": "centre"})


def test_the_same_clips_pass():
    check_input(InputConfig("flow", 16, 32, "unit", FLOW), InputConfig("flow", 16, 32, "unit", dict(FLOW)), "c.pth")
    check_input(InputConfig("flow", 16, 32, "unit", None), InputConfig("flow", 16, 32, "unit", FLOW), "c.pth")


def test_other_clips_are_refused_naming_every_difference():
    with pytest.raises(InputError) as caught:
        check_input(InputConfig("flow", 16, 32, "unit"), InputConfig("flow", 8, 48, "unit"), "c.pth")
    assert str(caught.value) == ("c.pth: was trained on other clips than these: frames 16 (checkpoint) vs 8 (here); "
                                 "size 32 (checkpoint) vs 48 (here)")


def test_a_store_of_other_tvl1_settings_is_refused_naming_the_setting():
    store = {**FLOW, "tvl1_backend": "torch", "tvl1": {"warps": 5, "tau": 0.3}}
    with pytest.raises(InputError) as caught:
        check_input(InputConfig("flow", flow=FLOW), InputConfig("flow", flow=store), "c.pth", "S")
    assert str(caught.value) == ("S: was extracted with other preprocessing than the checkpoint was trained on: "
                                 "tvl1.tau 0.25 (checkpoint) vs 0.3 (store); tvl1_backend 'opencv' (checkpoint) vs "
                                 "'torch' (store)")
