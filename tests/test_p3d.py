"""P3D-199: the public port's parameter count and state_dict keys, its checkpoints, its shapes, and STA inside it."""
from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mars_sta import attention_modules, build_model, load_pretrained

# Read from qijiezhao/pseudo-3d-pytorch (p3d_model.py, P3D199(num_classes=400)): its parameter count for RGB
# (modality='RGB', 3 input channels, the default) and flow (modality='Flow', 2 channels), and its state_dict keys.
REFERENCE_PARAMS_RGB_400 = 66_492_240
REFERENCE_PARAMS_FLOW_400 = 66_489_104
REFERENCE_KEY_COUNT = 1214
REFERENCE_SORTED_KEYS_SHA256 = "065b62eb3b754a265464fdaa9717313a26f5aa694eec87ef6c9785c44dc9ad76"
REFERENCE_SHAPES = {
    "conv1_custom.weight": (64, 3, 1, 7, 7),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1, 1),
    "layer1.0.conv2.weight": (64, 64, 1, 3, 3),
    "layer1.0.conv3.weight": (64, 64, 3, 1, 1),
    "layer2.0.conv1.weight": (128, 256, 1, 1, 1),
    "layer3.35.conv4.weight": (1024, 256, 1, 1, 1),
    "layer4.0.conv1.weight": (512, 1024, 1, 1),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "layer4.2.conv_normal.weight": (512, 512, 3, 3),
    "layer4.2.bn_normal.running_var": (512,),
    "fc.weight": (5, 2048),
}
CLASSES = 5


def meta_p3d(**kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_model("p3d199", **{"num_classes": CLASSES, "sample_size": 160, **kwargs})


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attention_params(model: nn.Module) -> int:
    return sum(count(module) for _, module in attention_modules(model))


@pytest.fixture(scope="module")
def writer() -> nn.Module:
    """A P3D-199 in eval mode with its own seed and non-trivial BN parameters and statistics, as a trained file holds.

    BN scales below 1 keep the activations of 199 layers at a trained network's scale (Kaiming init alone grows them
    to ~1e10), so that comparisons of logits mean something.
    """
    torch.manual_seed(3)
    model = build_model("p3d199", num_classes=CLASSES, sample_size=160).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.3, 0.6)
                module.bias.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def released_file(writer, tmp_path_factory):
    """The port's checkpoint layout: ``{'state_dict': ...}``, here saved from DataParallel (``module.`` keys)."""
    path = tmp_path_factory.mktemp("p3d") / "p3d_rgb_199.checkpoint.pth.tar"
    torch.save({"state_dict": nn.DataParallel(writer).state_dict()}, path)
    return path


@pytest.mark.parametrize(("in_channels", "params"), [(3, REFERENCE_PARAMS_RGB_400), (2, REFERENCE_PARAMS_FLOW_400)])
def test_parameter_count_equals_the_reference(in_channels, params):
    assert count(meta_p3d(num_classes=400, in_channels=in_channels)) == params


def test_state_dict_keys_are_the_reference_keys():
    state = meta_p3d().state_dict()
    keys = list(state)
    assert len(keys) == REFERENCE_KEY_COUNT
    assert hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest() == REFERENCE_SORTED_KEYS_SHA256
    assert keys[6:8] == ["layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight"]  # the port's order
    assert {key: tuple(state[key].shape) for key in REFERENCE_SHAPES} == REFERENCE_SHAPES


def test_blocks_cycle_through_a_b_c_over_the_whole_network():
    model = meta_p3d()
    variants = "".join(block.variant for stage in (model.layer1, model.layer2, model.layer3) for block in stage)
    assert variants == "ABC" * 15 + "AB"
    assert (model.layer2[0].variant, model.layer3[0].variant) == ("A", "C")
    assert model.layer2[0].conv1.stride == (1, 2, 2) and model.layer4[0].conv1.stride == (2, 2)


def test_time_collapses_before_the_2d_stage_and_the_pool_is_the_reference_pool(writer):
    seen = {}
    hooks = [getattr(writer, name).register_forward_hook(
        lambda _m, inputs, output, name=name: seen.update({name: (inputs[0].shape, output)}))
        for name in ("layer1", "layer2", "layer3", "layer4")]
    clip = torch.randn(1, 3, 16, 160, 160)
    with torch.no_grad():
        features = writer.forward_features(clip)
        logits = writer.forward_head(features)
    for hook in hooks:
        hook.remove()
    assert [tuple(seen[name][1].shape) for name in ("layer1", "layer2", "layer3")] == \
        [(1, 256, 8, 40, 40), (1, 512, 4, 20, 20), (1, 1024, 2, 10, 10)]
    assert tuple(seen["layer4"][0]) == (1, 1024, 10, 10)
    reference_pool = F.avg_pool2d(seen["layer4"][1], kernel_size=5, stride=1).flatten(1)
    assert features.shape == (1, 2048) and torch.allclose(features, reference_pool, atol=1e-6)
    assert logits.shape == (1, CLASSES)


def test_longer_clips_run_layer4_on_every_remaining_step_per_clip(writer):
    clips = torch.randn(2, 3, 32, 32, 32)  # two time steps left before layer4
    with torch.no_grad():
        together = writer.forward_features(clips)
        apart = torch.cat([writer.forward_features(clip[None]) for clip in clips])
    assert together.shape == (2, 2048) and torch.allclose(together, apart, atol=1e-5)


def test_released_checkpoint_loads_with_identical_logits(writer, released_file):
    torch.manual_seed(4)
    reader = build_model("p3d199", num_classes=CLASSES, sample_size=160).eval()
    report = load_pretrained(reader, released_file)
    assert report.loaded == REFERENCE_KEY_COUNT and not report.missing and not report.unexpected
    clips = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(reader(clips), writer(clips))


def test_rgb_weights_initialise_a_flow_model_and_sta_keeps_its_init(writer, released_file):
    torch.manual_seed(5)
    model = build_model("p3d199", num_classes=CLASSES, in_channels=2, sample_size=32,
                        sta="layer1:blocks=first,layer2:input:blocks=last,layer3").eval()
    report = load_pretrained(model, released_file)
    assert report.input_adapted == "conv1_custom.weight adapted from 3 to 2 input channels"
    assert report.missing and all(".sta." in key for key in report.missing)
    expected = writer.conv1_custom.weight.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1, 1)
    assert torch.equal(model.conv1_custom.weight, expected)
    with torch.no_grad():
        logits = model(torch.randn(1, 2, 16, 32, 32))
    assert logits.shape == (1, CLASSES)
    lengths = {name: tuple(module.last_weights.shape) for name, module in attention_modules(model)}
    assert lengths["layer1.0.sta"] == (1, 256, 8, 1, 1)
    assert lengths["layer2.7.sta"] == (1, 512, 4, 1, 1)
    assert len(lengths) == 1 + 1 + 36 and lengths["layer3.35.sta"] == (1, 1024, 2, 1, 1)


@pytest.mark.parametrize(("sta", "modules", "module_params"), [
    ("default", 36, 36 * (1024 * (10 * 10 + 4) + 5)),
    ("layer1:blocks=first", 1, 256 * (40 * 40 + 4) + 5),
    ("layer2:input:blocks=first,layer3:se:blocks=last", 2, 256 * (40 * 40 + 4) + 5 + 2 * 1024 * 64 + 64 + 1024),
])
def test_sta_adds_exactly_its_modules(sta, modules, module_params):
    base, model = meta_p3d(), meta_p3d(sta=sta)
    found = list(attention_modules(model))
    assert len(found) == modules and all(name.endswith(".sta") for name, _ in found)
    assert count(model) - count(base) == attention_params(model)
    assert attention_params(model) == module_params
    assert [key for key in model.state_dict() if ".sta." not in key] == list(base.state_dict())
    with torch.no_grad():
        assert model(torch.empty(2, 3, 16, 160, 160, device="meta")).shape == (2, CLASSES)


def test_default_sta_is_the_last_3d_stage():
    assert meta_p3d(sta="default").build_kwargs["sta"] == "layer3"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sta": "layer4"}, r"unknown stage 'layer4' for p3d199 \(stages: layer1, layer2, layer3\)"),
    ({"shortcut": "A"}, "p3d199 has shortcut B"),
    ({"sample_duration": 8}, "at least 16 frames"),
])
def test_bad_arguments_are_refused_with_the_valid_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        meta_p3d(**kwargs)
