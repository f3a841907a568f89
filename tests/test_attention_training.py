"""Attention always trains: wherever ``sta`` puts a module, under the default fine-tuning, every attention parameter
receives a gradient and moves at ``lr × attention_lr_mult``, while the frozen stages stay put."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mars_sta import attention_modules, build_model
from pipelines.stages.train import TrainConfig, TrainPaths, make_optimizer, parameter_groups, train

BASE_LR, MULT = 0.01, 10.0

PLACEMENTS = [
    # arch, sta, frames, size
    ("resnet10", "layer1", 16, 32),
    ("resnet10", "layer2", 16, 32),
    ("resnet10", "layer3", 16, 32),
    ("resnet10", "layer4", 16, 32),
    ("resnet10", "layer2:input", 16, 32),
    ("resnet10", "layer3:ta,layer4:bn", 32, 32),
    ("resnet10", "layer1:se", 16, 32),
    ("c3d", "conv5", 16, 16),
    ("c3d", "conv3:input", 16, 16),
    ("p3d199", "layer1:blocks=last", 16, 32),
    ("p3d199", "layer3:input:blocks=first", 16, 32),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _step(model, optimizer, clip, labels) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(clip), labels).backward()
    optimizer.step()


def _biases_before_batch_norm(model) -> set[int]:
    """In the authors' variant the Deconv and Conv2 biases feed a BatchNorm, which removes any constant: in training
    they get no gradient, by construction (as in their module)."""
    return {id(layer.bias) for _, module in attention_modules(model) if getattr(module, "bn1", None) is not None
            for layer in (module.deconv, module.conv2)}


def _open_gates(model, attention, clip, labels) -> None:
    """One small step along the gradient, so that the layers in front of an identity-initialised gate (whose last
    weight starts at zero) get gradient too. Normalised, because a fresh 199-layer network on 32-pixel clips has
    gradients of 1e10 that a plain step would turn into saturated gates."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(clip), labels).backward()
    with torch.no_grad():
        for p in attention:
            if p.grad is not None and p.grad.abs().max() > 0:
                p -= 0.01 * p.grad / p.grad.abs().max()


@pytest.mark.parametrize("arch, sta, frames, size", PLACEMENTS)
def test_every_attention_parameter_trains_at_the_multiplied_rate(arch, sta, frames, size):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=4, sample_size=size, sample_duration=frames, sta=sta).train()
    config = TrainConfig(arch=arch, lr=BASE_LR, attention_lr_mult=MULT, weight_decay=0.0, momentum=0.0)
    groups = parameter_groups(model, config, fine_tuning=True)
    attention = [p for _, module in attention_modules(model) for p in module.parameters()]
    assert [g["name"] for g in groups] == ["backbone", "attention"]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in attention}
    clip, labels = torch.randn(2, 3, frames, size, size), torch.tensor([0, 1])
    _open_gates(model, attention, clip, labels)

    optimizer = make_optimizer(config, parameter_groups(model, config, fine_tuning=True))
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen, "fine-tuning freezes the early stages"
    before = [p.detach().clone() for p in attention], [p.detach().clone() for p in frozen]
    _step(model, optimizer, clip, labels)
    inert = _biases_before_batch_norm(model)
    for p, old in zip(attention, before[0]):
        assert p.grad is not None and (p.grad.abs().sum() > 0 or id(p) in inert)
        expected = -BASE_LR * MULT * p.grad  # SGD's first step with no momentum or decay: lr × grad
        assert (p.detach() - old - expected).norm() <= 0.02 * expected.norm() + 1e-6 * p.numel() ** 0.5
    assert all(torch.equal(p, old) for p, old in zip(frozen, before[1]))


def test_a_run_lists_its_parameter_groups_and_validation_videos(synth_store, tiny_config, tmp_path):
    config = tiny_config(stream="rgb", sta="layer3", epochs=1, attention_lr_mult=4.0)
    train(config, TrainPaths(store=synth_store.store, out=tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    groups = {row["name"]: row for row in manifest["parameter_groups"]}
    assert manifest["frozen_parameters"] == 0
    assert groups["attention"]["lr"] == pytest.approx(4.0 * groups["backbone"]["lr"])
    assert groups["attention"]["tensors"] > 0 and groups["backbone"]["parameters"] > groups["attention"]["parameters"]
    val_videos = (tmp_path / "val_videos.txt").read_text().split()
    assert manifest["validation"] == "class-stratified"  # the synthetic clip names carry no UCF-101 groups
    assert len(val_videos) == manifest["val_videos"] > 0


def test_finetuning_a_stage_the_model_lacks_names_its_stages():
    from flow.errors import InputError

    model = build_model("c3d", num_classes=4, sample_size=16, sample_duration=16)
    with pytest.raises(InputError, match="conv5a"):
        parameter_groups(model, TrainConfig(arch="c3d", lr=0.1, finetune_from="layer4"), fine_tuning=True)
