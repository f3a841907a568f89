"""Exporting a trained checkpoint for use outside this project.

``mars``: the file MARS's and 3D-ResNets' (CVPR 2018) training scripts write and read, ``{'epoch', 'arch',
'state_dict', 'optimizer'}`` with ``nn.DataParallel``'s ``module.`` key prefix and an arch string such as
``resnext-101``, so their ``--pretrain_path`` / ``--resume_path`` and ``mars_sta.load_pretrained`` accept it.

``torch-export``: a ``torch.export`` program of the inference network (eval mode, clips in, raw logits out, any batch
size), saved with ``torch.export.save``; ``torch.export.load`` runs it with nothing but PyTorch installed. The class
names, input layout, normalisation and store preprocessing ride along as ``mars_sta.json`` in the file's extra files.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from flow.atomic import atomic_output
from mars_sta.authors_layout import to_authors_layout
from flow.errors import InputError, write_error
from pipelines.core import checkpoint as ckpt
from pipelines.data.clips import Normalization

FORMATS = ("mars", "torch-export")
METADATA = "mars_sta.json"  # extra file of a torch-export program
EXAMPLE_BATCH = 2  # the traced batch size; the exported program takes any


def mars_arch(name: str) -> str:
    """The arch string MARS / 3D-ResNets record: ``resnext101`` → ``resnext-101``; names without a depth stay."""
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    return f"{match[1]}-{match[2]}" if match else name


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike) -> dict[str, Any]:
    """Write ``checkpoint`` in format ``fmt`` to ``out``; returns a few facts about what was written."""
    if fmt not in FORMATS:
        raise InputError(None, f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    model, payload = ckpt.model_from_checkpoint(checkpoint)
    out = Path(out)
    try:
        if fmt == "mars":
            with atomic_output(out) as handle:
                torch.save(mars_payload(payload), handle)
            arch = mars_arch(payload["arch"])
        else:
            program = export_program(model)
            extra = {METADATA: json.dumps(export_metadata(payload), indent=2)}
            with atomic_output(out) as handle:
                torch.export.save(program, handle, extra_files=extra)
            arch = payload["arch"]
    except OSError as exc:
        raise write_error(out, exc) from None
    return {"format": fmt, "out": str(out), "arch": arch, "stream": payload.get("stream"),
            "classes": len(payload.get("classes", [])), "bytes": out.stat().st_size}


def mars_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict as MARS's ``train.py`` saves it (no optimizer state: the file is for fine-tuning and
    testing, not for resuming); attention with the authors' BatchNorms (``sta=...:bn``) takes the key names and
    kernel shapes of their STA-MARS code."""
    state = to_authors_layout(payload["state_dict"])
    return {
        "epoch": int(payload.get("epoch", 0)),
        "arch": mars_arch(payload["arch"]),
        "state_dict": {f"module.{key}": value for key, value in state.items()},
        "optimizer": None,
    }


def export_program(model: torch.nn.Module) -> torch.export.ExportedProgram:
    """``model`` in eval mode traced on a (batch, C, T, H, W) clip, with the batch size left free."""
    kwargs = model.build_kwargs
    size = kwargs["sample_size"]
    example = torch.zeros(EXAMPLE_BATCH, kwargs["in_channels"], kwargs["sample_duration"], size, size)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        # STA keeps its last attention weights for plotting; tracing that assignment is harmless
        warnings.filterwarnings("ignore", message=r"The tensor attributes? .*last_weights")
        return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))


def export_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """What a user of the exported program needs to feed it and read its output."""
    kwargs = payload["model_kwargs"]
    preprocessing = payload.get("preprocessing") or {}
    normalization = payload.get("train_config", {}).get("normalization", "mars")
    return {
        "arch": payload["arch"],
        "stream": payload.get("stream"),
        "classes": list(payload.get("classes", [])),
        "input": {"layout": "float32 (N, C, T, H, W)", "channels": kwargs["in_channels"],
                  "frames": kwargs["sample_duration"], "size": kwargs["sample_size"]},
        "normalization": {"name": normalization, **dataclasses.asdict(
            Normalization.named(normalization, float(preprocessing.get("bound", 20.0))))},
        "output": "raw logits (N, classes); the MARS protocol averages them over a video's clips",
        "preprocessing": preprocessing,
        "model_kwargs": kwargs,
    }
