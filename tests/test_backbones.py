"""Backbones: the registry, parameter counts and key layout of the public checkpoints, pooling, features."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mars_sta import attention_modules, build_model, list_models


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    """Build on the meta device: shapes and counts without allocating or initialising weights."""
    with torch.device("meta"):
        return build_model(name, **kwargs)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_architecture():
    assert set(list_models()) == {"resnext101", "resnet10", "resnet18", "resnet34", "resnet50", "resnet101",
                                  "resnet152", "resnet200", "c3d", "p3d199", "tiny_resnet"}


@pytest.mark.parametrize(
    ("name", "kwargs", "params"),
    [
        ("resnext101", {"num_classes": 51}, 47_625_715),
        ("resnext101", {"num_classes": 400}, 48_340_816),
        ("resnext101", {"num_classes": 51, "in_channels": 2}, 47_603_763),
        ("resnext101", {"num_classes": 101}, 47_728_165),
        ("resnet18", {"num_classes": 400, "shortcut": "B"}, 33_409_104),
        ("resnet18", {"num_classes": 400}, 33_235_280),
        ("resnet34", {"num_classes": 400}, 63_544_912),
        ("resnet34", {"num_classes": 400, "shortcut": "B"}, 63_718_736),
        ("resnet50", {"num_classes": 400}, 47_018_576),
        ("resnet50", {"num_classes": 400, "shortcut": "A"}, 44_242_000),
        ("resnet101", {"num_classes": 400}, 86_064_720),
        ("resnet152", {"num_classes": 400}, 118_223_440),
        ("tiny_resnet", {"num_classes": 10}, 228_666),
        ("tiny_resnet", {"num_classes": 10, "in_channels": 2}, 227_466),
    ],
)
def test_parameter_counts_match_the_public_networks(name, kwargs, params):
    assert count(meta_model(name, **kwargs)) == params


@pytest.mark.parametrize(("name", "shortcut", "entries"), [("resnet18", "A", 104), ("resnet18", "B", 122),
                                                           ("resnet50", "A", 296), ("resnet50", "B", 320),
                                                           ("resnext101", "B", 626)])
def test_state_dict_entry_counts_match_the_public_checkpoints(name, shortcut, entries):
    assert len(meta_model(name, num_classes=400, shortcut=shortcut).state_dict()) == entries


def test_resnext101_keys_and_shapes_are_those_of_mars():
    state = meta_model("resnext101", num_classes=51).state_dict()
    keys = list(state)
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    expected = {
        "conv1.weight": (64, 3, 7, 7, 7),
        "layer1.0.conv1.weight": (128, 64, 1, 1, 1),
        "layer1.0.conv2.weight": (128, 4, 3, 3, 3),
        "layer1.0.conv3.weight": (256, 128, 1, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1, 1),
        "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.conv2.weight": (256, 8, 3, 3, 3),
        "layer4.2.conv3.weight": (2048, 1024, 1, 1, 1),
        "fc.weight": (51, 2048),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.endswith(".bias") and "conv" in key for key in keys)


def test_sta_adds_only_its_own_keys():
    base = meta_model("resnext101", num_classes=51).state_dict()
    with_sta = meta_model("resnext101", num_classes=51, sta="layer3:blocks=last,layer4").state_dict()
    added = [key for key in with_sta if key not in base]
    assert all(with_sta[key].shape == value.shape for key, value in base.items())
    assert [key for key in with_sta if key in base] == list(base)
    assert {key.split(".sta.")[0] for key in added} == {"layer3.22", "layer4.0", "layer4.1", "layer4.2"}
    assert "layer4.0.sta.conv1.weight" in added
    assert sum(with_sta[key].numel() for key in added) == 1024 * (49 + 4) + 5 + 3 * (2048 * (16 + 4) + 5)


def test_build_kwargs_are_plain_and_rebuild_the_model():
    model = meta_model("resnet18", num_classes=7, in_channels=2, sample_size=96, sta="layer4:ta, layer3")
    assert model.arch == "resnet18"
    assert model.build_kwargs == {"num_classes": 7, "in_channels": 2, "sample_size": 96, "sample_duration": 16,
                                  "shortcut": "A", "sta": "layer3,layer4:ta"}
    again = meta_model(model.arch, **model.build_kwargs)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet11"}, "unknown architecture 'resnet11'"),
        ({"name": "resnet18", "shortcut": "C"}, "shortcut must be 'A' or 'B'"),
        ({"name": "c3d", "shortcut": "B"}, "c3d has no residual shortcuts"),
        ({"name": "resnet18", "num_classes": 0}, "num_classes must be a positive integer"),
        ({"name": "resnet18", "sta": "layer5"}, "unknown stage 'layer5' for resnet18"),
    ],
)
def test_bad_build_arguments_are_named(kwargs, message):
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        meta_model(kwargs.pop("name"), **kwargs)


@pytest.fixture(scope="module")
def resnet10():
    torch.manual_seed(0)
    return build_model("resnet10", num_classes=5).eval()


@pytest.mark.parametrize("frames", [16, 64])
def test_adaptive_pool_equals_the_reference_fixed_pool(resnet10, frames):
    seen = {}
    hook = resnet10.layer4.register_forward_hook(lambda _m, _i, output: seen.setdefault("layer4", output))
    clip = torch.randn(1, 3, frames, 112, 112)
    with torch.no_grad():
        features = resnet10.forward_features(clip)
        logits = resnet10(clip)
    hook.remove()
    kernel = (math.ceil(frames / 16), math.ceil(112 / 32), math.ceil(112 / 32))
    reference = F.avg_pool3d(seen["layer4"], kernel, stride=1).flatten(1)
    assert features.shape == reference.shape == (1, 512)
    assert torch.allclose(features, reference, atol=1e-6)
    assert torch.allclose(logits, resnet10.forward_head(features), atol=1e-6)


def test_pooling_accepts_any_clip_size(resnet10):
    with torch.no_grad():
        assert resnet10.forward_features(torch.randn(2, 3, 10, 72, 96)).shape == (2, 512)


def test_tiny_net_keeps_time_for_attention_and_trains():
    torch.manual_seed(0)
    model = build_model("tiny_resnet", num_classes=4, sample_size=32, sta="default")
    clip = torch.randn(2, 3, 16, 32, 32)
    features = model.forward_features(clip)
    assert features.shape == (2, 64)
    (name, module), = attention_modules(model)
    assert name == "layer3.0.sta" and module.last_weights.shape == (2, 64, 16, 1, 1)
    F.cross_entropy(model(clip), torch.tensor([0, 3])).backward()
    assert module.conv2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="4×4 feature maps, got 6×6"):
        model(torch.randn(1, 3, 16, 48, 48))


def test_resnext101_layer4_has_one_frame_left_at_16_frames():
    model = meta_model("resnext101", num_classes=51, sta="layer4")
    with torch.no_grad():
        logits = model(torch.empty(1, 3, 16, 112, 112, device="meta"))
    assert logits.shape == (1, 51)
    assert all(module.last_weights.shape == (1, 2048, 1, 1, 1) for _, module in attention_modules(model))


def test_c3d_has_the_reference_layout_and_takes_attention():
    model = meta_model("c3d", num_classes=101, sta="conv5,conv3:input:ta")
    state = model.state_dict()
    assert tuple(state["fc6.weight"].shape) == (4096, 8192)
    assert tuple(state["conv3b.weight"].shape) == (256, 256, 3, 3, 3)
    assert tuple(state["sta.conv5.conv1.weight"].shape) == (1, 512, 1, 7, 7)
    assert tuple(state["sta.conv3.conv1.weight"].shape) == (1, 128, 1, 28, 28)
    clip = torch.empty(2, 3, 16, 112, 112, device="meta")
    with torch.no_grad():
        assert model(clip).shape == (2, 101)
        features = model.forward_features(clip)
        assert features.shape == (2, 4096) and model.forward_head(features).shape == (2, 101)
    assert count(meta_model("c3d", num_classes=101)) == 78_409_573
