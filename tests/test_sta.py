"""The STA module, its ablation variants, the ``sta=`` spec and the identity initialisation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mars_sta import (
    IDENTITY_GATE,
    STA,
    ChannelAttention,
    attention_modules,
    build_model,
    load_pretrained,
    parse_sta,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Only small tensors here: one intra-op thread, because OpenMP threads spinning against another process on a
    shared 2-core machine make such work up to 20× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sta_has_the_parameter_count_of_table_iv():
    assert count(STA(1024, 7)) == 54_277
    for channels, (h, w) in [(2048, (4, 4)), (256, (28, 28)), (64, (3, 5))]:
        assert count(STA(channels, (h, w))) == channels * (h * w + 4) + 5


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_sta_keeps_the_shape_for_any_length_and_stride(length, stride):
    x = torch.randn(2, 8, length, 3, 3)
    for module in (STA(8, 3, stride=stride), STA(8, 3, stride=stride, attention="t", init="default")):
        y = module(x)
        assert y.shape == x.shape
        assert torch.allclose(y, x * module.last_weights)


@pytest.mark.parametrize("length", [1, 4, 7])
def test_every_variant_keeps_the_shape(length):
    x = torch.randn(2, 8, length, 3, 3)
    variants = [STA(8, 3, deconv=False), ChannelAttention(8, 3, reduction=4),
                ChannelAttention(8, 3, squeeze="mean"), STA(8, 3, kernel_size=5, stride=2)]
    for module in variants:
        assert module(x).shape == x.shape


def test_sta_weights_one_gate_per_channel_and_frame_and_keeps_them_detached():
    module = STA(16, 4)
    torch.nn.init.normal_(module.conv2.weight)  # as if trained: the gate now depends on the input
    x = torch.randn(3, 16, 6, 4, 4, requires_grad=True)
    y = module(x)
    weights = module.last_weights
    assert weights.shape == (3, 16, 6, 1, 1)
    assert not weights.requires_grad
    assert ((weights > 0) & (weights < 1)).all()
    assert weights.std(dim=2).mean() > 0  # frames are weighted differently
    assert torch.allclose(y, x * weights)


def test_variant_gates_have_the_documented_shapes_and_sizes():
    x = torch.randn(2, 32, 5, 7, 7)
    temporal = STA(32, 7, attention="t")
    temporal(x)
    assert temporal.last_weights.shape == (2, 1, 5, 1, 1)
    assert count(temporal) == 32 * 49 + 9
    no_deconv = STA(32, 7, deconv=False)
    no_deconv(x)
    assert no_deconv.deconv is None and count(no_deconv) == 32 * 49 + 1 + 4 * 32
    for squeeze in ("learned", "mean"):
        channel = ChannelAttention(32, 7, squeeze=squeeze)
        channel(x)
        assert channel.last_weights.shape == (2, 32, 1, 1, 1)
    assert count(ChannelAttention(32, 7, squeeze="mean")) == (32 * 2 + 2) + (2 * 32 + 32)  # SE, reduction 16


def test_identity_init_starts_every_variant_at_the_gate_value():
    x = torch.randn(2, 16, 4, 5, 5)
    for module in (STA(16, 5), STA(16, 5, attention="t"), STA(16, 5, deconv=False),
                   ChannelAttention(16, 5), ChannelAttention(16, 5, squeeze="mean")):
        module(x)
        assert torch.allclose(module.last_weights, torch.full_like(module.last_weights, IDENTITY_GATE))
    plain = STA(16, 5, init="default")
    plain(x)
    assert not torch.allclose(plain.last_weights, torch.full_like(plain.last_weights, IDENTITY_GATE), atol=0.05)


@pytest.mark.parametrize("length", [1, 2, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_identity_init_learns_from_the_first_step(length, stride):
    """The 1-channel ReLU must not start dead, or Conv2 (and everything before it) would never learn."""
    for seed in range(8):
        torch.manual_seed(seed)
        module = STA(16, 3, stride=stride)
        x = torch.randn(4, 16, length, 3, 3) + 0.5 * torch.randn(1, 16, 1, 1, 1)
        (module(x) * torch.randn(4, 16, length, 3, 3)).sum().backward()
        assert module.conv2.weight.grad.abs().sum() > 0, seed


def test_sta_refuses_another_feature_map_size_and_names_the_expected_one():
    with pytest.raises(ValueError, match="7×7"):
        STA(8, 7)(torch.randn(1, 8, 2, 9, 9))
    with pytest.raises(ValueError, match="STA without Deconv"):
        STA(8, 7, deconv=False, stride=2)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("layer4", "layer4"),
        ("layer4,layer3", "layer3,layer4"),
        ("layer4:st:stride=2", "layer4:stride=2"),
        ("layer4:ta", "layer4:ta"),
        ("layer4:st:nodeconv", "layer4:nodeconv"),
        ("layer4:se", "layer4:se"),
        (" layer4 : sa : reduction=8 ", "layer4:sa:reduction=8"),
        ("layer4:init=default:blocks=first:input", "layer4:input:blocks=first:init=default"),
        ("layer4:residual:deconv:stride=1:blocks=all:init=identity", "layer4"),
        ("layer4:se:reduction=16", "layer4:se"),
    ],
)
def test_sta_spec_prints_back_canonically(text, canonical):
    spec = parse_sta(text)
    assert str(spec) == canonical
    assert parse_sta(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "none", "None", None])
def test_empty_sta_spec_means_no_attention(text):
    assert parse_sta(text) is None


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("layer4:foo", "'foo'"),
        ("layer4:stride=0", "'stride=0'"),
        ("layer4:blocks=some", "'blocks=some'"),
        ("layer4:se:stride=2", "'se'"),
        ("layer4:nodeconv:stride=2", "nodeconv"),
        ("layer4:st:ta", "'ta'"),
        ("layer4:reduction=4", "'reduction'"),
        ("layer4,layer4", "'layer4' is given twice"),
        ("Layer4", "'Layer4'"),
        ("layer4,,layer3", "''"),
    ],
)
def test_bad_sta_spec_names_the_bad_token(text, token):
    with pytest.raises(ValueError, match="sta spec") as error:
        parse_sta(text)
    assert token in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_stage_is_named_with_the_stages_of_that_network():
    with pytest.raises(ValueError, match="unknown stage 'layer4' for tiny_resnet"):
        build_model("tiny_resnet", num_classes=3, sample_size=16, sta="layer4")


@pytest.mark.parametrize(
    ("spec", "kind", "gate_shape"),
    [
        ("layer3", STA, (2, 64, 8, 1, 1)),
        ("layer3:ta", STA, (2, 1, 8, 1, 1)),
        ("layer3:nodeconv", STA, (2, 64, 8, 1, 1)),
        ("layer3:stride=3", STA, (2, 64, 8, 1, 1)),
        ("layer3:sa", ChannelAttention, (2, 64, 1, 1, 1)),
        ("layer3:se", ChannelAttention, (2, 64, 1, 1, 1)),
        ("layer3:input", STA, (2, 32, 8, 1, 1)),
    ],
)
def test_variants_are_selected_by_name_inside_a_network(spec, kind, gate_shape):
    model = build_model("tiny_resnet", num_classes=5, sample_size=16, sta=spec).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 8, 16, 16))
    assert logits.shape == (2, 5)
    modules = list(attention_modules(model))
    assert [name for name, _ in modules] == ["layer3.0.sta"]
    assert isinstance(modules[0][1], kind)
    assert modules[0][1].last_weights.shape == gate_shape
    assert model.build_kwargs["sta"] == str(parse_sta(spec))


def test_default_stage_is_the_papers_later_stage_and_the_tiny_nets_last():
    with torch.device("meta"):
        big = build_model("resnext101", num_classes=51, sta="default")
    tiny = build_model("tiny_resnet", num_classes=5, sample_size=32, sta="default:ta")
    assert big.build_kwargs["sta"] == "layer4"
    assert [name for name, _ in attention_modules(big)] == ["layer4.0.sta", "layer4.1.sta", "layer4.2.sta"]
    assert tiny.build_kwargs["sta"] == "layer3:ta"


def test_spatial_size_follows_sample_size_stage_and_position():
    with torch.device("meta"):
        at_112 = build_model("resnext101", num_classes=51, sta="layer4:input:blocks=first,layer2:blocks=last")
        at_160 = build_model("resnext101", num_classes=51, sample_size=160, sta="layer4")
    modules = dict(attention_modules(at_112))
    assert list(modules) == ["layer2.3.sta", "layer4.0.sta"]
    assert modules["layer4.0.sta"].conv1.weight.shape == (1, 1024, 1, 7, 7)  # the paper's c=1024, 7×7 example
    assert modules["layer2.3.sta"].conv1.weight.shape == (1, 512, 1, 14, 14)
    assert at_160.layer4[2].sta.conv1.weight.shape == (1, 2048, 1, 5, 5)


# --- initialisation: what inserting a fresh module does to a trained network -------------------------------------

CLASSES = 6


def _clips(count: int, seed: int, templates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    return 0.15 * templates[labels] + torch.randn(count, 3, 8, 16, 16, generator=generator), labels


@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny_resnet trained briefly on noisy class templates (learnable, not perfectly), and held-out clips."""
    torch.manual_seed(0)
    templates = F.interpolate(torch.randn(CLASSES, 3, 2, 4, 4), size=(8, 16, 16), mode="trilinear")
    model = build_model("tiny_resnet", num_classes=CLASSES, sample_size=16, sample_duration=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(40):
        clips, labels = _clips(16, step, templates)
        loss = F.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    clips, labels = _clips(256, 1000, templates)
    model.eval()
    with torch.no_grad():
        predictions = model(clips).argmax(1)
    return model, clips, predictions


def _agreement(trained, sta: str) -> float:
    model, clips, predictions = trained
    with_sta = build_model("tiny_resnet", num_classes=CLASSES, sample_size=16, sample_duration=8, sta=sta)
    report = load_pretrained(with_sta, model.state_dict())
    assert report.missing and all(".sta." in key for key in report.missing)
    with torch.no_grad():
        return (with_sta.eval()(clips).argmax(1) == predictions).float().mean().item()


def test_identity_init_keeps_a_trained_networks_predictions(trained_tiny):
    assert _agreement(trained_tiny, "layer3") >= 0.95
    all_stages = "layer1,layer2,layer3"
    identity = _agreement(trained_tiny, all_stages)
    plain = _agreement(trained_tiny, ",".join(f"{s}:init=default" for s in all_stages.split(",")))
    assert identity > plain
