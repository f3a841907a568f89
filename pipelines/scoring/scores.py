"""Score files: the per-video logits one stream gives on one subset of one split, handed from evaluation to fusion.

A score file is a plain ``.npz`` (no pickled objects) so that any tool can read it and nothing in it can run code.
Every file is checked where it enters: a damaged or inconsistent file is a one-line ``InputError`` naming it.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow.atomic import atomic_output
from flow.errors import InputError
from pipelines.core.streams import FUSION_ORDER

SUBSETS = ("test", "val", "train")
STREAMS = FUSION_ORDER
REQUIRED_KEYS = ("video_ids", "labels", "logits", "classes", "split", "subset", "stream", "protocol")


@dataclass(frozen=True)
class Scores:
    """One stream's logits on one subset of one split; row ``i`` of every array belongs to ``video_ids[i]``."""

    video_ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, C) float32, raw (before softmax)
    classes: tuple[str, ...]
    split: int
    subset: str
    stream: str
    protocol: str  # how clips were drawn and averaged, e.g. "mars:16"
    features: np.ndarray | None = None  # (N, D) float32, when evaluation was asked for them
    path: Path | None = None  # where it was read from

    @property
    def num_videos(self) -> int:
        return int(self.labels.shape[0])


def _problem(scores: Scores) -> str | None:
    """What makes ``scores`` unusable, or None; one sentence, shared by saving (a bug) and loading (bad input)."""
    n = scores.labels.shape[0] if scores.labels.ndim == 1 else -1
    if scores.video_ids.ndim != 1 or scores.video_ids.dtype.kind != "U":
        return "'video_ids' must be a 1-D array of strings"
    if scores.labels.ndim != 1 or scores.labels.dtype.kind not in "iu":
        return "'labels' must be a 1-D integer array"
    if scores.logits.ndim != 2 or scores.logits.dtype.kind != "f":
        return "'logits' must be a 2-D float array (videos x classes)"
    if n == 0:
        return "holds no videos"
    if scores.video_ids.shape[0] != n or scores.logits.shape[0] != n:
        return (f"row counts disagree: {scores.video_ids.shape[0]} video ids, {n} labels, "
                f"{scores.logits.shape[0]} logit rows")
    if len(set(scores.video_ids.tolist())) != n:
        return "'video_ids' has duplicates"
    if len(scores.classes) == 0 or len(set(scores.classes)) != len(scores.classes):
        return "'classes' must be non-empty and without duplicates"
    if scores.logits.shape[1] != len(scores.classes):
        return f"logits have {scores.logits.shape[1]} columns but there are {len(scores.classes)} classes"
    if scores.labels.min() < 0 or scores.labels.max() >= len(scores.classes):
        return f"labels must lie in 0..{len(scores.classes) - 1}"
    if not np.isfinite(scores.logits).all():
        return "logits hold NaN or infinite values"
    if scores.subset not in SUBSETS:
        return f"subset {scores.subset!r} is not one of {', '.join(SUBSETS)}"
    if scores.stream not in STREAMS:
        return f"stream {scores.stream!r} is not one of {', '.join(STREAMS)}"
    if not scores.protocol:
        return "'protocol' is empty"
    if scores.features is not None and (scores.features.ndim != 2 or scores.features.shape[0] != n
                                        or scores.features.dtype.kind != "f"):
        return "'features' must be a 2-D array with one row per video"
    return None


def save_scores(
    path: str | Path,
    *,
    video_ids: list[str] | np.ndarray,
    labels: list[int] | np.ndarray,
    logits: np.ndarray,
    classes: list[str] | tuple[str, ...],
    split: int,
    subset: str,
    stream: str,
    protocol: str,
    features: np.ndarray | None = None,
) -> Path:
    """Check and write a score file under a temporary name, then rename it into place; returns the path.

    Inconsistent arrays are a bug in the caller, so they raise ``ValueError`` before anything is written.
    """
    path = Path(path)
    scores = Scores(
        video_ids=np.asarray(video_ids, dtype=str),
        labels=np.asarray(labels, dtype=np.int64),
        logits=np.asarray(logits, dtype=np.float32),
        classes=tuple(str(c) for c in classes),
        split=int(split),
        subset=subset,
        stream=stream,
        protocol=protocol,
        features=None if features is None else np.asarray(features, dtype=np.float32),
    )
    problem = _problem(scores)
    if problem:
        raise ValueError(f"cannot save scores to {path}: {problem}")
    arrays = {
        "video_ids": scores.video_ids,
        "labels": scores.labels,
        "logits": scores.logits,
        "classes": np.asarray(scores.classes, dtype=str),
        "split": np.int64(scores.split),
        "subset": np.str_(subset),
        "stream": np.str_(stream),
        "protocol": np.str_(protocol),
    }
    if scores.features is not None:
        arrays["features"] = scores.features
    with atomic_output(path) as handle:
        np.savez(handle, **arrays)
    return path


def _read(path: Path, data: np.lib.npyio.NpzFile, key: str, kind: str, ndim: int) -> np.ndarray:
    """One array of the file with the dtype kind and rank the format promises."""
    value = data[key]
    if value.ndim != ndim or value.dtype.kind not in kind:
        what = {"U": "string", "iu": "integer", "f": "float"}[kind]
        shape = "a single" if ndim == 0 else f"a {ndim}-D"
        raise InputError(path, f"'{key}' must be {shape} {what}{'' if ndim == 0 else ' array'}")
    return value


def load_scores(path: str | Path) -> Scores:
    """Read and check a score file; anything missing, damaged or inconsistent is a one-line ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "score file not found")
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise InputError(path, "not a score file: a single .npy array, not an .npz archive")
    if not magic.startswith(b"PK"):
        raise InputError(path, "not a readable .npz score file (no zip signature: damaged or another format)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in REQUIRED_KEYS if key not in data.files]
            if missing:
                raise InputError(path, f"not a score file: missing {', '.join(missing)}")
            scores = Scores(
                video_ids=_read(path, data, "video_ids", "U", 1),
                labels=_read(path, data, "labels", "iu", 1).astype(np.int64),
                logits=_read(path, data, "logits", "f", 2).astype(np.float32),
                classes=tuple(_read(path, data, "classes", "U", 1).tolist()),
                split=int(_read(path, data, "split", "iu", 0)),
                subset=str(_read(path, data, "subset", "U", 0)),
                stream=str(_read(path, data, "stream", "U", 0)),
                protocol=str(_read(path, data, "protocol", "U", 0)),
                features=_read(path, data, "features", "f", 2) if "features" in data.files else None,
                path=path,
            )
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InputError(path, "holds pickled objects; score files hold plain arrays only") from None
        raise InputError(path, f"not a readable .npz score file ({_first_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, AttributeError, TypeError,
            NotImplementedError) as exc:  # zipfile: a compression method or zip version it cannot read
        raise InputError(path, f"not a readable .npz score file ({_first_line(exc)})") from None
    problem = _problem(scores)
    if problem:
        raise InputError(path, problem)
    return scores


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]
