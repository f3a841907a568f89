"""The fusion stage: combine saved score files of several streams and report every combination, per split and mean.

By default the fused score is the equal average of raw logits, as MARS's two-stream test does; ``softmax``
averages probabilities instead; fixed weights or weights learned on validation (else training) scores replace
the equal ones. Test scores are only ever fused and measured: nothing is chosen or fitted on them.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flow.errors import InputError
from pipelines.scoring import metrics
from pipelines.scoring.fusion_weights import fused_scores, learn_logit_weights, learn_softmax_weights, softmax
from pipelines.core.manifest import stage_manifest
from pipelines.report.fused_report import MEAN, BestModel, FusedReport, FusionMethod, ReportRow
from pipelines.report.tables import write_report
from pipelines.scoring.scores import Scores, load_scores
from pipelines.core.stream_specs import StreamName
from pipelines.core.streams import FUSION_ORDER, fusion_name

LEARNING_SUBSETS = ("val", "train")  # where learned weights come from, in order of preference


@dataclass
class FuseConfig:
    """How streams are combined; the default is MARS's equal average of raw logits."""

    weights: dict[str, float] | None = None  # fixed weight per stream, e.g. {"mars": 1, "flow": 1.5}
    learn_weights: bool = False  # fit weights per split and combination on val (else train) scores
    softmax: bool = False  # average softmax probabilities instead of raw logits
    dataset: str | None = None  # name written into the report

    def __post_init__(self) -> None:
        if self.weights is not None and self.learn_weights:
            raise InputError(None, "fixed weights and learned weights exclude each other; give one")
        for stream, weight in (self.weights or {}).items():
            StreamName.parse(stream)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or weight <= 0:
                raise InputError(None, f"weight of {stream} must be a positive number, got {weight!r}")

    @property
    def method(self) -> str:
        return "learned" if self.learn_weights else "fixed" if self.weights else "equal"


# split -> subset -> stream -> scores, rows of one (split, subset) in the same video order
Grouped = dict[int, dict[str, dict[str, Scores]]]


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Score files as given; a folder stands for every ``.npz`` file directly inside it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                raise InputError(path, "folder holds no .npz score files")
            files.extend(found)
        else:
            files.append(path)
    return files


def _aligned(reference: Scores, other: Scores) -> Scores:
    """``other`` with its rows in ``reference``'s video order; refuses different video lists or labels."""
    if reference.num_videos != other.num_videos or set(reference.video_ids) != set(other.video_ids):
        missing = sorted(set(reference.video_ids.tolist()) - set(other.video_ids.tolist()))
        extra = sorted(set(other.video_ids.tolist()) - set(reference.video_ids.tolist()))
        example = f"lacks {missing[0]!r}" if missing else f"has extra {extra[0]!r}"
        raise InputError(other.path, f"videos differ from {reference.path} ({other.num_videos} vs "
                                     f"{reference.num_videos} videos; {example})")
    position = {video: i for i, video in enumerate(other.video_ids.tolist())}
    order = np.array([position[video] for video in reference.video_ids.tolist()])
    if not np.array_equal(other.labels[order], reference.labels):
        first = int(np.flatnonzero(other.labels[order] != reference.labels)[0])
        video = str(reference.video_ids[first])
        raise InputError(other.path, f"labels differ from {reference.path} (video {video!r})")
    return dataclasses.replace(
        other,
        video_ids=reference.video_ids,
        labels=reference.labels,
        logits=other.logits[order],
        features=None if other.features is None else other.features[order],
    )


def group_scores(all_scores: Sequence[Scores]) -> Grouped:
    """Group by split and subset, checking that everything that will be compared agrees."""
    first = all_scores[0]
    for scores in all_scores[1:]:
        if scores.classes != first.classes:
            difference = _first_difference(scores.classes, first.classes)
            raise InputError(scores.path, f"classes differ from {first.path} ({len(scores.classes)} vs "
                                          f"{len(first.classes)} classes{difference})")
        if scores.protocol != first.protocol:
            raise InputError(scores.path, f"protocol {scores.protocol!r} differs from {first.protocol!r} "
                                          f"of {first.path}")
    grouped: Grouped = {}
    rank = {stream: i for i, stream in enumerate(FUSION_ORDER)}
    for scores in sorted(all_scores, key=lambda s: (s.split, s.subset, rank[s.stream])):
        streams = grouped.setdefault(scores.split, {}).setdefault(scores.subset, {})
        if scores.stream in streams:
            raise InputError(scores.path, f"a second {scores.stream} score file for split {scores.split} "
                                          f"{scores.subset}, besides {streams[scores.stream].path}")
        reference = next(iter(streams.values()), None)
        streams[scores.stream] = scores if reference is None else _aligned(reference, scores)
    return grouped


def _check_a_stream_in_every_split(tests: dict[int, dict[str, Scores]]) -> None:
    """Refuse splits that share no stream: no model would have a row in every split, so there is no mean.

    Splits that share some streams are fine: the others are reported per split and left out of the mean."""
    if set.intersection(*(set(streams) for streams in tests.values())):
        return
    described = [f"split {split} has {'+'.join(streams)} ({', '.join(str(s.path) for s in streams.values())})"
                 for split, streams in tests.items()]
    last = next(iter(tests[max(tests)].values()))
    raise InputError(last.path, "no stream has test scores in every split, so no model can be averaged over "
                                f"splits: {'; '.join(described)}; give every split the same streams, or fuse each "
                                "split on its own")


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"; class {i} is {x!r} vs {y!r}"
    return ""


def combinations(streams: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty combination, singles first, each in fusion order: (mars,), (rgb,), (mars, rgb), ..."""
    rank = {stream: i for i, stream in enumerate(FUSION_ORDER)}
    ordered = sorted(streams, key=rank.__getitem__)
    return [combo for size in range(1, len(ordered) + 1) for combo in itertools.combinations(ordered, size)]


def _stream_scores(scores: Scores, use_softmax: bool) -> np.ndarray:
    logits = scores.logits.astype(np.float64)
    return softmax(logits) if use_softmax else logits


def _learning_subset(split: int, subsets: dict[str, dict[str, Scores]]) -> str:
    """The held-out subset that learned weights come from: val if it covers every test stream, else train."""
    test = subsets["test"]
    for subset in LEARNING_SUBSETS:
        if set(test) <= set(subsets.get(subset, {})):
            learning = subsets[subset]
            reference = next(iter(learning.values()))
            shared = set(reference.video_ids.tolist()) & set(next(iter(test.values())).video_ids.tolist())
            if shared:
                raise InputError(reference.path, f"shares {len(shared)} videos with the test scores of split "
                                                 f"{split} (e.g. {sorted(shared)[0]!r}); weights must be learned "
                                                 "on other videos")
            return subset
    lacking = next(s for s in test if s not in subsets.get("val", {}))
    raise InputError(test[lacking].path, f"no val scores of stream {lacking} in split {split} (nor train scores of "
                                         "every stream) to learn fusion weights from")


def _weights_for(combo: tuple[str, ...], config: FuseConfig, learning: dict[str, Scores] | None) -> np.ndarray:
    """Normalised weights of one combination. ``learning`` holds only val/train scores: test is never passed."""
    if len(combo) == 1:
        return np.ones(1)
    if learning is not None:
        arrays = [learning[stream].logits for stream in combo]
        labels = learning[combo[0]].labels
        return learn_softmax_weights(arrays, labels) if config.softmax else learn_logit_weights(arrays, labels)
    if config.weights:
        missing = [stream for stream in combo if stream not in config.weights]
        if missing:
            raise InputError(None, f"fixed weights give no weight for stream {missing[0]} "
                                   f"(weights: {', '.join(f'{k}={v:g}' for k, v in config.weights.items())})")
        raw = np.array([config.weights[stream] for stream in combo], dtype=np.float64)
        return raw / raw.sum()
    return np.full(len(combo), 1.0 / len(combo))


def _best(rows: list[ReportRow]) -> ReportRow:
    """Highest top-1; ties go to mean class accuracy, then top-5, then the earlier (simpler) model."""
    return max(rows, key=lambda row: (row.top1, row.mean_class, row.top5))


def _mean_rows(rows: list[ReportRow], splits: list[int]) -> list[ReportRow]:
    """The mean over splits of each model that every split has."""
    by_model: dict[str, list[ReportRow]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    return [ReportRow(model=model, split=MEAN, top1=float(np.mean([r.top1 for r in model_rows])),
                      top5=float(np.mean([r.top5 for r in model_rows])),
                      mean_class=float(np.mean([r.mean_class for r in model_rows])),
                      videos=int(sum(r.videos for r in model_rows)), splits=splits)
            for model, model_rows in by_model.items() if len(model_rows) == len(splits)]


@dataclass
class _SplitFusion:
    """One split's rows, weights per model and stream, best model, and the subset weights were learned on."""

    rows: list[ReportRow]
    weights: dict[str, dict[str, float]]
    best: BestModel
    learned_on: str | None


def _fuse_split(split: int, subsets: dict[str, dict[str, Scores]], config: FuseConfig,
                classes: list[str]) -> _SplitFusion:
    """Rows, weights and the best model's confusion matrix of one split's test scores."""
    test = subsets["test"]
    learned_on = _learning_subset(split, subsets) if config.learn_weights else None
    learning = subsets[learned_on] if learned_on else None
    labels = next(iter(test.values())).labels
    rows: list[ReportRow] = []
    weights: dict[str, dict[str, float]] = {}
    fused = []
    for combo in combinations(list(test)):
        combo_weights = _weights_for(combo, config, learning)
        fused.append(fused_scores([_stream_scores(test[s], config.softmax) for s in combo], combo_weights))
        summary = metrics.summarize(fused[-1], labels)
        rows.append(ReportRow(model=fusion_name(combo), split=split, top1=summary["top1"], top5=summary["top5"],
                              mean_class=summary["mean_class"], videos=int(summary["videos"])))
        weights[fusion_name(combo)] = {stream: float(w) for stream, w in zip(combo, combo_weights)}
    winner = _best(rows)
    predicted = metrics.predictions(fused[rows.index(winner)])
    confusion = metrics.confusion_matrix(labels, predicted, len(classes))
    per_class = metrics.per_class_accuracy(labels, predicted, len(classes))
    best = BestModel(
        model=winner.model, top1=winner.top1, confusion=confusion.tolist(),
        per_class={name: (None if math.isnan(acc) else float(acc)) for name, acc in zip(classes, per_class)},
        confusion_csv=f"confusion_split{split}.csv", per_class_csv=f"per_class_split{split}.csv")
    return _SplitFusion(rows=rows, weights=weights, best=best, learned_on=learned_on)


def fuse(score_paths: Sequence[str | Path], out_dir: str | Path, config: FuseConfig | None = None) -> FusedReport:
    """Fuse every combination of streams per split, write ``report.json``, ``report.md`` and the best model's
    confusion matrix and per-class accuracy per split into ``out_dir``, and return the report.

    Args:
        score_paths: score files (``.npz``) or folders of them, from ``evaluate``; grouped by split and subset.
        out_dir: where the report files go.
        config: equal, fixed or learned weights, logits or softmax; MARS's equal average of raw logits by default.
    """
    config = config or FuseConfig()
    files = expand_paths(score_paths)
    if not files:
        raise InputError(None, "no score files given")
    all_scores = [load_scores(path) for path in files]
    grouped = group_scores(all_scores)
    splits = sorted(split for split, subsets in grouped.items() if "test" in subsets)
    if not splits:
        raise InputError(files[0], "no test score files among the inputs; fusion reports on the test subset")
    _check_a_stream_in_every_split({split: grouped[split]["test"] for split in splits})
    classes = list(all_scores[0].classes)
    results = {split: _fuse_split(split, grouped[split], config, classes) for split in splits}
    rows = [row for split in splits for row in results[split].rows]
    rows += _mean_rows(rows, splits)
    learned_on = {str(split): subset for split in splits if (subset := results[split].learned_on)}

    roles = [_role(s, splits, config, learned_on) for s in all_scores]
    report = FusedReport(
        dataset=config.dataset, protocol=all_scores[0].protocol, classes=classes,
        fusion=_fusion_method(config, results, splits, learned_on), rows=rows,
        best={str(split): results[split].best for split in splits},
        notes=_notes(all_scores, roles, splits, learned_on), manifest=_fuse_manifest(config, all_scores, roles))
    write_report(out_dir, report)
    return report


def _fusion_method(config: FuseConfig, results: dict[int, _SplitFusion], splits: list[int],
                   learned_on: dict[str, str]) -> FusionMethod:
    """How the scores were combined: method, logits or softmax, the weights per split and how they were learned."""
    learner = ("mixture weights by expectation-maximisation" if config.softmax
               else "multinomial logistic regression, one non-negative coefficient per stream")
    return FusionMethod(method=config.method, scores="softmax" if config.softmax else "logits",
                        weights={str(split): results[split].weights for split in splits},
                        learned_on=learned_on if config.learn_weights else None,
                        learner=learner if config.learn_weights else None)


def _fuse_manifest(config: FuseConfig, all_scores: list[Scores], roles: list[str]) -> dict[str, Any]:
    """The stage manifest, with each score file's hash, stream, split, subset and role in the fusion."""
    manifest = stage_manifest("fuse", dataclasses.asdict(config), {str(s.path.resolve()): s.path for s in all_scores})
    manifest["versions"].update(_scipy_version(config))
    manifest["score_files"] = [
        {"path": str(s.path.resolve()), "sha256": manifest["input_fingerprints"][str(s.path.resolve())],
         "stream": s.stream, "split": s.split, "subset": s.subset, "videos": s.num_videos, "role": role}
        for s, role in zip(all_scores, roles)
    ]
    return manifest


def _notes(all_scores: list[Scores], roles: list[str], splits: list[int], learned_on: dict[str, str]) -> list[str]:
    """What the user may not expect: files left unused, weights fitted on training videos."""
    notes = [f"split {split}: no test scores, so its files were not used"
             for split in sorted({s.split for s in all_scores} - set(splits))]
    notes += [f"split {split}: no val scores, weights learned on train scores (over-confident: the networks "
              "were fitted on these videos)" for split, subset in learned_on.items() if subset == "train"]
    ignored = sum(1 for s, role in zip(all_scores, roles) if role == "unused" and s.split in splits)
    if ignored:
        notes.append(f"{ignored} val/train score file(s) not used: they only serve learned weights (val before train)")
    return notes


def _role(scores: Scores, splits: list[int], config: FuseConfig, learned_on: dict[str, str]) -> str:
    """What a file was used for: ``test`` (reported), ``learning`` (weights) or ``unused``."""
    if scores.split not in splits:
        return "unused"
    if scores.subset == "test":
        return "test"
    return "learning" if config.learn_weights and learned_on.get(str(scores.split)) == scores.subset else "unused"


def _scipy_version(config: FuseConfig) -> dict[str, str]:
    if not config.learn_weights or config.softmax:
        return {}
    import scipy

    return {"scipy": scipy.__version__}
