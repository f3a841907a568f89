"""Two real processes (torchrun, gloo on CPU) against one: same weights, same scores."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli, tiny_train_toml
from pipelines.core.checkpoint import load_checkpoint
from pipelines.core.distributed import batch_plan
from pipelines.scoring.scores import load_scores

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
GLOO_EXIT_ABORT = "terminate called without an active exception"
pytestmark = pytest.mark.numerics


def test_batch_plan_splits_each_step_into_disjoint_parts():
    plan = batch_plan(size=50, batch_size=4, parts=2, seed=3, epoch=1)
    assert len(plan) == 6 and all(len(part) == 4 for step in plan for part in step)
    used = [i for step in plan for part in step for i in part]
    assert len(used) == len(set(used)) == 48
    assert plan == batch_plan(50, 4, 2, 3, 1) and plan != batch_plan(50, 4, 2, 3, 2)


def test_ddp_weights_equal_one_process_accumulating_the_same_micro_batches(synth_store, tmp_path, monkeypatch):
    """Bit for bit: both runs do the same float operations in the same order. Each micro-batch's gradient comes
    from the same kernels at one thread per process (torchrun's default, so the baseline is given one thread too),
    the 1/2 that weights each micro-batch is exact, and a sum of two is the same in either order. With two threads
    the baseline splits its sums otherwise, and AdamW magnifies that rounding to about 1e-5 in two epochs."""
    config = tmp_path / "train.toml"
    config.write_text(tiny_train_toml().replace("batch_size = 8", "batch_size = 4"))
    common = ["train", "--config", str(config), "--stream", "rgb", "--store", str(synth_store.store)]
    two = run_cli(*common, "--out", str(tmp_path / "ddp"), "--nproc", "2")
    assert "rgb epoch 2/2" in two.stdout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_cli(*common, "--out", str(tmp_path / "one"), "--accumulate", "2")
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pth")
    one = load_checkpoint(tmp_path / "one" / "last.pth")
    assert ddp.state_dict.keys() == one.state_dict.keys()
    compared = [key for key in one.state_dict if not key.endswith(BN_BUFFERS)]  # BatchNorm statistics are per rank
    differing = [key for key in compared if not torch.equal(ddp.state_dict[key], one.state_dict[key])]
    assert not differing, f"{len(differing)} of {len(compared)} parameters differ, first {differing[0]}"
    assert len(compared) > 20
    assert not any(key.startswith("module.") for key in ddp.state_dict)


def test_sharded_evaluation_equals_one_process(synth_store, flow_teacher, tmp_path, monkeypatch):
    """Equal to float precision: each rank batches its own share of the clips, so kernels see other batch sizes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as each torchrun process
    args = ["--checkpoint", str(flow_teacher), "--store", str(synth_store.store)]
    run_cli("evaluate", *args, "--out", str(tmp_path / "one.npz"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cli",
               "evaluate", *args, "--out", str(tmp_path / "two.npz")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and GLOO_EXIT_ABORT in result.stderr:
        # Seen rarely before the process group was destroyed at exit; once more, saying so, if it comes back.
        warnings.warn(f"a rank aborted at exit ({GLOO_EXIT_ABORT!r}); launching once more")
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    one, two = load_scores(tmp_path / "one.npz"), load_scores(tmp_path / "two.npz")
    assert list(one.video_ids) == list(two.video_ids)
    assert len(set(two.video_ids)) == len(two.video_ids)
    np.testing.assert_array_equal(one.labels, two.labels)
    np.testing.assert_allclose(one.logits, two.logits, rtol=1e-5, atol=1e-6)
