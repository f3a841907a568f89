"""Device and mixed-precision choices shared by training, evaluation and prediction: one code path for CPU and CUDA."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from flow.errors import InputError

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str, where: str = "--device") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a one-line error rather than a crash later.
    ``where`` names the option or config key in the message."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(None, f"{where} {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"{where} {name!r}: no CUDA device is available here (use cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(None, f"{where} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_device(name: str, where: str, source: str | Path | None = None) -> None:
    """Refuse, when a config file is read, a device this machine lacks; the line names the file and ``where``."""
    try:
        resolve_device(name, where)
    except InputError as exc:
        raise InputError(source, exc.problem) from None


def check_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp not in AMP_DTYPES:
        raise InputError(None, f"--amp {amp!r}: expected one of {', '.join(AMP_DTYPES)}")
    dtype = AMP_DTYPES[amp]
    if dtype is torch.float16 and device.type != "cuda":
        raise InputError(None, "--amp fp16 needs a CUDA device; use bf16 on CPU")
    return dtype


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision when asked for, a no-op otherwise."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
