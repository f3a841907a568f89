"""Detection mAP as the two reference evaluators compute it: ActivityNet's eval_detection.py and THUMOS'14's toolkit.

Written here rather than taken from scikit-learn: ``average_precision_score`` knows neither the temporal matching
nor these two AP rules (VOC all-point interpolation; THUMOS'14's sum of precision at each hit over the ground truth).

Both protocols, per class and tIoU threshold:

* ``activitynet``: predictions in decreasing score (a stable sort: ties keep the results file's order); each tries
  the ground truth of its video in decreasing tIoU, skips ground truth already taken, and is a true positive at the
  first free one with tIoU >= threshold, else a false positive (as are predictions in videos without ground truth
  of the class). AP is the all-point interpolated area under the monotone precision envelope.
* ``thumos14`` (``TH14evalDet.m`` of the THUMOS'14 evaluation kit, as S-CNN ships it): per video, the ground truth
  in file order each takes the highest-overlap detection still free, if tIoU > threshold (strict); unmatched
  detections that overlap an ``Ambiguous`` stretch at all are dropped instead of counted false; AP is the sum of
  precision at each true positive divided by the number of ground-truth instances (no interpolation).

In both, a class without predictions scores 0 and mAP is the mean over the classes that have ground truth.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from flow.errors import InputError
from pipelines.data.annotations import Annotations, json_number, read_annotations, read_json_table, read_utf8

PROTOCOLS = ("activitynet", "thumos14")
DEFAULT_TIOU = (0.1, 0.2, 0.3, 0.4, 0.5)
TIOU_RESULTS = "tiou_results"  # a results file's external_data key: {tIoU: file name} of per-threshold result sets


@dataclass
class Predictions:
    """Predictions of one class over all videos, in the results file's order."""

    videos: list[str] = field(default_factory=list)
    segments: list[tuple[float, float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, video: str, start: float, end: float, score: float) -> None:
        self.videos.append(video)
        self.segments.append((start, end))
        self.scores.append(score)


@dataclass
class DetectionResult:
    """AP per class and threshold, mAP per threshold, and the precision-recall points behind each AP."""

    tiou: list[float]
    mAP: list[float]
    per_class: dict[str, list[float]]
    curves: dict[str, list[tuple[list[float], list[float]]]]  # class -> per threshold (recall, precision)

    def to_json(self) -> dict:
        return {"tiou": self.tiou, "mAP": self.mAP, "per_class": self.per_class}


def segment_tiou(segment: Sequence[float], candidates: np.ndarray) -> np.ndarray:
    """tIoU of one [start, end] with each row of ``candidates`` (n, 2): |intersection| / |union|."""
    candidates = np.asarray(candidates, np.float64).reshape(-1, 2)
    inter = (np.minimum(segment[1], candidates[:, 1]) - np.maximum(segment[0], candidates[:, 0])).clip(0)
    with np.errstate(over="ignore"):  # a segment longer than the largest float: union inf, tIoU 0 with the other
        union = (candidates[:, 1] - candidates[:, 0]) + (segment[1] - segment[0]) - inter
    return inter / union


def read_detections(path: str | os.PathLike) -> dict[str, Predictions]:
    """A results file (see :func:`read_results`) grouped by class."""
    return read_results(path)[1]


def read_results(path: str | os.PathLike, class_ids: Mapping[int, str] | None = None
                 ) -> tuple[list[str], dict[str, Predictions]]:
    """The video ids of a results file and its detections grouped by class; each detection checked first.

    Two formats: ActivityNet's JSON, ``{"results": {video: [{"label", "score", "segment"}]}}``, and the THUMOS'14
    toolkit's text, one ``video start end class score`` line per detection, the class a name or a number of
    ``class_ids`` (the annotations' ``detclasslist.txt``).
    """
    path = Path(path)
    if not _looks_like_json(path):
        return _read_text_results(path, read_utf8(path), class_ids or {})
    results = read_json_table(path, "results", "result")[1]
    by_class: dict[str, Predictions] = {}
    for video, items in results.items():
        for number, item in enumerate(items if isinstance(items, list) else [None]):
            label, score, (start, end) = _detection(item, path, f"video {video!r}, detection {number}")
            by_class.setdefault(label, Predictions()).add(video, start, end, score)
    return list(results), by_class


def _looks_like_json(path: Path) -> bool:
    """Whether the file opens as a JSON object does (a BOM and white space aside), from its first bytes only."""
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf")
    return head.lstrip()[:1] in (b"{", b"[")


def _read_text_results(path: Path, text: str, class_ids: Mapping[int, str]
                       ) -> tuple[list[str], dict[str, Predictions]]:
    """The THUMOS'14 toolkit's detection lines, checked as the JSON's detections are."""
    videos: dict[str, None] = {}
    by_class: dict[str, Predictions] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise InputError(path, f"line {number}: expected 'video start end class score', got {line.strip()[:80]!r}")
        video, start, end, label, score = fields
        if label.isdigit():
            if int(label) not in class_ids:
                raise InputError(path, f"line {number}: class number {label} is not in the annotations' "
                                       f"detclasslist.txt" if class_ids else f"line {number}: class number {label} "
                                       f"needs annotations with a detclasslist.txt (or give the class name)")
            label = class_ids[int(label)]
        item = {"label": label, "score": _text_number(score, path, number),
                "segment": [_text_number(start, path, number), _text_number(end, path, number)]}
        label, value, (first, last) = _detection(item, path, f"line {number}")
        videos[video] = None
        by_class.setdefault(label, Predictions()).add(video, first, last, value)
    if not videos:
        raise InputError(path, "holds no detection (expected ActivityNet's results JSON or 'video start end class "
                               "score' lines)")
    return list(videos), by_class


def _text_number(text: str, path: Path, number: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(path, f"line {number}: {text[:40]!r} is not a number") from None


def check_result_videos(path: str | os.PathLike, videos: Sequence[str], annotations: Annotations) -> str | None:
    """Refuse results none of whose videos belong to the annotated subset (ids of another naming, such as
    ``v1.avi``, would score mAP 0 without a word); a warning line when only some do not (``None`` when all do).

    Detections in videos outside the subset stay in the evaluation as false positives, as in ActivityNet's code.
    """
    strangers = [video for video in videos if not annotations.in_subset(video)]
    where = f"subset {annotations.subset!r} of {annotations.source}"
    if strangers and len(strangers) == len(videos):
        raise InputError(path, f"none of its {len(videos)} videos is a video of {where} (e.g. {strangers[0]!r}); "
                               f"results must use the annotations' video ids")
    if strangers:
        return (f"warning: {path}: {len(strangers)} of {len(videos)} videos are not videos of {where} "
                f"(e.g. {strangers[0]!r}); their detections count as false positives")
    return None


def evaluate_detections(predictions: dict[str, Predictions], annotations: Annotations,
                        tiou: Sequence[float] = DEFAULT_TIOU, protocol: str = "activitynet") -> DetectionResult:
    """AP of every class with ground truth at every threshold, and their mean, under ``protocol``.

    Args:
        predictions: per class, as :func:`read_detections` returns; classes without ground truth are ignored.
        annotations: the ground truth of the subset evaluated.
        tiou: tIoU thresholds.
        protocol: ``activitynet`` or ``thumos14``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    thresholds = [float(t) for t in tiou]
    ambiguous = annotations.ambiguous()
    per_class, curves = {}, {}
    for label in annotations.classes:
        truth = annotations.ground_truth(label)
        if not truth:
            continue
        ranked = _ranked(predictions.get(label, Predictions()), protocol == "thumos14")
        outcomes = []
        for threshold in thresholds:
            if protocol == "activitynet":
                outcomes.append(_activitynet_outcome(ranked, truth, threshold))
            else:
                outcomes.append(_thumos14_outcome(ranked, truth, ambiguous, threshold))
        npos = sum(len(rows) for rows in truth.values())
        rule = _interpolated_ap if protocol == "activitynet" else _thumos14_ap
        per_class[label] = [rule(hits, npos)[0] for hits in outcomes]
        curves[label] = [rule(hits, npos)[1:] for hits in outcomes]
    mean = np.mean(list(per_class.values()), axis=0) if per_class else np.zeros(len(thresholds))
    return DetectionResult(tiou=thresholds, mAP=[float(v) for v in mean], per_class=per_class, curves=curves)


def tiou_results_path(path: Path, tiou: float) -> Path:
    """Where the result set meant for evaluation at ``tiou`` goes, beside the results file ``path``."""
    return path.with_name(f"{path.stem}.tiou-{tiou:g}{path.suffix}")


def tiou_result_sets(path: Path) -> dict[float, Path]:
    """The per-threshold result sets a results JSON names in ``external_data`` (S-CNN post-processes once per
    evaluated tIoU, with NMS 0.1 below it); empty when it names none."""
    data = json.loads(Path(path).read_text())
    external = data.get("external_data") if isinstance(data, dict) else None
    named = external.get(TIOU_RESULTS) if isinstance(external, dict) else None
    return {float(t): Path(path).parent / str(name) for t, name in named.items()} if isinstance(named, dict) else {}


def evaluate_result_sets(path: Path, annotations: Annotations, tiou: Sequence[float] = DEFAULT_TIOU,
                         protocol: str = "activitynet") -> DetectionResult:
    """:func:`evaluate_detections` at each threshold on the result set meant for it: the per-threshold set the
    results file names for it (:func:`tiou_result_sets`), else the file itself. So each column is exactly the
    evaluation of its own file at its own threshold."""
    sets = tiou_result_sets(path)
    thresholds = [float(t) for t in tiou]
    files = [next((found for t, found in sets.items() if math.isclose(t, threshold)), Path(path))
             for threshold in thresholds]
    columns: dict[float, tuple[DetectionResult, int]] = {}
    for file in dict.fromkeys(files):
        mine = [t for t, f in zip(thresholds, files) if f == file]
        result = evaluate_detections(read_detections(file), annotations, mine, protocol)
        columns.update({t: (result, index) for index, t in enumerate(mine)})
    parts = [columns[t] for t in thresholds]
    labels = list(parts[0][0].per_class) if parts else []
    return DetectionResult(tiou=thresholds, mAP=[result.mAP[i] for result, i in parts],
                           per_class={label: [result.per_class[label][i] for result, i in parts] for label in labels},
                           curves={label: [result.curves[label][i] for result, i in parts] for label in labels})


def evaluate_file(detections: str | os.PathLike, annotations: str | os.PathLike, subset: str = "test",
                  tiou: Sequence[float] = DEFAULT_TIOU, protocol: str = "activitynet",
                  warn: Callable[[str], None] = partial(print, file=sys.stderr)) -> DetectionResult:
    """Read both files (checked before any scoring) and evaluate; what ``eval-detection`` runs.

    ``warn`` receives the line saying that some result videos are not videos of the subset.
    """
    truth = read_annotations(annotations, subset)
    videos, predictions = read_results(detections, truth.class_ids)
    warning = check_result_videos(detections, videos, truth)
    if warning:
        warn(warning)
    return evaluate_detections(predictions, truth, tiou, protocol)


def format_table(result: DetectionResult) -> str:
    """Per-class AP and mAP in percent, one column per tIoU threshold."""
    width = max([len("mAP"), *map(len, result.per_class)])
    header = f"{'class':<{width}}  " + "  ".join(f"{t:>6.2f}" for t in result.tiou)
    rows = [f"{label:<{width}}  " + "  ".join(f"{100 * ap:6.1f}" for ap in aps)
            for label, aps in result.per_class.items()]
    mean = f"{'mAP':<{width}}  " + "  ".join(f"{100 * m:6.1f}" for m in result.mAP)
    rule = "-" * len(header)
    return "\n".join([f"{'':<{width}}  AP (%) at tIoU", header, rule, *rows, rule, mean])


# ---------------------------------------------------------------- matching


def _ranked(predictions: Predictions, video_order: bool = False) -> tuple[list[str], np.ndarray]:
    """Videos and segments in decreasing score; equal scores keep the file order.

    With ``video_order``, equal scores go by video name first, as the THUMOS'14 toolkit collects them.
    """
    scores = -np.asarray(predictions.scores, np.float64)
    names = np.unique(predictions.videos, return_inverse=True)[1] if video_order else np.zeros(scores.size)
    order = np.lexsort((np.arange(scores.size), names, scores))
    segments = np.asarray(predictions.segments, np.float64).reshape(-1, 2)[order]
    return [predictions.videos[i] for i in order], segments


def _activitynet_outcome(ranked: tuple[list[str], np.ndarray], truth: dict[str, np.ndarray],
                         threshold: float) -> np.ndarray:
    """1 (true positive) or 0 (false positive) per ranked prediction, matching as eval_detection.py does."""
    videos, segments = ranked
    taken = {video: np.zeros(len(rows), bool) for video, rows in truth.items()}
    hits = np.zeros(len(videos), np.int8)
    for k, (video, segment) in enumerate(zip(videos, segments)):
        if video not in truth:
            continue
        overlaps = segment_tiou(segment, truth[video])
        for j in np.argsort(-overlaps, kind="stable"):
            if overlaps[j] < threshold:
                break
            if not taken[video][j]:
                taken[video][j] = True
                hits[k] = 1
                break
    return hits


def _thumos14_outcome(ranked: tuple[list[str], np.ndarray], truth: dict[str, np.ndarray],
                      ambiguous: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """1 (true positive), 0 (false positive) or -1 (dropped: unmatched and overlapping Ambiguous) per prediction.

    Matching is driven by the ground truth: each instance, in file order, takes the free detection of highest
    overlap in its video (the higher-scored one on a tie), if that overlap exceeds the threshold.
    """
    videos, segments = ranked
    outcome = np.zeros(len(videos), np.int8)
    by_video: dict[str, list[int]] = {}
    for k, video in enumerate(videos):
        by_video.setdefault(video, []).append(k)
    for video, indices in by_video.items():
        free = np.ones(len(indices), bool)
        for gt in truth.get(video, np.zeros((0, 2))):
            overlaps = np.where(free, segment_tiou(gt, segments[indices]), -1.0)
            best = int(np.argmax(overlaps))
            if overlaps[best] > threshold:
                free[best] = False
                outcome[indices[best]] = 1
        if video in ambiguous:
            touches = [(segment_tiou(segments[k], ambiguous[video]) > 0).any() for k in indices]
            outcome[[k for k, f, t in zip(indices, free, touches) if f and t]] = -1
    return outcome


# ---------------------------------------------------------------- AP rules


def _interpolated_ap(hits: np.ndarray, npos: int) -> tuple[float, list[float], list[float]]:
    """VOC all-point AP: precision made non-increasing from the right, summed over the steps of recall."""
    recall, precision = _precision_recall(hits, npos)
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.concatenate([[0.0], recall, [1.0]])
    changed = np.flatnonzero(steps[1:] != steps[:-1]) + 1
    ap = float(np.sum((steps[changed] - steps[changed - 1]) * envelope[changed]))
    return ap, recall.tolist(), precision.tolist()


def _thumos14_ap(hits: np.ndarray, npos: int) -> tuple[float, list[float], list[float]]:
    """THUMOS'14 AP: precision at each true positive, summed, divided by the number of ground-truth instances."""
    recall, precision = _precision_recall(hits, npos)
    kept = hits[hits >= 0]
    ap = float(precision[kept == 1].sum() / npos) if npos else 0.0
    return ap, recall.tolist(), precision.tolist()


def _precision_recall(hits: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision down the ranking; dropped predictions (-1) are left out."""
    kept = hits[hits >= 0].astype(np.float64)
    true_positives = np.cumsum(kept)
    recall = true_positives / max(npos, 1)
    precision = true_positives / np.arange(1, kept.size + 1)
    return recall, precision


def _detection(item: object, path: Path, where: str) -> tuple[str, float, tuple[float, float]]:
    """(label, score, (start, end)) of one results entry; a one-line error naming ``where`` when it is unusable."""
    fields = item if isinstance(item, dict) else {}
    label, score, segment = fields.get("label"), fields.get("score"), fields.get("segment")
    numbers = [json_number(v) for v in ([score, *segment] if isinstance(segment, list) else [])]
    if not isinstance(label, str) or len(numbers) != 3 or None in numbers:
        raise InputError(path, f"{where}: expected {{'label', 'score', 'segment': [start, end]}}, "
                               f"got {json.dumps(item)[:80]}")
    value, start, end = numbers
    if not math.isfinite(value):
        raise InputError(path, f"{where}: score {json.dumps(score)[:40]} is not a finite number")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InputError(path, f"{where}: segment {json.dumps(segment)[:80]} holds a time that is not a finite number")
    if end < start:
        raise InputError(path, f"{where}: segment {json.dumps(segment)[:80]} ends before it starts")
    return label, value, (start, end)
