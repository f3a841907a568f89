"""The STA module of the authors' published STA-MARS code (``sta="layer4:bn"``): their checkpoints load with the same
outputs, and exports go back to their layout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mars_sta import build_model, load_pretrained
from mars_sta.sta import STA, attention_modules
from mars_sta.authors_layout import to_authors_layout
from pipelines.stages.export import mars_payload


class AuthorsAttention(nn.Module):
    """The authors' attention layer as their code describes it, with 3D layers throughout (built here from the
    published structure, independently of ``mars_sta.STA``)."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.conv3d_1_fa = nn.Conv3d(channels, 1, kernel_size=(1, size, size))
        self.deconv3d_fa = nn.ConvTranspose3d(1, 1, kernel_size=(3, 1, 1))
        self.bn1_fa = nn.BatchNorm3d(1)
        self.conv3d_2_fa = nn.Conv3d(1, channels, kernel_size=(3, 1, 1))
        self.bn2_fa = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, length = x.shape[:3]
        z = self.conv3d_1_fa(x).view(n, 1, length, 1, 1)
        z = torch.relu(self.bn1_fa(self.deconv3d_fa(z)))
        return x * torch.sigmoid(self.bn2_fa(self.conv3d_2_fa(z)))


def _randomise(module: nn.Module, seed: int) -> None:
    """Trained-looking weights and BatchNorm statistics, so that a wrong mapping cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)


def _authors_network(size: int, frames: int) -> nn.Module:
    """ResNeXt-101 with the authors' module at the end of every layer4 block's residual branch."""
    model = build_model("resnext101", num_classes=7, sample_size=size, sample_duration=frames)
    for block in model.layer4:
        block.sta = AuthorsAttention(2048, size // 32)
    _randomise(model, seed=3)
    return model.eval()


def test_an_authors_checkpoint_loads_into_layer4_bn_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    size, frames = 64, 32  # layer4 sees 2 time steps of 2×2
    theirs = _authors_network(size, frames)
    state = {f"module.{key.replace('.sta.', '.fa.')}": value for key, value in theirs.state_dict().items()}
    assert "module.layer4.2.fa.deconv3d_fa.weight" in state
    assert state["module.layer4.0.fa.conv3d_2_fa.weight"].shape == (2048, 1, 3, 1, 1)
    path = tmp_path / "sta_mars_ucf101_64f.pth"
    torch.save({"epoch": 3, "arch": "resnext-101", "state_dict": state, "optimizer": {}}, path)

    ours = build_model("resnext101", num_classes=7, sample_size=size, sample_duration=frames, sta="layer4:bn")
    report = load_pretrained(ours, path)
    assert report.authors_layout and not report.missing and not report.unexpected
    clip = torch.randn(2, 3, frames, size, size)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(clip), theirs(clip), atol=1e-5)


@pytest.mark.parametrize("bn", [True, False])
def test_init_authors_draws_what_the_published_network_draws(bn):
    """Same seed, same draws: the module as their network leaves it (built with PyTorch's defaults, then every Conv3d
    weight Kaiming-normal fan-out and every BatchNorm (1, 0)) equals ``init=authors`` weight for weight."""
    channels, size = 12, 3
    torch.manual_seed(5)
    theirs = AuthorsAttention(channels, size)
    for layer in theirs.modules():
        if isinstance(layer, nn.Conv3d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
        elif isinstance(layer, nn.BatchNorm3d):
            nn.init.constant_(layer.weight, 1.0)
            nn.init.constant_(layer.bias, 0.0)
    torch.manual_seed(5)
    ours = STA(channels, size, batch_norm=bn, init="authors")
    for name, layer in {"conv3d_1_fa": ours.conv1, "deconv3d_fa": ours.deconv, "conv3d_2_fa": ours.conv2}.items():
        reference = getattr(theirs, name)
        assert torch.equal(layer.weight.flatten(), reference.weight.flatten()), name
        assert torch.equal(layer.bias, reference.bias), name
    if bn:
        assert torch.equal(ours.bn2.weight, torch.ones(channels)) and not ours.bn2.bias.any()


def test_init_authors_reaches_every_module_of_a_network():
    """Through the ``sta=`` string: Conv2 weights spread as Kaiming-normal fan-out (std √(2 / 3c)), not zero as the
    identity start leaves them nor uniform within ±1/√3 as PyTorch's default (std 1/3); over 3c ≥ 96 draws the
    sample std lies within 30 % of its value (more than 5 of its standard errors)."""
    torch.manual_seed(0)
    model = build_model("tiny_resnet", num_classes=3, sample_size=32, sample_duration=16, sta="layer3:init=authors")
    gates = [module for _, module in attention_modules(model)]
    assert gates
    for gate in gates:
        channels = gate.conv2.weight.shape[0]
        expected = (2 / (3 * channels)) ** 0.5
        assert 3 * channels >= 96 and abs(gate.conv2.weight.std().item() / expected - 1) < 0.3


def test_layer4_bn_has_the_authors_parameter_count():
    model = build_model("resnext101", num_classes=101, sample_size=112, sample_duration=64, sta="layer4:bn")
    plain = build_model("resnext101", num_classes=101, sample_size=112, sample_duration=64)
    per_module = sum(p.numel() for p in AuthorsAttention(2048, 4).parameters())
    assert per_module == 45_063
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == 3 * per_module


@pytest.mark.parametrize("sta, authors_stage, plain_stage", [("layer3:bn", "layer3", None),
                                                              ("layer2:ta:bn,layer3", "layer2", "layer3")])
def test_mars_export_writes_the_authors_layout_and_loads_back(sta, authors_stage, plain_stage):
    model = build_model("tiny_resnet", num_classes=5, sample_size=32, sample_duration=16, sta=sta)
    _randomise(model, seed=1)
    exported = mars_payload({"arch": "tiny_resnet", "epoch": 2, "state_dict": model.state_dict()})["state_dict"]
    fa_keys = [key for key in exported if ".fa." in key]
    assert fa_keys and all(key.startswith(f"module.{authors_stage}.") for key in fa_keys)
    sta_stages = {key.split(".")[1] for key in exported if ".sta." in key}
    assert sta_stages == ({plain_stage} if plain_stage else set())  # plain STA keeps this project's names
    assert all(exported[key].dim() == 5 for key in fa_keys if key.endswith(("deconv3d_fa.weight",
                                                                            "conv3d_2_fa.weight")))
    again = build_model("tiny_resnet", num_classes=5, sample_size=32, sample_duration=16, sta=sta)
    load_pretrained(again, {"state_dict": exported})
    clip = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(clip), model.eval()(clip))
    assert to_authors_layout({"x.weight": torch.ones(1)}) == {"x.weight": torch.ones(1)}
