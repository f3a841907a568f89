"""The one checkpoint format this project writes (docs/design.md), saved atomically and loaded without pickle code.

A checkpoint alone rebuilds its model: ``arch`` and ``model_kwargs`` go to ``mars_sta.build_model``. Everything
in it is a plain type, a tensor or a list, so ``torch.load(..., weights_only=True)`` reads it; the reading itself
is ``mars_sta.pretrained.read_checkpoint``, the project's one reader of checkpoint files, and ``load_checkpoint``
turns what it read into a ``Checkpoint``. Stages describe what they write with ``Checkpoint.make``, which the
training loop saves as ``to_payload()`` (plus the resume state), never a dict of their own.

Format 2: ``epoch`` counts the epochs trained, in every checkpoint, and a detector's own fields lie in one nested
dict, ``detector`` (``SCNNExtras`` or ``RC3DExtras``). Format 1 detector checkpoints (``detector_config`` or
``heads`` at the top, JSON strings, ``epoch`` the 0-based index of the last epoch) are read into the same types.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import torch

from flow.atomic import atomic_output
from flow.errors import InputError
from mars_sta.inputs import InputConfig
from pipelines.core.inputs import check_input
from pipelines.core.manifest import config_hash
from pipelines.core.stream_specs import StreamSpec, stream_spec

FORMAT = "mars-sta"
FORMAT_VERSION = 2
LAST, BEST = "last.pth", "best.pth"  # a training run's folder: every epoch, and the best on validation


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` under a temporary name, fsync, then rename: a kill never leaves half a checkpoint.

    A write that fails (a full disk, ``ulimit -f``) is an OSError naming ``path``; the previous file stays.
    """
    with atomic_output(path) as handle:
        sink = _Sink(handle)
        try:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, cast(IO[bytes], sink))
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None


class _Sink:
    """The file torch.save writes to; keeps the OSError of a failed write, which torch turns into a RuntimeError."""

    def __init__(self, handle: IO[bytes]) -> None:
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
FieldTypes = dict[str, type | tuple[type, ...]]
REQUIRED: FieldTypes = {"arch": str, "model_kwargs": dict, "state_dict": dict, "stream": str, "classes": (list, tuple)}
OPTIONAL: FieldTypes = {"preprocessing": (dict, type(None)), "preprocessing_hash": (str, type(None)),
                        "train_config": dict, "epoch": int, "detector": dict, "run_key": str, "input": dict}


@dataclass(frozen=True)
class SCNNExtras:
    """An S-CNN network's own fields: which of the three it is, the ``DetectorConfig`` it was trained with, and
    (localization network) S-CNN's window-length prior, per class and window length; files written before the
    prior existed have none."""

    network: str
    detector_config: dict[str, Any]
    length_prior: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        fields = {"kind": "scnn", "network": self.network, "detector_config": self.detector_config}
        return fields if self.length_prior is None else {**fields, "length_prior": self.length_prior}


@dataclass(frozen=True)
class RC3DExtras:
    """R-C3D's own fields: the heads' weights and arguments, what the backbone reads, its ``RC3DConfig``, and the
    digest of the checkpoint its training features came from (empty when trained end to end)."""

    heads: dict[str, torch.Tensor]
    heads_kwargs: dict[str, Any]
    reads: dict[str, Any]
    rc3d_config: dict[str, Any]
    features_checkpoint_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "rc3d", "heads": self.heads, "heads_kwargs": self.heads_kwargs, "reads": self.reads,
                "rc3d_config": self.rc3d_config, "features_checkpoint_sha256": self.features_checkpoint_sha256}


DetectorExtras = SCNNExtras | RC3DExtras


@dataclass(frozen=True)
class ResumeState:
    """What continuing a run needs beyond the weights: optimizer, scheduler and random number generator states."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """One of this project's checkpoint files: read by ``load_checkpoint`` (which checks it) or made by
    ``Checkpoint.make`` to be saved.

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
        payload: everything the file holds (empty in one made to be saved).
        run_key: what a run must match to continue this one.
        detector: a detector's own fields; None for a recognition network.
        resume: what continuing the run needs; None in a ``best.pth`` or a file made outside training.
        best_val_acc: the best validation accuracy so far (recognition).
        metrics: the last epoch's metrics row (recognition).
        split: the split trained on (recognition).
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
    payload: dict[str, Any] = field(repr=False, default_factory=dict)
    run_key: str | None = None
    detector: DetectorExtras | None = None
    resume: ResumeState | None = field(repr=False, default=None)
    best_val_acc: float | None = None
    metrics: dict[str, Any] | None = None
    split: int | None = None

    @classmethod
    def make(cls, path: Path, *, arch: str, model_kwargs: dict[str, Any], state_dict: dict[str, torch.Tensor],
             stream: str, classes: list[str], epoch: int, **optional: Any) -> Checkpoint:
        """A checkpoint to be saved at ``path``; ``optional`` takes the other fields by name."""
        defaults: dict[str, Any] = {"preprocessing": None, "preprocessing_hash": None, "train_config": {}}
        return cls(path=path, arch=arch, model_kwargs=dict(model_kwargs), state_dict=state_dict, stream=stream,
                   classes=list(classes), epoch=epoch, **{**defaults, **optional})

    def to_payload(self) -> dict[str, Any]:
        """The plain dict the file holds: what ``weights_only`` loading reads back."""
        payload: dict[str, Any] = {
            "arch": self.arch, "model_kwargs": self.model_kwargs, "state_dict": self.state_dict,
            "stream": self.stream, "classes": self.classes, "epoch": self.epoch, "train_config": self.train_config}
        optional = {"preprocessing": self.preprocessing, "preprocessing_hash": self.preprocessing_hash,
                    "run_key": self.run_key, "best_val_acc": self.best_val_acc, "metrics": self.metrics,
                    "split": self.split, "detector": self.detector.to_dict() if self.detector else None}
        payload.update({key: value for key, value in optional.items() if value is not None})
        payload["input"] = self.input.to_dict()
        return payload

    @property
    def spec(self) -> StreamSpec:
        return stream_spec(self.stream)

    @property
    def normalization(self) -> str:
        """The input normalization trained with (an S-CNN detector keeps it in its config)."""
        if isinstance(self.detector, SCNNExtras):
            return str(self.detector.detector_config.get("normalization", "mars"))
        return str(self.train_config.get("normalization", "mars"))

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

    def build_frozen(self, device: torch.device) -> torch.nn.Module:
        """The network as a teacher: on ``device``, eval mode (BN running statistics), no gradients."""
        model = self.build_model()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model.to(device).eval()

    @property
    def input(self) -> InputConfig:
        """How the network reads its clips: the file's own record, else (files of format 1) what its fields say."""
        recorded = self.payload.get("input")
        if isinstance(recorded, dict):
            try:
                return InputConfig.from_dict(recorded)
            except (TypeError, ValueError) as exc:
                raise InputError(self.path, f"checkpoint field 'input' is damaged: {exc}") from None
        return InputConfig(self.stream, self.sample_duration, self.sample_size, self.normalization,
                           self.preprocessing)

    def reading(self, preprocessing: dict[str, Any]) -> InputConfig:
        """What feeding this network from a store of ``preprocessing`` means: its own clips, that store's flow."""
        return dataclasses.replace(self.input, flow=preprocessing)

    def check_input(self, feeding: InputConfig, store: str | Path | None = None) -> None:
        """Refuse clips other than those the network was trained on (``pipelines.core.inputs.check_input``); a
        file that kept only the hash of its store's preprocessing is checked by the hash."""
        check_input(self.input, feeding, self.path, store)
        if self.preprocessing is None and self.preprocessing_hash not in (None, config_hash(feeding.flow or {})):
            raise InputError(store if store is not None else self.path,
                             "was extracted with other preprocessing than the checkpoint was trained on")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read one of this project's checkpoints; anything else (or a damaged file) is a one-line InputError."""
    from mars_sta.pretrained import CheckpointError, read_checkpoint

    path = Path(path)
    try:
        payload = read_checkpoint(path)
    except CheckpointError as exc:
        raise InputError(path, exc.problem) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, "not a mars-sta checkpoint (no 'format': 'mars-sta'); use load_pretrained for MARS "
                               "files")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {version!r} is newer than this mars-sta reads"
                         if isinstance(version, int) else f"checkpoint format {version!r} is not a version number")
    epoch, detector = _detector_fields(path, payload, version)
    _check_fields(path, payload)
    stream_spec(payload["stream"])
    resume = ResumeState(payload["optimizer"], payload.get("scheduler"), payload["rng"]) \
        if "optimizer" in payload and "rng" in payload else None
    return Checkpoint(
        path=path, arch=payload["arch"], model_kwargs=payload["model_kwargs"], state_dict=payload["state_dict"],
        stream=str(payload["stream"]), classes=[str(name) for name in payload["classes"]],
        preprocessing=payload.get("preprocessing"), preprocessing_hash=payload.get("preprocessing_hash"),
        train_config=payload.get("train_config", {}), epoch=epoch, payload=payload,
        run_key=payload.get("run_key"), detector=detector, resume=resume, best_val_acc=payload.get("best_val_acc"),
        metrics=payload.get("metrics"), split=payload.get("split"))


def _detector_fields(path: Path, payload: dict[str, Any], version: int) -> tuple[int, DetectorExtras | None]:
    """Epochs trained and the detector's fields, of either format (format 1 kept the epoch's 0-based index)."""
    epoch = payload.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise InputError(path, f"checkpoint field 'epoch' holds a {type(epoch).__name__}")
    try:
        if version < 2 and "detector_config" in payload:
            return epoch + 1, SCNNExtras(str(payload["network"]), json.loads(payload["detector_config"]))
        if version < 2 and "heads" in payload:
            return epoch + 1, RC3DExtras(payload["heads"], json.loads(payload["heads_kwargs"]),
                                         json.loads(payload["reads"]), json.loads(payload["rc3d_config"]),
                                         str(payload.get("features_checkpoint_sha256", "")))
        fields = payload.get("detector")
        if not isinstance(fields, dict):
            return epoch, None
        kind = fields.get("kind")
        if kind == "scnn":
            prior = fields.get("length_prior")
            return epoch, SCNNExtras(str(fields["network"]), dict(fields["detector_config"]),
                                     None if prior is None else [[float(v) for v in row] for row in prior])
        if kind == "rc3d":
            return epoch, RC3DExtras(dict(fields["heads"]), dict(fields["heads_kwargs"]), dict(fields["reads"]),
                                     dict(fields["rc3d_config"]), str(fields["features_checkpoint_sha256"]))
    except KeyError as exc:
        raise InputError(path, f"checkpoint's detector fields lack {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"checkpoint's detector fields are damaged: {str(exc)[:120]}") from None
    raise InputError(path, f"checkpoint field 'detector' is of unknown kind {fields.get('kind')!r}")


def _check_fields(path: Path, payload: dict[str, Any]) -> None:
    for key in REQUIRED:
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


def resume_state(optimizer: torch.optim.Optimizer, scheduler: Any) -> ResumeState:
    """The optimizer, scheduler and random number generator states as they are now."""
    return ResumeState(optimizer.state_dict(), scheduler.state_dict() if scheduler else None, rng_state())


def restore_resume_state(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Put back what ``resume_state`` saved; the weights are the caller's (a detector has more than one set)."""
    if checkpoint.resume is None:
        raise InputError(checkpoint.path, "holds no optimizer state to resume from")
    optimizer.load_state_dict(checkpoint.resume.optimizer)
    if scheduler is not None and checkpoint.resume.scheduler is not None:
        scheduler.load_state_dict(checkpoint.resume.scheduler)
    restore_rng_state(checkpoint.resume.rng)
