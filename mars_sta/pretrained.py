"""Load weights from MARS / 3D-ResNets checkpoints, plain state_dicts and this project's own checkpoint files.

Files are read with ``torch.load(..., map_location="cpu", weights_only=True)``: a pickle that would run code is
refused. What happened is logged and returned as a ``LoadReport``; what cannot work (another architecture, an
unreadable file) raises ``CheckpointError`` with one line ``"<path>: <problem>"``.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mars_sta.authors_layout import from_authors_layout, has_authors_keys
from mars_sta.registry import list_models, model_entry

log = logging.getLogger(__name__)

IN_MEMORY = "<state_dict>"
ADAPT_INPUT_CHOICES = ("average", None)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; ``str()`` is ``"<path>: <problem>"`` on one line."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}")


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: tensors loaded, keys left out on either side, layers replaced or adapted."""

    source: str
    file_arch: str | None
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    classifier_replaced: bool = False
    input_adapted: str | None = None
    authors_layout: bool = False

    def __str__(self) -> str:
        parts = [f"{self.source}: loaded {self.loaded} tensors"]
        if self.file_arch:
            parts.append(f"arch {self.file_arch}")
        if self.classifier_replaced:
            parts.append("classifier replaced (class count differs)")
        if self.input_adapted:
            parts.append(self.input_adapted)
        if self.authors_layout:
            parts.append("attention read from the STA-MARS authors' layout (fa.*)")
        if self.missing:
            parts.append(f"{len(self.missing)} model keys not in the file (e.g. {self.missing[0]})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} file keys unused (e.g. {self.unexpected[0]})")
        return "; ".join(parts)


def registry_arch(arch: str) -> str | None:
    """The registry name of an arch string from a checkpoint (``resnext-101`` → ``resnext101``), or None."""
    known = set(list_models())
    for candidate in (arch, arch.lower().replace("-", "")):
        if candidate in known:
            return candidate
    return None


def load_pretrained(
    model: nn.Module,
    path_or_state: str | os.PathLike | dict,
    *,
    adapt_input: str | None = "average",
    strict: bool = True,
) -> LoadReport:
    """Load weights into ``model`` and report what was done.

    Args:
        model: a network from ``build_model`` (or any module with the same key names).
        path_or_state: a checkpoint file (this project's, MARS's, 3D-ResNets', the STA-MARS authors') or a dict.
        adapt_input: ``"average"`` converts ``conv1`` between RGB and flow; ``None`` makes that an error.
        strict: require every backbone key to match (attention and BN counters excepted).

    * The classifier (the registry entry's ``classifier``: ``fc``; ``fc8`` for C3D) keeps its fresh weights when
      the class counts differ (fine-tuning).
    * ``adapt_input="average"`` converts the entry's ``first_conv`` (``conv1``) between RGB (3 channels) and flow
      (2 channels) by the cross-modality average: the mean over the file's input channels, repeated for each of
      the model's. ``None`` makes a channel mismatch an error.
    * Attention keys (any ``sta`` component) may be missing or unused: a plain network's weights load into one with
      STA, whose modules keep their initialisation. BN ``num_batches_tracked`` counters (absent in files written
      before PyTorch 0.4.1) may be missing too.
    * The STA-MARS authors' attention keys (``layer4.<i>.fa.conv3d_1_fa.*`` …) load into ``sta="layer4:bn"``
      (``mars_sta.authors_layout``).
    * With ``strict=True`` every other key must match in name and shape, otherwise ``CheckpointError`` names the
      first mismatch; ``strict=False`` loads what matches and reports the rest.
    """
    if adapt_input not in ADAPT_INPUT_CHOICES:
        raise ValueError(f"adapt_input must be 'average' or None, got {adapt_input!r}")
    raw: object
    if isinstance(path_or_state, dict):
        source, raw = IN_MEMORY, path_or_state
    else:
        source, raw = os.fspath(path_or_state), read_checkpoint(path_or_state)
    state, file_arch = _unwrap(raw, source)
    _check_arch(model, file_arch, source)
    remap = getattr(model, "remap_checkpoint_keys", None)
    if remap is not None:
        state = remap(state)

    target = model.state_dict()
    authors_layout = has_authors_keys(state)
    if authors_layout:
        state = from_authors_layout(state, target)
    report = LoadReport(source, file_arch, loaded=0, authors_layout=authors_layout)
    classifier, _ = _treated_apart(model)
    loadable = _loadable_tensors(model, state, report, adapt_input, strict)
    replaced = f"{classifier}." if report.classifier_replaced else None
    report.missing = [key for key in target if key not in loadable and not (replaced and key.startswith(replaced))]
    if strict:
        _check_backbone_keys(report, source, model)
    model.load_state_dict(loadable, strict=False)
    report.loaded = len(loadable)
    _log(report)
    return report


def _loadable_tensors(model: nn.Module, state: dict[str, torch.Tensor], report: LoadReport,
                      adapt_input: str | None, strict: bool) -> dict[str, torch.Tensor]:
    """The file's tensors that fit the model (the input conv adapted where asked); the rest go into ``report``."""
    target = model.state_dict()
    classifier, first_conv = _treated_apart(model)
    input_key, source = f"{first_conv}.weight", report.source
    loadable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif value.shape == target[key].shape:
            loadable[key] = value
        elif key.startswith(f"{classifier}."):
            report.classifier_replaced = True
        elif key == input_key and value.shape[:1] + value.shape[2:] == target[key].shape[:1] + target[key].shape[2:]:
            loadable[key] = _adapt_input_conv(value, target[key].shape[1], adapt_input, key, source)
            report.input_adapted = f"{key} adapted from {value.shape[1]} to {target[key].shape[1]} input channels"
        elif strict:
            raise CheckpointError(source, f"{key} is {tuple(value.shape)} in the file but {tuple(target[key].shape)} "
                                          f"in the model ({_model_name(model)}): another architecture?")
        else:
            report.unexpected.append(key)
    return loadable


def read_checkpoint(path: str | os.PathLike) -> object:
    """What a checkpoint file holds, read with ``weights_only=True``: the project's one ``torch.load`` of a file.

    Anything that cannot be read (missing, a folder, empty, truncated, a pickle that would run code) is a
    ``CheckpointError`` of one line; what the content means is the caller's to check.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "checkpoint not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "not a readable checkpoint: the file is empty")
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head.startswith((_ZIP_START, _PICKLE_START)):
        raise CheckpointError(path, _CUT_SHORT_ZIP if _ZIP_START.startswith(head) else _other_format(head))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise CheckpointError(path, _damage(path, head, exc)) from None
        culprit = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"it would call {culprit.group(1)}" if culprit else "it holds more than tensors and plain containers"
        raise CheckpointError(path, f"refused to unpickle: {what} (only weights-only files are read)") from None
    except PermissionError as exc:
        raise CheckpointError(path, f"cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - torch reports damaged files with many exception types
        raise CheckpointError(path, _damage(path, head, exc)) from None


# torch.save writes a zip archive (a pickle before PyTorch 1.6, as some tools still do); a file that starts otherwise
# is another kind of file, named when it is one that users of this project have at hand.
_ZIP_START, _PICKLE_START = b"PK\x03\x04", b"\x80"
_KNOWN_STARTS = {b"\x89HDF\r\n\x1a\n": "an HDF5 file (a flow-store video?)", b"\x93NUMPY": "a NumPy .npy array",
                 b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"RIFF": "a RIFF file (an AVI video?)",
                 b"\x1a\x45\xdf\xa3": "a Matroska or WebM video"}
_TEXT_CONTROLS = frozenset(b"\t\n\r\f")
_CUT_SHORT_ZIP = "not a readable checkpoint: the file is cut short or damaged (the end of its zip archive is missing)"


def _other_format(head: bytes) -> str:
    """Why a file is no checkpoint, naming what it is by its first bytes where that is known."""
    known = next((name for start, name in _KNOWN_STARTS.items() if head.startswith(start)), None)
    if known is None and all(byte >= 0x20 or byte in _TEXT_CONTROLS for byte in head):
        known = "a text file"
    if known:
        return f"is not a PyTorch checkpoint: it is {known}, not the zip archive torch.save writes"
    return "is not a PyTorch checkpoint: torch.save writes a zip archive (or a pickle), and this file is neither"


def _damage(path: Path, head: bytes, exc: BaseException) -> str:
    """What is wrong, in words, with a file that starts as a checkpoint does but that torch cannot read."""
    if head.startswith(_PICKLE_START):
        return "not a readable checkpoint: the file is cut short or damaged (its pickled data ends early or is garbled)"
    if not zipfile.is_zipfile(path):
        return _CUT_SHORT_ZIP
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.rpartition("/")[2] == "data.pkl" for name in archive.namelist()):
                return ("is not a PyTorch checkpoint: it is a zip archive without the data.pkl that torch.save writes "
                        "(a NumPy .npz?)")
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        damaged = "a part"
    if damaged:
        return f"not a readable checkpoint: the file is damaged ({damaged} inside it fails its checksum)"
    return f"not a readable checkpoint: torch cannot read it ({_first_line(str(exc)) or type(exc).__name__})"


def _treated_apart(model: nn.Module) -> tuple[str, str]:
    """The classifier and first conv named by the model's registry entry (``fc`` and ``conv1`` for other models)."""
    arch = getattr(model, "arch", None)
    entry = model_entry(arch) if arch in list_models() else None
    return (entry.classifier, entry.first_conv) if entry else ("fc", "conv1")


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unwrap(raw: object, source: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state_dict (prefixes ``module.`` removed) and the arch string recorded in the file, if any."""
    if not isinstance(raw, dict):
        raise CheckpointError(source, f"not a checkpoint (a {type(raw).__name__}, expected a dict)")
    if "state_dict" in raw:
        state, arch = raw["state_dict"], raw.get("arch")
        if not isinstance(state, dict):
            raise CheckpointError(source, "its 'state_dict' entry is not a dict")
    else:
        state, arch = raw, None
    if not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(source, "no state_dict of tensors in this file")
    if not all(isinstance(key, str) for key in state):
        raise CheckpointError(source, "state_dict keys must be parameter names (strings)")
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        stripped[key] = value
    return stripped, arch if isinstance(arch, str) else None


def _check_arch(model: nn.Module, file_arch: str | None, source: str) -> None:
    model_arch = getattr(model, "arch", None)
    known = registry_arch(file_arch) if file_arch else None
    if known and model_arch and known != model_arch:
        raise CheckpointError(source, f"{file_arch} checkpoint, model is {model_arch}")


def _adapt_input_conv(
    weight: torch.Tensor, channels: int, adapt_input: str | None, key: str, source: str
) -> torch.Tensor:
    if adapt_input is None:
        raise CheckpointError(source, f"{key} has {weight.shape[1]} input channels, the model {channels} "
                                      f"(adapt_input='average' would convert them)")
    return weight.mean(dim=1, keepdim=True).repeat(1, channels, *([1] * (weight.dim() - 2)))


def _is_attention_key(key: str) -> bool:
    return "sta" in key.split(".")


def _tolerated_missing(key: str) -> bool:
    return _is_attention_key(key) or key.endswith(".num_batches_tracked")


def _check_backbone_keys(report: LoadReport, source: str, model: nn.Module) -> None:
    missing = [key for key in report.missing if not _tolerated_missing(key)]
    unexpected = [key for key in report.unexpected if not _is_attention_key(key)]
    if missing:
        raise CheckpointError(source, f"the file lacks {len(missing)} of the model's keys, first {missing[0]} "
                                      f"({_model_name(model)}: another architecture or shortcut type?)")
    if unexpected:
        raise CheckpointError(source, f"the file has {len(unexpected)} keys the model lacks, first {unexpected[0]} "
                                      f"({_model_name(model)}: another architecture or shortcut type?)")


def _model_name(model: nn.Module) -> str:
    kwargs = getattr(model, "build_kwargs", {})
    arch = getattr(model, "arch", type(model).__name__)
    return f"{arch}, shortcut {kwargs['shortcut']}" if kwargs.get("shortcut") else arch


def _log(report: LoadReport) -> None:
    log.info("%s", report)
    for key in report.missing:
        log.info("%s: not in the file, keeps its initialisation: %s", report.source, key)
    for key in report.unexpected:
        log.info("%s: unused key of the file: %s", report.source, key)
