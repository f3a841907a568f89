"""Parameter and compute profile (the paper's Tables III and IV) and the ``profile`` / ``models`` commands."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mars_sta import list_models
from mars_sta.profile import profile_model

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def resnext_64f():
    return profile_model("resnext101", sta="layer4", frames=64, size=112, num_classes=51)


def test_table_iii_parameters_and_compute(resnext_64f):
    base, with_sta = resnext_64f.base, resnext_64f.with_attention
    assert base.params == 47_625_715 and base.params_without_classifier == 47_521_216  # the paper's 47.5 × 10^6
    assert with_sta.params - base.params == 3 * (2048 * (4 * 4 + 4) + 5)
    assert round(with_sta.params_without_classifier / 1e6, 1) == 47.6
    assert 38.2e9 < base.macs < 38.3e9  # the paper's 38.5014 "GFLOPs" are multiply-accumulates
    assert base.flops == 2 * base.macs
    assert with_sta.macs - base.macs == sum(cost.macs for cost in resnext_64f.attention)
    assert round((with_sta.macs - base.macs) / 1e9, 4) == 0.0005  # Table III: 38.5014 → 38.5019


def test_table_iv_per_module_counts(resnext_64f):
    assert [cost.name for cost in resnext_64f.attention] == ["layer4.0.sta", "layer4.1.sta", "layer4.2.sta"]
    for cost in resnext_64f.attention:
        c, l, hw = cost.channels, cost.length, cost.height * cost.width
        assert (c, l, cost.height, cost.width) == (2048, 4, 4, 4)
        assert cost.params == cost.table4_params == c * (hw + 4) + 5
        assert cost.table4_mults == c * l * (hw + 4) + 3 * l
        assert cost.macs == c * l * (hw + 3) + 3 * l  # Conv1 + Deconv + Conv2 weights; Table IV also counts c·l more


def test_the_papers_worked_example_c1024_l8_7x7():
    result = profile_model("resnext101", sta="layer4:input:blocks=first", frames=64)
    (cost,) = result.attention
    assert (cost.channels, cost.length, cost.height, cost.width) == (1024, 8, 7, 7)
    assert cost.params == 54_277 and cost.table4_mults == 434_200
    sixteen = profile_model("resnext101", sta=None, frames=16)
    classifier = 2048 * 51
    assert result.base.macs - classifier == 4 * (sixteen.base.macs - classifier)  # every stage keeps T/16, T/8...
    assert sixteen.with_attention is None


def test_profile_cli_prints_json_and_a_table():
    done = run_cli("profile", "--arch", "resnext101", "--sta", "layer4", "--frames", "64", "--size", "112", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["base"]["params"] == 47_625_715 and data["sta"] == "layer4"
    assert data["with_attention"]["params"] - data["base"]["params"] == 122_895
    assert data["base"]["flops"] == 2 * data["base"]["macs"] and "multiply-accumulates" in data["conventions"]["macs"]
    assert [module["table4_params"] for module in data["attention"]] == [40_965] * 3
    table = run_cli("profile", "--arch", "tiny_resnet", "--sta", "layer3:ta", "--size", "32", "--classes", "10",
                    "--in-channels", "2")
    assert table.returncode == 0, table.stderr
    assert "227,466" in table.stdout and "layer3.0.sta" in table.stdout and "GMACs" in table.stdout


def test_profile_cli_rejects_a_bad_spec_in_one_line():
    done = run_cli("profile", "--arch", "resnet18", "--sta", "layer4:stride=two")
    assert done.returncode == 2
    assert "unknown option 'stride=two'" in done.stderr and "Traceback" not in done.stderr


def test_models_cli_lists_the_registry():
    done = run_cli("models")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(list_models())
    assert any(line.startswith("resnext101") and "shortcut B" in line for line in lines)
    assert any(line.startswith("resnet18 ") and "shortcut A" in line for line in lines)
