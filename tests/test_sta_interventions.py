"""STA on the trunk (``:output``), and the controls that test its claim: the oracle mask and constant-in-time W."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mars_sta import IDENTITY_GATE, STA, build_model, load_pretrained, parse_sta
from mars_sta.interventions import (OracleMask, TimeMeanGate, constant_in_time, set_frame_masks, use_oracle,
                                    window_masks)
from mars_sta.sta import attention_modules

FRAMES, SIZE = 8, 16


def _tiny(sta: str | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny_resnet", num_classes=4, sample_size=SIZE, sample_duration=FRAMES, sta=sta)


def _clips(count: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _stage_input(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """What ``layer3`` reads: the stem and the first two stages."""
    with torch.no_grad():
        return model.layer2(model.layer1(model.relu(model.bn1(model.conv1(clips)))))


def _same_weights_with(sta: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A plain tiny net and the same weights with attention added at ``sta``, both in eval mode."""
    plain = _tiny().eval()
    gated = _tiny(sta, seed=5).eval()
    report = load_pretrained(gated, plain.state_dict())
    assert report.missing and all(".sta." in key for key in report.missing)
    return plain, gated


def test_output_placement_prints_back_and_conflicts_with_another_position():
    assert str(parse_sta("layer3:output:init=authors:bn")) == "layer3:bn:output:init=authors"
    with pytest.raises(ValueError, match="'output' conflicts"):
        parse_sta("layer3:residual:output")


def test_sta_on_the_trunk_weighs_the_block_output_and_keeps_its_shape():
    plain, gated = _same_weights_with("layer3:output")
    features = _stage_input(plain, _clips())
    with torch.no_grad():
        expected = plain.layer3(features)
        out = gated.layer3(features)
        logits = gated(_clips())
    assert out.shape == expected.shape == (3, 64, FRAMES, 2, 2)
    assert logits.shape == (3, 4)
    sta = gated.layer3[0].sta
    assert sta.conv1.weight.shape == (1, 64, 1, 2, 2)  # built for the block output: 64 channels at 2×2
    # At init=identity the gate is IDENTITY_GATE everywhere, so the trunk is the plain block output times it.
    torch.testing.assert_close(sta.last_weights, torch.full((3, 64, FRAMES, 1, 1), IDENTITY_GATE))
    torch.testing.assert_close(out, IDENTITY_GATE * expected)


@pytest.mark.parametrize("sta", ["layer3:output", "layer3:bn:output:init=authors"])
def test_sta_on_the_trunk_trains_with_the_network(sta):
    model = _tiny(sta).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    module = model.layer3[0].sta
    before = module.conv1.weight.detach().clone()
    for _ in range(2):  # identity init opens Conv1's gradient on the second step (Conv2 starts at zero)
        optimizer.zero_grad()
        F.cross_entropy(model(_clips(4)), torch.tensor([0, 1, 2, 3])).backward()
        optimizer.step()
    assert module.conv2.weight.grad.abs().sum() > 0
    assert model.layer3[0].conv2.weight.grad.abs().sum() > 0  # the block below it still learns through the gate
    assert not torch.equal(module.conv1.weight, before)


def test_c3d_takes_output_as_its_stage_output_where_residual_already_sits():
    with torch.device("meta"):
        residual = build_model("c3d", num_classes=4, sta="conv5")
        output = build_model("c3d", num_classes=4, sta="conv5:output")
    assert output.attention_positions == {"conv5": "output"}
    assert output.sta["conv5"].conv1.weight.shape == residual.sta["conv5"].conv1.weight.shape


def test_window_masks_mark_exactly_the_window():
    masks = window_masks(torch.tensor([0, 3]), torch.tensor([2, 8]), 8)
    assert masks.tolist() == [[True, True] + [False] * 6, [False] * 3 + [True] * 5]


@pytest.mark.parametrize("outside", [0.0, 0.25])
def test_oracle_on_the_trunk_zeroes_or_weights_exactly_the_frames_outside_the_window(outside):
    plain, gated = _same_weights_with("layer3:ta:output")
    masks = use_oracle(gated, outside)
    assert [name for name, _ in attention_modules(gated)] == ["layer3.0.sta"] and isinstance(masks[0], OracleMask)
    inside = window_masks(torch.tensor([2, 0, 5]), torch.tensor([5, 8, 6]), FRAMES)
    set_frame_masks(gated, inside)
    features = _stage_input(plain, _clips())
    with torch.no_grad():
        expected, out = plain.layer3(features), gated.layer3(features)
    frame_weight = torch.where(inside, 1.0, outside)[:, None, :, None, None]
    assert torch.equal(out, expected * frame_weight)  # a product by 1, 0 or 0.25 is exact in float


def test_oracle_on_the_residual_branch_leaves_the_shortcut_alone_outside_the_window():
    plain, gated = _same_weights_with("layer3:ta")
    use_oracle(gated)
    inside = window_masks(torch.tensor([1, 4, 0]), torch.tensor([4, 7, 2]), FRAMES)
    set_frame_masks(gated, inside)
    features = _stage_input(plain, _clips())
    block = plain.layer3[0]
    with torch.no_grad():
        out = gated.layer3(features)
        residual, shortcut = block.residual(features), block.downsample(features)
    expected = torch.relu(residual * inside[:, None, :, None, None] + shortcut)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_oracle_refuses_a_forward_pass_without_masks():
    model = _tiny("layer3:ta").eval()
    use_oracle(model)
    with pytest.raises(RuntimeError, match="set_frame_masks"):
        model(_clips())


def test_constant_w_is_the_time_mean_of_stas_gate_and_is_restored_after():
    model = _tiny("layer3:bn:init=authors").eval()
    sta = model.layer3[0].sta
    clips = _clips()
    with torch.no_grad():
        learned = model(clips)
        gate = sta.last_weights.clone()
        with constant_in_time(model) as gates:
            constant = model(clips)
            held = gates[0].last_weights
        restored = model(clips)
    assert isinstance(gates[0], TimeMeanGate) and model.layer3[0].sta is sta and isinstance(sta, STA)
    assert gate.std(dim=2).max() > 1e-3  # the authors' start gives a W that varies in time ...
    torch.testing.assert_close(held, held[:, :, :1].expand_as(held), rtol=0, atol=0)  # ... the control's does not
    torch.testing.assert_close(held[:, :, 0], gate.mean(dim=2))
    assert not torch.allclose(constant, learned)
    torch.testing.assert_close(restored, learned, rtol=0, atol=0)
