"""The one checkpoint format this project writes (docs/design.md), saved atomically and loaded without pickle code.

A checkpoint alone rebuilds its model: ``arch`` and ``model_kwargs`` go to ``mars_sta.build_model``. Everything
in it is a plain type, a tensor or a list, so ``torch.load(..., weights_only=True)`` reads it; the reading itself
is ``mars_sta.pretrained.read_checkpoint``, the project's one reader of checkpoint files, and ``load_checkpoint``
turns what it read into a ``Checkpoint``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from flow.atomic import atomic_output
from flow.errors import InputError
from pipelines.core.stream_specs import StreamSpec, stream_spec

FORMAT = "mars-sta"
FORMAT_VERSION = 1
LAST, BEST = "last.pth", "best.pth"  # a training run's folder: every epoch, and the best on validation


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


# what each field must hold, so a damaged or hand-made file is refused here rather than deep in a stage
REQUIRED = {"arch": str, "model_kwargs": dict, "state_dict": dict, "stream": str, "classes": (list, tuple)}
OPTIONAL = {"preprocessing": (dict, type(None)), "preprocessing_hash": (str, type(None)), "train_config": dict,
            "epoch": int}


@dataclass(frozen=True)
class Checkpoint:
    """One of this project's checkpoint files, made only by ``load_checkpoint``, which has checked it.

    Args:
        path: the file.
        arch: the registry name; with ``model_kwargs`` it rebuilds the network (``build_model``).
        model_kwargs: the keyword arguments of ``mars_sta.build_model``.
        state_dict: the weights.
        stream: the stream name (``flow``, ``sta-mars``, ...); ``spec`` says what its network reads.
        classes: class names, in label order.
        preprocessing: the training store's preprocessing (absent in files of older versions).
        preprocessing_hash: the hash of that preprocessing.
        train_config: the training config as a dict.
        epoch: epochs trained.
        payload: everything the file holds, resume state included.
    """

    path: Path
    arch: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    stream: str
    classes: list[str]
    preprocessing: dict[str, Any] | None
    preprocessing_hash: str | None
    train_config: dict[str, Any]
    epoch: int
    payload: dict[str, Any] = field(repr=False)

    @property
    def spec(self) -> StreamSpec:
        return stream_spec(self.stream)

    @property
    def normalization(self) -> str:
        return self.train_config.get("normalization", "mars")

    @property
    def sample_duration(self) -> int:
        return int(self.model_kwargs["sample_duration"])

    @property
    def sample_size(self) -> int:
        return int(self.model_kwargs["sample_size"])

    def build_model(self) -> torch.nn.Module:
        """The network this checkpoint describes, with its weights, in eval mode."""
        from mars_sta import build_model

        try:
            model = build_model(self.arch, **self.model_kwargs)
            model.load_state_dict(self.state_dict)
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:  # torch's, for odd keys
            raise InputError(self.path, f"weights do not fit '{self.arch}': {str(exc).splitlines()[0][:200]}") \
                from None
        return model.eval()

    def check_store(self, store: str | Path, preprocessing_hash: str) -> None:
        """Refuse a store extracted with other preprocessing than the training store's."""
        if self.preprocessing_hash not in (None, preprocessing_hash):
            raise InputError(store, "was extracted with other preprocessing than the checkpoint was trained on")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read one of this project's checkpoints; anything else (or a damaged file) is a one-line InputError."""
    from mars_sta.pretrained import CheckpointError, read_checkpoint

    path = Path(path)
    try:
        payload = read_checkpoint(path)
    except CheckpointError as exc:
        raise InputError(path, exc.problem) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, "not a mars-sta checkpoint (no 'format': 'mars-sta'); use load_pretrained for MARS files")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {version!r} is newer than this mars-sta reads"
                         if isinstance(version, int) else f"checkpoint format {version!r} is not a version number")
    _check_fields(path, payload)
    stream_spec(payload["stream"])
    return Checkpoint(
        path=path, arch=payload["arch"], model_kwargs=payload["model_kwargs"], state_dict=payload["state_dict"],
        stream=str(payload["stream"]), classes=[str(name) for name in payload["classes"]],
        preprocessing=payload.get("preprocessing"), preprocessing_hash=payload.get("preprocessing_hash"),
        train_config=payload.get("train_config", {}), epoch=int(payload.get("epoch", 0)), payload=payload)


def _check_fields(path: Path, payload: dict[str, Any]) -> None:
    for key, kind in REQUIRED.items():
        if key not in payload:
            raise InputError(path, f"checkpoint lacks '{key}'")
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        if key in payload and (not isinstance(payload[key], kind) or isinstance(payload[key], bool)):
            raise InputError(path, f"checkpoint field '{key}' holds a {type(payload[key]).__name__}")


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a checkpoint describes (eval mode) and everything the file holds, for exports that copy it."""
    checkpoint = load_checkpoint(path)
    return checkpoint.build_model(), checkpoint.payload


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


def save_train_checkpoint(out: Path, payload: dict[str, Any], is_best: bool, optimizer: torch.optim.Optimizer,
                          scheduler: Any) -> None:
    """End an epoch: ``best.pth`` when it is the best so far, and always ``last.pth`` with what resuming needs
    (optimizer, scheduler and random number generator states)."""
    if is_best:
        save_checkpoint(out / BEST, payload)
    save_checkpoint(out / LAST, {**payload, "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng_state()})


def restore_train_state(checkpoint: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any) -> tuple[int, float]:
    """Restore a run from its ``last.pth`` (weights, optimizer, scheduler, random number generators) and return
    the epoch to start from and the best validation accuracy so far. Whether the file belongs to this run (its
    ``run_key``) is the training stage's to decide before."""
    state = checkpoint.payload
    model.load_state_dict(checkpoint.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"])
    return checkpoint.epoch, state["best_val_acc"]
