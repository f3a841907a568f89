"""The one checkpoint format this project writes (docs/design.md), saved atomically and loaded without pickle code.

A checkpoint alone rebuilds its model: ``arch`` and ``model_kwargs`` go to ``mars_sta.build_model``. Everything
in it is a plain type, a tensor or a list, so ``torch.load(..., weights_only=True)`` reads it.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from flow.atomic import atomic_output
from flow.errors import InputError

FORMAT = "mars-sta"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` under a temporary name, fsync, then rename: a kill never leaves half a checkpoint.

    A write that fails (a full disk, ``ulimit -f``) is an OSError naming ``path``; the previous file stays.
    """
    with atomic_output(path) as handle:
        sink = _Sink(handle)
        try:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, sink)
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None


class _Sink:
    """The file torch.save writes to; keeps the OSError of a failed write, which torch turns into a RuntimeError."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one of this project's checkpoints; anything else (or a damaged file) is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise InputError(path, f"refused to load: not a plain-weights checkpoint ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise InputError(path, f"not a readable checkpoint (truncated or corrupt: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, "not a mars-sta checkpoint (no 'format': 'mars-sta'); use load_pretrained for MARS files")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {version!r} is newer than this mars-sta reads"
                         if isinstance(version, int) else f"checkpoint format {version!r} is not a version number")
    for key in ("arch", "model_kwargs", "state_dict"):
        if key not in payload:
            raise InputError(path, f"checkpoint lacks '{key}'")
    return payload


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    from mars_sta import build_model

    payload = load_checkpoint(path)
    try:
        model = build_model(payload["arch"], **payload["model_kwargs"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:  # torch's, for odd keys
        raise InputError(path, f"weights do not fit '{payload['arch']}': {str(exc).splitlines()[0][:200]}") from None
    return model.eval(), payload


def rng_state() -> dict[str, Any]:
    """Random number generator states as tensors (so weights_only loading works)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
