"""The training loop's TensorBoard scalars, read back from a real tiny run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_tensorboard_scalars_equal_the_metrics_log(flow_teacher):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = Path(flow_teacher).parent
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("loss", "train_acc", "val_acc", "val_loss", "lr"):
        scalars = events.Scalars(f"flow/epoch/{key}")
        assert [s.step for s in scalars] == [row["epoch"] for row in rows]
        # stored as float32: equal to the log's float64 within float32's rounding
        assert [s.value for s in scalars] == pytest.approx([row[key] for row in rows], rel=2 ** -23)
