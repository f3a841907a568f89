"""Temporal annotations as users download them: a THUMOS'14 folder or an ActivityNet-style JSON, in one structure.

THUMOS'14 ships one ``<Class>_<subset>.txt`` per class (lines ``video start end``, seconds, one or more spaces)
and ``Ambiguous_<subset>.txt`` for stretches that are neither action nor background; ActivityNet puts everything
in ``{"database": {video: {"subset", "duration", "annotations": [{"segment": [s, e], "label"}]}}}``. Both are read
into :class:`Annotations`, checked line by line, so that a bad entry stops the command before any work with one
line naming the file and the line (or, in a JSON, the entry). A segment that runs past its video's end, as a few
of THUMOS'14's own do, is clipped to the video with one warning line instead.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from flow.errors import InputError
from flow.store import FlowStore

AMBIGUOUS = "Ambiguous"
# Subset names of the two formats: THUMOS'14 file suffixes and ActivityNet's "subset" values.
SUBSET_ALIASES = {"test": "testing", "val": "validation", "train": "training"}
SUBSET_NAMES = (*SUBSET_ALIASES, *SUBSET_ALIASES.values())
CLASS_LIST_FILE = "detclasslist.txt"  # the THUMOS'14 toolkit's "<id> <Class>" list, used when present
# A segment may end this far past the video (seconds): annotation times are rounded to 0.1 s, frame counts are not.
DURATION_SLACK_S = 0.1
Warn = Callable[[str], None]


_WARNED: set[str] = set()  # the lines warn_on_stderr printed in this process


def warn_on_stderr(line: str) -> None:
    """Where the readers' warning lines go by default: one line on stderr, as the CLI prints them, once per process
    (``run`` reads the same annotations in several stages; each clipped segment is still said once)."""
    if line not in _WARNED:
        _WARNED.add(line)
        print(line, file=sys.stderr)


_FILE_PATTERN = re.compile(r"^(?P<label>.+)_(?P<subset>val|test|train|validation|testing|training)\.txt$")


@dataclass(frozen=True)
class Segment:
    """One annotated instance, in seconds; ``where`` names its file and line for error messages."""

    start: float
    end: float
    label: str
    where: str


@dataclass
class VideoAnnotation:
    """Every instance of one video (ambiguous stretches apart), and its duration in seconds when the source has it."""

    subset: str
    duration: float | None = None
    segments: list[Segment] = field(default_factory=list)
    ambiguous: list[Segment] = field(default_factory=list)


@dataclass
class Annotations:
    """The ground truth of one subset: class list, videos and their segments, ambiguous stretches."""

    source: Path
    subset: str
    classes: list[str]
    videos: dict[str, VideoAnnotation]
    # A JSON lists every video of its subset; a THUMOS'14 folder only those with a line in some file.
    lists_every_video: bool = True
    # The THUMOS'14 toolkit's class numbers (detclasslist.txt), which its detection text files use for classes.
    class_ids: dict[int, str] = field(default_factory=dict)

    def in_subset(self, video: str) -> bool:
        """Whether ``video`` belongs to the subset: listed, or (THUMOS'14 folder) named ``video_<subset>_<number>``.

        THUMOS'14 names its videos so (``video_test_0000004``); its test videos without any annotated instance are
        named in no file, yet the evaluation counts false positives on them.
        """
        if video in self.videos:
            return True
        name = video.rsplit("/", 1)[-1]
        return not self.lists_every_video and any(re.fullmatch(rf"video_{re.escape(word)}_\d+", name)
                                                  for word in subset_names(self.subset))

    def subset_videos(self, available: Iterable[str]) -> list[str]:
        """Every annotated video of the subset, and the ``available`` ones (a store's ids) that belong to it."""
        return sorted(set(self.videos) | {video for video in available if self.in_subset(video)})

    def ground_truth(self, label: str) -> dict[str, np.ndarray]:
        """Segments of ``label`` per video as float64 (n, 2) [start, end] arrays; videos without any are left out."""
        per_video = {}
        for video, entry in self.videos.items():
            rows = [(s.start, s.end) for s in entry.segments if s.label == label]
            if rows:
                per_video[video] = np.asarray(rows, np.float64)
        return per_video

    def ambiguous(self) -> dict[str, np.ndarray]:
        """Ambiguous stretches per video as (n, 2) arrays."""
        return {video: np.asarray([(s.start, s.end) for s in entry.ambiguous], np.float64)
                for video, entry in self.videos.items() if entry.ambiguous}

    def in_frames(self, video: str, fps: float) -> list[tuple[int, int, int]]:
        """``(first, stop, class index)`` per segment of ``video``: frames ``first:stop`` at ``fps``."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [(int(math.floor(s.start * fps)), max(int(math.ceil(s.end * fps)), int(math.floor(s.start * fps)) + 1),
                 index[s.label]) for s in self.videos[video].segments]

    def check_videos(self, store: FlowStore, warn: Warn = warn_on_stderr) -> None:
        """Every video must be in ``store``; a segment past the video's end is clipped to it, with a warning.

        The length is the store's frame count at the fps it recorded, so seconds and frames agree.
        """
        for video, entry in self.videos.items():
            first = (entry.segments + entry.ambiguous)[0].where if entry.segments or entry.ambiguous else None
            if video not in store:
                raise _error(first or str(self.source), f"video {video!r} is not in the store {store.root}")
            fps = float(store.attrs(video)["fps"])
            if fps > 0:
                _clip_within(video, entry, store.num_frames(video) / fps, warn)


def read_annotations(path: str | os.PathLike, subset: str = "test", classes: Sequence[str] | None = None,
                     warn: Warn = warn_on_stderr) -> Annotations:
    """Read a THUMOS'14 annotation folder or an ActivityNet-style JSON file, keeping the videos of ``subset``.

    Args:
        path: a folder of ``<Class>_<subset>.txt`` files, or a ``.json`` file.
        subset: ``test``, ``val`` or ``train`` (ActivityNet's ``testing``, ``validation``, ``training`` match too).
        classes: the classes the labels must come from; by default the file's own class list.
        warn: receives a line for each segment clipped to its video's ``duration`` (JSON files only).
    """
    source = Path(path)
    if not source.exists():
        raise InputError(source, "annotations not found")
    if source.is_dir():
        return _read_thumos_folder(source, subset, classes)
    return _read_activitynet_json(source, subset, classes, warn)


def subset_matches(wanted: str, given: str) -> bool:
    """``test`` matches ``test`` and ``testing``, and so on for val and train."""
    return given in (wanted, SUBSET_ALIASES.get(wanted, wanted))


def subset_names(subset: str) -> set[str]:
    """Both spellings of a subset: ``test`` and ``testing``, ``val`` and ``validation``, ``train`` and ``training``."""
    for short, long in SUBSET_ALIASES.items():
        if subset in (short, long):
            return {short, long}
    return {subset}


def read_utf8(path: Path) -> str:
    """The text of ``path`` without its BOM; a byte that is not UTF-8 is a one-line error naming its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = exc.object[:exc.start].decode("utf-8", "replace")
        line = len((before + "x").splitlines())  # numbered as str.splitlines() numbers the lines read
        raise InputError(path, f"line {line}: byte 0x{exc.object[exc.start]:02x} is not UTF-8 text "
                               f"(save the file as UTF-8)") from None


def read_json_table(path: Path, key: str, what: str) -> tuple[dict, dict]:
    """The whole JSON document and its ``key`` object, keyed by video; one-line errors for anything else.

    A key given twice in one object is refused: Python's json keeps the last copy without a word, so a video
    listed twice would silently lose its first entry.
    """
    repeated: dict[int, str] = {}  # id of a parsed object -> its first repeated key
    no_text: list[str] = []  # strings holding an unpaired surrogate escape, which no output can print
    try:
        data = json.loads(read_utf8(path), object_pairs_hook=lambda pairs: _checked(pairs, repeated, no_text))
        table = data[key]
    except RecursionError:
        raise InputError(path, "JSON nested too deeply to read") from None
    except ValueError as exc:  # a JSON syntax error, or an integer of more digits than Python converts
        raise InputError(path, f"not a JSON file ({exc})") from None
    except (KeyError, TypeError):
        raise InputError(path, f"has no '{key}' object (expected ActivityNet's {what} format)") from None
    if not isinstance(table, dict):
        raise InputError(path, f"'{key}' must map video ids to their {what}s")
    if id(table) in repeated:
        raise InputError(path, f"video {repeated[id(table)]!r} is listed twice in '{key}' (JSON readers keep only "
                               f"the last copy)")
    if repeated:
        raise InputError(path, f"key {next(iter(repeated.values()))!r} is repeated in one JSON object (JSON readers "
                               f"keep only the last copy)")
    if no_text:
        raise InputError(path, f"{no_text[0]!r} holds an unpaired surrogate escape (\\ud800-\\udfff), which is no "
                               f"character")
    return data, table


def _is_text(name: str) -> bool:
    """Whether ``name`` can be written as UTF-8: an unpaired surrogate (a JSON escape, a file name's undecodable
    byte) cannot."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _checked(pairs: list[tuple[str, Any]], repeated: dict[int, str], no_text: list[str]) -> dict:
    """``dict(pairs)``; its first repeated key goes into ``repeated`` under the new dict's id, keys and string
    values that are no text into ``no_text``."""
    result = dict(pairs)
    if len(result) < len(pairs):
        seen: set[str] = set()
        repeated[id(result)] = next(k for k, _ in pairs if k in seen or seen.add(k))
    no_text.extend(s for pair in pairs for s in pair if isinstance(s, str) and not _is_text(s))
    return result


# ---------------------------------------------------------------- THUMOS'14 folder


def _read_thumos_folder(folder: Path, subset: str, classes: Sequence[str] | None) -> Annotations:
    files = _class_files(folder)
    file_classes = sorted({label for label, _ in files} - {AMBIGUOUS})
    class_ids = _class_ids(folder)
    known = list(classes) if classes is not None else list(class_ids.values()) or file_classes
    for label, name in sorted(files):
        if label != AMBIGUOUS and label not in known:
            raise InputError(folder / files[label, name], f"unknown class {label!r} (known: {', '.join(known)})")
    wanted = [(label, name) for label, name in files if subset_matches(subset, name)]
    if not wanted:
        raise InputError(folder, f"no '<Class>_{subset}.txt' annotation files")
    videos: dict[str, VideoAnnotation] = {}
    for label, name in sorted(wanted):
        for video, segment in _read_thumos_file(folder / files[label, name], label):
            entry = videos.setdefault(video, VideoAnnotation(subset=subset))
            (entry.ambiguous if label == AMBIGUOUS else entry.segments).append(segment)
    return Annotations(source=folder, subset=subset, classes=known, videos=videos, lists_every_video=False,
                       class_ids=class_ids)


def _class_files(folder: Path) -> dict[tuple[str, str], str]:
    """(class, subset) -> file name for every ``<Class>_<subset>.txt`` in the folder."""
    found = {}
    for path in folder.iterdir():
        match = _FILE_PATTERN.match(path.name)
        if match and path.is_file():
            if not _is_text(path.name):
                raise InputError(path, "the file name is not UTF-8 text, so its class has no printable name")
            found[match["label"], match["subset"]] = path.name
    return found


def _class_ids(folder: Path) -> dict[int, str]:
    """The toolkit's ``detclasslist.txt`` (``<id> <Class>`` lines) when the folder has one: class by number."""
    path = folder / CLASS_LIST_FILE
    if not path.is_file():
        return {}
    names = {}
    for number, line in enumerate(read_utf8(path).splitlines(), 1):
        fields = line.split()
        if fields and (len(fields) != 2 or not fields[0].isdigit()):
            raise InputError(path, f"line {number}: expected '<id> <Class>', got {line.strip()!r}")
        if fields:
            names[int(fields[0])] = fields[1]
    return names


def _read_thumos_file(path: Path, label: str) -> list[tuple[str, Segment]]:
    """The ``video start end`` lines of one class file; blank lines, CRLF and a BOM are tolerated."""
    rows = []
    for number, line in enumerate(read_utf8(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {number}"
        if len(fields) != 3:
            raise _error(where, f"expected 'video start end', got {line.strip()!r}")
        start, end = _seconds(fields[1], where), _seconds(fields[2], where)
        rows.append((fields[0], _segment(start, end, label, where)))
    return rows


# ---------------------------------------------------------------- ActivityNet-style JSON


def _read_activitynet_json(path: Path, subset: str, classes: Sequence[str] | None, warn: Warn) -> Annotations:
    data, database = read_json_table(path, "database", "annotation")
    known = list(classes) if classes is not None else _json_classes(path, data, database)
    videos = {}
    for video, entry in database.items():
        where = f"{path}: video {video!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations", []), list):
            raise _error(where, "expected {'subset', 'duration', 'annotations': [...]}")
        if not isinstance(entry.get("subset"), str):  # else the video would silently leave every subset
            given = f"got {json.dumps(entry['subset'])[:40]}" if "subset" in entry else "it has none"
            raise _error(where, f"'subset' must name the video's subset, such as 'testing' or 'validation' ({given})")
        if subset_matches(subset, entry["subset"]):
            videos[video] = _read_json_video(video, entry, subset, known, where, warn)
    if not videos:
        raise InputError(path, f"no video of subset {subset!r}")
    return Annotations(source=path, subset=subset, classes=known, videos=videos)


def _json_classes(path: Path, data: dict, database: dict) -> list[str]:
    """The leaves of ActivityNet's ``taxonomy`` when the file has one, else every label the file uses."""
    taxonomy = data.get("taxonomy")
    if isinstance(taxonomy, list) and taxonomy:
        try:
            parents = {node["parentName"] for node in taxonomy}
            leaves = [node["nodeName"] for node in taxonomy if node["nodeName"] not in parents]
        except (KeyError, TypeError):
            leaves = [None]
        if not all(isinstance(name, str) for name in leaves):
            raise InputError(path, "'taxonomy' entries need 'nodeName' and 'parentName' names")
        return leaves
    labels = {item.get("label") for entry in database.values() if isinstance(entry, dict)
              and isinstance(entry.get("annotations"), list) for item in entry["annotations"]
              if isinstance(item, dict) and isinstance(item.get("label"), str)}
    return sorted(labels - {AMBIGUOUS})


def _read_json_video(name: str, entry: dict, subset: str, known: list[str], where: str, warn: Warn
                     ) -> VideoAnnotation:
    duration = entry.get("duration")
    if duration is not None and not _is_number(duration):
        raise _error(where, f"duration {duration!r} is not a number")
    video = VideoAnnotation(subset=subset, duration=None if duration is None else float(duration))
    for number, item in enumerate(entry.get("annotations", [])):
        at = f"{where}, annotation {number}"
        segment = item.get("segment") if isinstance(item, dict) else None
        label = item.get("label") if isinstance(item, dict) else None
        if not isinstance(segment, list) or len(segment) != 2 or not all(map(_is_number, segment)) \
                or not isinstance(label, str):
            raise _error(at, f"expected {{'segment': [start, end], 'label': name}}, got {json.dumps(item)[:80]}")
        if label != AMBIGUOUS and label not in known:
            raise _error(at, f"unknown class {label!r}")
        parsed = _segment(float(segment[0]), float(segment[1]), label, at)
        (video.ambiguous if label == AMBIGUOUS else video.segments).append(parsed)
    if video.duration is not None:
        _clip_within(name, video, video.duration, warn)
    return video


# ---------------------------------------------------------------- checks


def _segment(start: float, end: float, label: str, where: str) -> Segment:
    if start < 0:
        raise _error(where, f"start {start:g} s is negative")
    if not end > start:
        raise _error(where, f"end {end:g} s is not after start {start:g} s")
    return Segment(start, end, label, where)


def _clip_within(name: str, video: VideoAnnotation, duration: float, warn: Warn) -> None:
    """Clip each segment that ends after the video to its end (dropped if it starts there), one warning each.

    THUMOS'14's own files hold such segments (val 0000364 and 0000856, test 0000270 and 0001496); the original
    evaluation keeps their videos, so they must neither stop training nor evaluation.
    """
    for kept in (video.segments, video.ambiguous):
        within = []
        for segment in kept:
            if segment.end <= duration + DURATION_SLACK_S:
                within.append(segment)
                continue
            where = segment.where if f"'{name}'" in segment.where else f"{segment.where}: video {name!r}"
            fate = "left out" if segment.start >= duration else f"clipped to {segment.start:g}-{duration:.2f} s"
            warn(f"warning: {where}: segment {segment.start:g}-{segment.end:g} s ends after the video "
                 f"({duration:.2f} s); {fate}")
            if segment.start < duration:
                within.append(replace(segment, end=duration))
        kept[:] = within


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _error(where, f"{text!r} is not a time in seconds") from None
    if not math.isfinite(value):
        raise _error(where, f"{text!r} is not a time in seconds")
    return value


def json_number(value: object) -> float | None:
    """A JSON number as a float (an integer too large for one becomes infinite); ``None`` for anything else."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _is_number(value: object) -> bool:
    number = json_number(value)
    return number is not None and math.isfinite(number)


def _error(where: str, problem: str) -> InputError:
    """An InputError whose one line reads ``<file>: line N: problem`` (``where`` holds the file and the line)."""
    path, _, place = where.partition(": ")
    return InputError(path, f"{place}: {problem}" if place else problem)


def fps_of(store: FlowStore, video: str) -> float:
    """The frame rate the store records for ``video``: seconds in annotations become frames with it."""
    fps = float(store.attrs(video).get("fps") or 0.0)
    if not fps > 0:
        raise InputError(store.path_of(video), "records no frame rate, so annotation times cannot become frames "
                                               "(extract it with --fps)")
    return fps
