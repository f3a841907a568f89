"""load_pretrained: MARS / 3D-ResNets files, plain state_dicts, this project's files, and what must be refused."""
from __future__ import annotations

import builtins
import logging
import pickle

import pytest
import torch
from torch import nn

from mars_sta import CheckpointError, build_model, load_pretrained
from mars_sta.c3d import C3D


@pytest.fixture(scope="module")
def mars_writer():
    """A ResNeXt-101 as MARS writes it: 51 classes, eval mode, weights from its own seed."""
    torch.manual_seed(1)
    model = build_model("resnext101", num_classes=51).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that loading them matters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def mars_file(mars_writer, tmp_path_factory):
    path = tmp_path_factory.mktemp("mars") / "MARS_HMDB51_16f.pth"
    optimizer = torch.optim.SGD(mars_writer.parameters(), lr=0.1, momentum=0.9, dampening=0.9)
    torch.save({"epoch": 3, "arch": "resnext-101", "state_dict": nn.DataParallel(mars_writer).state_dict(),
                "optimizer": optimizer.state_dict()}, path)
    return path


def tiny(**kwargs) -> nn.Module:
    return build_model("tiny_resnet", **{"num_classes": 4, "sample_size": 16, **kwargs})


def test_mars_checkpoint_reproduces_the_logits_of_the_model_that_wrote_it(mars_writer, mars_file, caplog):
    torch.manual_seed(2)
    reader = build_model("resnext101", num_classes=51).eval()
    clip = torch.randn(1, 3, 16, 112, 112)
    with caplog.at_level(logging.INFO, logger="mars_sta.pretrained"):
        report = load_pretrained(reader, mars_file)
    assert report.file_arch == "resnext-101"
    assert report.loaded == 626 and not report.missing and not report.unexpected
    assert not report.classifier_replaced and report.input_adapted is None
    assert str(mars_file) in caplog.text
    with torch.no_grad():
        assert torch.allclose(reader(clip), mars_writer(clip), atol=1e-5)


def test_fc_is_replaced_when_the_class_count_differs():
    torch.manual_seed(0)
    source = build_model("resnet10", num_classes=400)
    target = build_model("resnet10", num_classes=51)
    fresh_fc = target.fc.weight.detach().clone()
    report = load_pretrained(target, {"arch": "resnet-10", "state_dict": source.state_dict()})
    assert report.classifier_replaced and not report.missing
    assert torch.equal(target.fc.weight, fresh_fc)
    assert torch.equal(target.layer4[0].conv2.weight, source.layer4[0].conv2.weight)


def test_conv1_is_adapted_from_rgb_to_flow_by_the_cross_modality_average():
    torch.manual_seed(0)
    rgb = tiny()
    flow = tiny(in_channels=2)
    report = load_pretrained(flow, rgb.state_dict())
    mean = rgb.conv1.weight.mean(dim=1, keepdim=True)
    assert flow.conv1.weight.shape == (16, 2, 3, 5, 5)
    assert torch.allclose(flow.conv1.weight, mean.repeat(1, 2, 1, 1, 1))
    assert "conv1.weight adapted from 3 to 2" in report.input_adapted
    back = tiny()
    load_pretrained(back, flow.state_dict())
    assert torch.allclose(back.conv1.weight, mean.repeat(1, 3, 1, 1, 1))
    with pytest.raises(CheckpointError, match="conv1.weight has 3 input channels, the model 2"):
        load_pretrained(tiny(in_channels=2), rgb.state_dict(), adapt_input=None)


def test_plain_network_loads_into_one_with_sta_and_back():
    torch.manual_seed(0)
    plain = tiny()
    with_sta = tiny(sta="layer3,layer2:se")
    report = load_pretrained(with_sta, {"state_dict": {f"module.module.{k}": v for k, v in plain.state_dict().items()}})
    assert report.missing and all(".sta." in key for key in report.missing)
    assert torch.equal(with_sta.layer3[0].conv2.weight, plain.layer3[0].conv2.weight)
    back = load_pretrained(tiny(), with_sta.state_dict())
    assert not back.missing and back.unexpected and all(".sta." in key for key in back.unexpected)


def test_project_checkpoint_loads_and_names_its_arch(tmp_path):
    torch.manual_seed(0)
    model = tiny(sta="layer3")
    path = tmp_path / "best.pt"
    torch.save({"format": "mars-sta", "format_version": 1, "arch": model.arch, "model_kwargs": model.build_kwargs,
                "stream": "sta-rgb", "classes": ["a", "b", "c", "d"], "state_dict": model.state_dict()}, path)
    again = build_model(**{"name": model.arch, **torch.load(path, weights_only=True)["model_kwargs"]})
    report = load_pretrained(again, path)
    assert report.file_arch == "tiny_resnet" and not report.missing and not report.unexpected
    assert torch.equal(again.layer3[0].sta.conv1.weight, model.layer3[0].sta.conv1.weight)
    with pytest.raises(CheckpointError, match=r"tiny_resnet checkpoint, model is resnet10$"):
        load_pretrained(build_model("resnet10", num_classes=4), path)


def test_another_architecture_is_refused_in_one_line(mars_writer, tmp_path):
    path = tmp_path / "resnet-18-kinetics.pth"
    torch.save({"arch": "resnet-18", "state_dict": tiny().state_dict()}, path)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(mars_writer, path)
    assert str(error.value) == f"{path}: resnet-18 checkpoint, model is resnext101"
    with torch.device("meta"):
        resnet10_state = build_model("resnet10", num_classes=51).state_dict()
    with pytest.raises(CheckpointError, match=r"^<state_dict>: layer1\.0\.conv1\.weight is \(64, 64, 3, 3, 3\) in the "
                                              r"file but \(128, 64, 1, 1, 1\) in the model \(resnext101, shortcut B\)"):
        load_pretrained(mars_writer, resnet10_state)


def test_shortcut_mismatch_is_refused_and_allowed_when_not_strict():
    a_state = build_model("resnet10", num_classes=5, shortcut="A").state_dict()
    b_model = build_model("resnet10", num_classes=5, shortcut="B")
    with pytest.raises(CheckpointError, match="lacks 15 of the model's keys, first layer2.0.downsample.0.weight"):
        load_pretrained(b_model, a_state)
    report = load_pretrained(b_model, a_state, strict=False)
    assert "layer2.0.downsample.0.weight" in report.missing


def test_old_checkpoints_without_batch_counters_load():
    source = tiny()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_pretrained(tiny(), state)
    assert report.missing and all(key.endswith("num_batches_tracked") for key in report.missing)


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return builtins.open, (str(marker), "w")

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"arch": "resnext-101", "state_dict": {"conv1.weight": Payload()}}, protocol=2))
    with pytest.raises(CheckpointError) as error:
        load_pretrained(tiny(), path)
    message = str(error.value)
    assert message.startswith(f"{path}: refused to unpickle") and "would call io.open" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a dict", "missing", "directory"])
def test_unreadable_files_give_one_line_errors(tmp_path, damage):
    path = tmp_path / "model.pth"
    torch.save(tiny().state_dict(), path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a dict":
        torch.save(torch.zeros(3), path)
    elif damage == "missing":
        path.unlink()
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(CheckpointError) as error:
        load_pretrained(tiny(), path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


def test_c3d_sports1m_keys_are_renamed():
    original = {"features.0.weight": torch.zeros(1), "features.18.bias": torch.zeros(1),
                "classifier.3.weight": torch.zeros(1), "classifier.6.bias": torch.zeros(1)}
    renamed = C3D.remap_checkpoint_keys(original)
    assert list(renamed) == ["conv1.weight", "conv5b.bias", "fc7.weight", "fc8.bias"]
    with torch.device("meta"):
        keys = set(build_model("c3d", num_classes=487).state_dict())
    assert set(C3D.remap_checkpoint_keys({f"{k}.weight": 0 for k in
                                          ["features.0", "features.3", "features.6", "features.8", "features.11",
                                           "features.13", "features.16", "features.18", "classifier.0",
                                           "classifier.3", "classifier.6"]})) <= keys
