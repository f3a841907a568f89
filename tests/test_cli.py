"""The command line as users meet it: help for every command, one-line errors, tracebacks only with --debug."""
from __future__ import annotations

import pytest

from conftest import run_cli

COMMANDS = ["synth", "extract-flow", "merge-stores", "verify-store", "train", "evaluate", "fuse", "run", "demo",
            "profile", "models", "report", "attention", "import-frames", "predict", "export", "features"]


def test_every_command_has_help():
    top = run_cli("--help").stdout
    for command in COMMANDS:
        assert command in top
        assert "Usage:" in run_cli(command, "--help").stdout


@pytest.mark.parametrize("args, words", [
    (["train", "--store", "{tmp}/nowhere", "--out", "{tmp}/out"], ["nowhere", "no such flow store"]),
    (["evaluate", "--checkpoint", "{tmp}/missing.pth", "--store", "{tmp}", "--out", "{tmp}/s.npz"],
     ["missing.pth", "checkpoint not found"]),
    (["run", "{tmp}/missing.toml"], ["missing.toml", "not found"]),
])
def test_bad_input_is_one_line(tmp_path, args, words):
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "run", str(tmp_path / "missing.toml"), check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_toml_key_names_file_and_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nepoch = 3\n")
    result = run_cli("train", "--config", str(config), "--store", str(tmp_path), "--out", str(tmp_path / "o"),
                     check=False)
    assert result.returncode == 2
    assert f"{config}: [train] unknown key 'epoch'" in result.stderr and "Traceback" not in result.stderr
