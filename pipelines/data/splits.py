"""Train/test split readers: UCF-101 and HMDB-51 official files, mmaction2 lists, and a CSV for any folder layout.

Every reader returns the same ``Split``: class names and (video id, label) pairs, where a video id is the video's
POSIX path relative to the dataset root without extension (``Biking/v_Biking_g01_c01``), the same id the flow
store uses. Files are checked where they enter, so a bad line fails here with its file and line number instead
of surfacing later as a missing video or a wrong label.
"""
from __future__ import annotations

import csv
import hashlib
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from flow.errors import InputError

# Extensions removed from list entries; anything else stays part of the id (HMDB names contain dots).
VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".ogv", ".3gp"}
)
CSV_COLUMNS = ("video", "class", "subset", "split")
_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>\d+)\.txt$")
_UCF_GROUP = re.compile(r"_g(?P<group>\d+)_c\d+$")  # v_<Class>_g08_c01: clips of one group share a source video
_MMACTION_FILE = re.compile(r"^.+_(?P<subset>train|val)_split_(?P<n>\d+)_(?P<kind>\w+)\.txt$")


@dataclass(frozen=True)
class Split:
    """One numbered train/test partition of a dataset; labels index ``classes``."""

    classes: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    number: int = 1
    source: str = ""

    def subset(self, name: str) -> list[tuple[str, int]]:
        """The ``train`` or ``test`` list by name."""
        if name not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', not {name!r}")
        return self.train if name == "train" else self.test


@dataclass(frozen=True)
class _Entry:
    """A parsed list line, kept with its origin so that later checks can point at it."""

    video: str
    label: int
    path: Path
    line: int

    def fail(self, problem: str) -> InputError:
        return InputError(self.path, f"line {self.line}: {problem}")


def load_split(path: str | Path, split: int = 1) -> Split:
    """Read split number ``split`` from a folder of official split files or from a CSV split file.

    The folder's format is recognised by its files: ``classInd.txt`` (UCF-101), ``<class>_test_splitN.txt``
    (HMDB-51) or ``<name>_{train,val}_split_N_<kind>.txt`` (mmaction2 lists; ``val`` is read as the test list).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such split file or folder")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError(path, "expected a folder of split files or a .csv split file")
        return _read_csv(path, split)
    names = {p.name for p in path.iterdir() if p.is_file()}
    if "classInd.txt" in names:
        return _read_ucf(path, split)
    if any(_HMDB_FILE.match(n) for n in names):
        return _read_hmdb(path, split)
    if any(_MMACTION_FILE.match(n) for n in names):
        return _read_mmaction(path, split)
    raise InputError(
        path,
        "no split files found (expected classInd.txt with trainlist0N/testlist0N.txt, "
        "<class>_test_splitN.txt files, <name>_train_split_N_<kind>.txt lists, or pass a .csv file)",
    )


@dataclass(frozen=True)
class ValidationSplit:
    """A training list split into the part trained on and the held-out validation part, and how it was chosen."""

    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    method: str  # "groups" (no source-video group on both sides), "class-stratified" or "none"


def video_group(video: str) -> str | None:
    """The UCF-101 group of a video id (``.../v_Biking_g08_c01`` → ``"08"``), or None when it names none."""
    match = _UCF_GROUP.search(video.rsplit("/", 1)[-1])
    return match["group"] if match else None


def hold_out_validation(train: list[tuple[str, int]], fraction: float = 0.1, seed: int = 0) -> ValidationSplit:
    """Hold out about ``fraction`` of a training list for validation, without leaking source videos.

    UCF-101's clips of one group are cut from one long video, so where every video names a group the held-out part
    is whole groups, stratified by class (scikit-learn's ``StratifiedGroupKFold``, one fold of about 1/fraction);
    otherwise (HMDB-51, other lists) it falls back to ``val_subset``'s per-class choice. Each class keeps at least
    one training video.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), not {fraction}")
    if fraction == 0.0:
        return ValidationSplit(list(train), [], "none")
    groups = [video_group(video) for video, _ in train]
    keys = {(label, group) for (_, label), group in zip(train, groups)}
    folds = max(2, round(1.0 / fraction))
    largest_class = max(Counter(label for _, label in train).values(), default=0)
    if None in groups or len(keys) < folds or largest_class < folds:  # scikit-learn needs one class of >= folds
        rest, val = val_subset(train, fraction, seed)
        return ValidationSplit(rest, val, "class-stratified")
    held = _held_out_groups(train, groups, folds, seed)
    return ValidationSplit([item for item in train if item[0] not in held],
                           [item for item in train if item[0] in held], "groups")


def _held_out_groups(train: list[tuple[str, int]], groups: list[str | None], folds: int, seed: int) -> set[str]:
    """Video ids of the first fold of a seeded class-stratified group k-fold (list order does not matter)."""
    order = sorted(range(len(train)), key=lambda i: train[i][0])
    labels = np.array([train[i][1] for i in order])
    group_keys = [f"{train[i][1]}:{groups[i]}" for i in order]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes smaller than the fold count are expected here
        _, fold = next(splitter.split(np.zeros(len(order)), labels, group_keys))
    held = {train[order[i]][0] for i in fold}
    for label in set(labels.tolist()):  # a class whose every group fell in the fold keeps them for training
        videos = {video for video, lab in train if lab == label}
        if videos <= held:
            held -= videos
    return held


def val_subset(
    train: list[tuple[str, int]], fraction: float = 0.1, seed: int = 0
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Hold out a class-stratified ``fraction`` of a training list; returns (train_rest, val) in list order.

    Videos are ranked by a hash of (seed, video id), so the choice depends on nothing else: not on the list's
    order, the Python or NumPy version, or other classes. Each class keeps at least one training video, and a
    class with two or more videos gives at least one to validation.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), not {fraction}")
    if fraction == 0.0:
        return list(train), []
    by_class: dict[int, list[str]] = defaultdict(list)
    for video, label in train:
        by_class[label].append(video)
    held: set[str] = set()
    for videos in by_class.values():
        count = min(len(videos) - 1, max(1, round(fraction * len(videos))))
        ranked = sorted(videos, key=lambda v: hashlib.sha256(f"{seed}\0{v}".encode()).hexdigest())
        held.update(ranked[:count])
    return [item for item in train if item[0] not in held], [item for item in train if item[0] in held]


# ---------------------------------------------------------------- shared helpers


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; tolerates a BOM, CRLF and trailing spaces."""
    if not path.is_file():
        raise InputError(path, "missing split file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise InputError(path, "empty split file")
    return lines


def _video_id(raw: str, path: Path, line: int) -> str:
    """Turn a list entry into a video id; refuses paths that leave the dataset root."""
    text = raw.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise InputError(path, f"line {line}: absolute path {raw!r} (paths must be relative to the dataset root)")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(path, f"line {line}: path {raw!r} leaves the dataset root")
    if not parts:
        raise InputError(path, f"line {line}: empty video path")
    stem, dot, ext = parts[-1].rpartition(".")
    if dot and stem and f".{ext.lower()}" in VIDEO_EXTENSIONS:
        parts[-1] = stem
    return "/".join(parts)


def _int(text: str, what: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(path, f"line {line}: {what} {text!r} is not an integer") from None


def _class_folder(video: str, path: Path, line: int) -> str:
    if "/" not in video:
        raise InputError(path, f"line {line}: expected <class>/<video>, got {video!r}")
    return video.split("/", 1)[0]


def _check_unique(entries: list[_Entry]) -> None:
    seen: dict[str, _Entry] = {}
    for entry in entries:
        if entry.video in seen:
            first = seen[entry.video]
            raise entry.fail(f"duplicate video {entry.video!r} (first listed at {first.path.name}:{first.line})")
        seen[entry.video] = entry


def _finish(classes: list[str], train: list[_Entry], test: list[_Entry], number: int, source: Path) -> Split:
    """Common checks for every format: no duplicates, no video in both subsets."""
    _check_unique(train)
    _check_unique(test)
    in_train = {e.video: e for e in train}
    for entry in test:
        if entry.video in in_train:
            other = in_train[entry.video]
            raise entry.fail(
                f"video {entry.video!r} is in both train ({other.path.name}:{other.line}) and test of split {number}"
            )
    return Split(
        classes=list(classes),
        train=[(e.video, e.label) for e in train],
        test=[(e.video, e.label) for e in test],
        number=number,
        source=str(source),
    )


# ---------------------------------------------------------------- UCF-101


def _read_ucf(folder: Path, number: int) -> Split:
    classes = _read_class_index(folder / "classInd.txt")
    index = {name: i for i, name in enumerate(classes)}
    train = _read_ucf_list(folder / f"trainlist0{number}.txt", index)
    test = _read_ucf_list(folder / f"testlist0{number}.txt", index)
    return _finish(classes, train, test, number, folder)


def _read_class_index(path: Path) -> list[str]:
    """``<1-based index> <Class>`` lines; indices must run 1..C."""
    by_index: dict[int, str] = {}
    names: set[str] = set()
    for line, text in _read_lines(path):
        fields = text.split()
        if len(fields) != 2:
            raise InputError(path, f"line {line}: expected '<index> <ClassName>', got {text!r}")
        idx = _int(fields[0], "class index", path, line)
        if idx in by_index:
            raise InputError(path, f"line {line}: class index {idx} listed twice")
        if fields[1] in names:
            raise InputError(path, f"line {line}: class {fields[1]!r} listed twice")
        by_index[idx] = fields[1]
        names.add(fields[1])
    expected = list(range(1, len(by_index) + 1))
    if sorted(by_index) != expected:
        missing = sorted(set(expected) - set(by_index))
        raise InputError(path, f"class indices must run 1..{len(by_index)}; missing {missing[:5]}")
    return [by_index[i] for i in expected]


def _read_ucf_list(path: Path, index: dict[str, int]) -> list[_Entry]:
    """``<Class>/<video>.avi [<1-based label>]`` lines; the label, when given, must match the class folder."""
    entries = []
    for line, text in _read_lines(path):
        fields = text.split()
        if len(fields) > 2:
            raise InputError(path, f"line {line}: expected '<Class>/<video>.avi [<label>]', got {text!r}")
        video = _video_id(fields[0], path, line)
        folder = _class_folder(video, path, line)
        if folder not in index:
            raise InputError(path, f"line {line}: unknown class {folder!r} (not in classInd.txt)")
        label = index[folder]
        if len(fields) == 2:
            given = _int(fields[1], "label", path, line)
            if not 1 <= given <= len(index):
                raise InputError(path, f"line {line}: label {given} out of range 1..{len(index)}")
            if given - 1 != label:
                raise InputError(
                    path, f"line {line}: label {given} disagrees with class folder {folder!r} (index {label + 1})"
                )
        entries.append(_Entry(video, label, path, line))
    return entries


# ---------------------------------------------------------------- HMDB-51


def _read_hmdb(folder: Path, number: int) -> Split:
    """``<class>_test_splitN.txt`` files with ``<video>.avi <flag>`` lines (1 train, 2 test, 0 unused)."""
    files = [m for m in (_HMDB_FILE.match(p.name) for p in folder.iterdir()) if m]
    classes = sorted({m["cls"] for m in files})
    train: list[_Entry] = []
    test: list[_Entry] = []
    for label, name in enumerate(classes):
        path = folder / f"{name}_test_split{number}.txt"
        for line, text in _read_lines(path):
            fields = text.rsplit(None, 1)
            if len(fields) != 2:
                raise InputError(path, f"line {line}: expected '<video>.avi <flag>', got {text!r}")
            if fields[1] not in ("0", "1", "2"):
                raise InputError(path, f"line {line}: flag {fields[1]!r} must be 0 (unused), 1 (train) or 2 (test)")
            video = _video_id(f"{name}/{fields[0]}", path, line)
            if not video.startswith(f"{name}/"):
                raise InputError(path, f"line {line}: path {fields[0]!r} leaves the class folder")
            if fields[1] != "0":
                (train if fields[1] == "1" else test).append(_Entry(video, label, path, line))
    return _finish(classes, train, test, number, folder)


# ---------------------------------------------------------------- mmaction2 lists


def _read_mmaction(folder: Path, number: int) -> Split:
    """``<path> <label>`` or ``<path> <num_frames> <label>`` lines (0-based labels); classes are the folders."""
    lists: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _MMACTION_FILE.match(path.name)
        if match and int(match["n"]) == number:
            lists.setdefault(match["subset"], path)
    for subset in ("train", "val"):
        if subset not in lists:
            raise InputError(folder, f"no <name>_{subset}_split_{number}_<kind>.txt list for split {number}")
    train = _read_mmaction_list(lists["train"])
    test = _read_mmaction_list(lists["val"])
    folder_of: dict[int, _Entry] = {}
    label_of: dict[str, _Entry] = {}
    for entry in train + test:
        folder = _class_folder(entry.video, entry.path, entry.line)
        first = folder_of.setdefault(entry.label, entry)
        if _class_folder(first.video, first.path, first.line) != folder:
            where = f"{first.path.name}:{first.line}"
            raise entry.fail(f"label {entry.label} disagrees with class folder {folder!r} (see {where})")
        first = label_of.setdefault(folder, entry)
        if first.label != entry.label:
            where = f"{first.path.name}:{first.line}"
            raise entry.fail(f"class folder {folder!r} has label {entry.label} here, {first.label} at {where}")
    missing = sorted(set(range(max(folder_of) + 1)) - set(folder_of))
    if missing:
        raise InputError(lists["train"], f"labels must run 0..{max(folder_of)}; no video has label {missing[0]}")
    classes = [_class_folder(folder_of[i].video, folder_of[i].path, folder_of[i].line) for i in sorted(folder_of)]
    return _finish(classes, train, test, number, folder)


def _read_mmaction_list(path: Path) -> list[_Entry]:
    entries = []
    for line, text in _read_lines(path):
        fields = text.split()
        if len(fields) not in (2, 3):
            raise InputError(path, f"line {line}: expected '<path> [<num_frames>] <label>' (one label), got {text!r}")
        if len(fields) == 3:
            _int(fields[1], "frame count", path, line)
        label = _int(fields[-1], "label", path, line)
        if label < 0:
            raise InputError(path, f"line {line}: label {label} out of range (labels start at 0)")
        entries.append(_Entry(_video_id(fields[0], path, line), label, path, line))
    return entries


# ---------------------------------------------------------------- CSV


def _read_csv(path: Path, number: int) -> Split:
    """Header ``video,subset`` plus optional ``class`` and ``split`` columns, one row per video and split.

    ``video`` is relative to the dataset root; the class is its first folder unless a ``class`` column names it
    (they must agree when both exist); ``subset`` is ``train`` or ``test``; ``split`` defaults to 1. Classes are
    sorted by name over the whole file, so labels are the same in every split.
    """
    lines = _read_lines(path)
    rows = list(csv.reader([text for _, text in lines]))
    header = [h.strip().lower() for h in rows[0]]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise InputError(path, f"line {lines[0][0]}: unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})")
    for required in ("video", "subset"):
        if required not in header:
            raise InputError(path, f"line {lines[0][0]}: missing column {required!r} (header: {','.join(header)})")
    if len(set(header)) != len(header):
        raise InputError(path, f"line {lines[0][0]}: a column is named twice")
    parsed: list[tuple[str, str, str, int, int]] = []  # video, class, subset, split, line
    for (line, _), row in zip(lines[1:], rows[1:]):
        if len(row) != len(header):
            raise InputError(path, f"line {line}: {len(row)} fields, header has {len(header)}")
        cell = {h: v.strip() for h, v in zip(header, row)}
        video = _video_id(cell["video"], path, line)
        named = cell.get("class", "")
        folder = video.split("/", 1)[0] if "/" in video else ""
        if named and folder and named != folder:
            raise InputError(path, f"line {line}: class {named!r} disagrees with class folder {folder!r}")
        if not (named or folder):
            raise InputError(path, f"line {line}: video {video!r} has no class folder and no class column")
        subset = cell["subset"].lower()
        if subset not in ("train", "test"):
            raise InputError(path, f"line {line}: subset {cell['subset']!r} must be 'train' or 'test'")
        split = _int(cell["split"], "split", path, line) if cell.get("split") else 1
        parsed.append((video, named or folder, subset, split, line))
    if not parsed:
        raise InputError(path, "no rows after the header")
    classes = sorted({cls for _, cls, _, _, _ in parsed})
    index = {name: i for i, name in enumerate(classes)}
    chosen = [p for p in parsed if p[3] == number]
    if not chosen:
        present = sorted({p[3] for p in parsed})
        raise InputError(path, f"no rows for split {number} (splits in file: {', '.join(map(str, present))})")
    train = [_Entry(v, index[c], path, n) for v, c, s, _, n in chosen if s == "train"]
    test = [_Entry(v, index[c], path, n) for v, c, s, _, n in chosen if s == "test"]
    return _finish(classes, train, test, number, path)
