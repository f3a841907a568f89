"""``mars-sta report RUN_DIR``: one self-contained HTML page for a pipeline run, from the files the run wrote.

The page holds the fused top-1 table (per split and mean), per-class accuracy and the confusion matrix of each
split's best fusion, the training curves of every stream, the STA weights of a few test videos (curves, channel ×
frame maps, frames with their temporal weights), colour-coded flow of a sample video, the parameter and compute
profile of the run's networks and its manifests; and, when the folder detected actions (``detection/report.json``),
the detection section. A folder that only detected actions gets that section alone. Images are embedded as base64 PNG; the PNGs (and the attention
weights as JSON) are also kept in ``<name>_files/`` beside the page. Every file is written atomically.
"""
from __future__ import annotations

from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flow.atomic import write_text_atomic
from pipelines.report import figures, html_page
from pipelines.report.detection_section import detection_section
from pipelines.report.sections import manifest_section, profile_section
from pipelines.report.tables import best_model, describe_fusion, top1_grid
from pipelines.report.run_folder import RunFolder, TrainingRun, open_run_folder

FLOW_SAMPLE_FRAMES = 6  # frame / flow pairs shown for the sample video


class _Images:
    """Writes figures into the page's files folder and embeds them, remembering every file of this report."""

    def __init__(self, folder: Path, page_dir: Path) -> None:
        self.folder, self.page_dir = folder, page_dir
        self.written: set[Path] = set()

    def figure(self, figure: Any, name: str, caption: str) -> str:
        return self.embed(figures.save(figure, self.folder / name), caption)

    def embed(self, path: Path, caption: str) -> str:
        self.keep(path)
        return html_page.image(path, caption, self.page_dir)

    def keep(self, path: Path) -> None:
        self.written.add(path.resolve())

    def remove_stale(self) -> None:
        """Files of an earlier report that this one did not write (a stream or video that is gone)."""
        for path in self.folder.iterdir():
            if path.suffix in (".png", ".json") and path.resolve() not in self.written:
                path.unlink()


def _results_section(run: RunFolder) -> str:
    report = run.fused
    models, splits, cells = top1_grid(report)
    best = best_model(report)
    headers = ["model"] + [f"split {s}" if s != "mean" else "mean" for s in splits]
    rows = [[model] + [f"{cells[(model, s)]:.2f}" if (model, s) in cells else "-" for s in splits]
            for model in models]
    parts = [
        html_page.paragraph(f"Fusion: {describe_fusion(report)}. Test protocol: {report.protocol}. "
                            f"Best model (mean top-1 over splits, highlighted): {best}."),
        "<h3>Top-1 accuracy (%)</h3>",
        html_page.table(headers, rows, [m == best for m in models]),
        "<details><summary>All measures (top-1, top-5, mean class accuracy, %)</summary>",
        html_page.table(["model", "split", "top-1", "top-5", "mean class", "videos"],
                        [[r.model, r.split, f"{r.top1:.2f}", f"{r.top5:.2f}", f"{r.mean_class:.2f}", r.videos]
                         for r in report.rows if r.split in splits]),
        "</details>",
    ]
    parts += [html_page.paragraph(f"Note: {note}", "note") for note in report.notes]
    return "\n".join(parts)


def _best_section(run: RunFolder, images: _Images) -> str:
    classes = run.fused.classes
    parts = []
    for split, entry in run.fused.best.items():
        title = f"split {split}: {entry.model} ({entry.top1:.2f}% top-1)"
        parts.append(f"<h3>{html_page.text(title)}</h3>")
        parts.append(images.figure(figures.confusion_figure(entry.confusion, classes, f"confusion, {title}"),
                                   f"confusion_split{split}.png", f"Confusion matrix of {title}; rows true, "
                                   "columns predicted."))
        parts.append(images.figure(figures.per_class_figure(entry.per_class, f"per-class top-1, {title}"),
                                   f"per_class_split{split}.png", f"Per-class top-1 of {title}."))
    return "\n".join(parts)


def _training_section(run: RunFolder, images: _Images) -> str:
    if not run.trainings:
        return html_page.paragraph("No training folders (split*/train-*) in this run.", "note")
    parts = []
    for training in run.trainings:
        if not training.metrics:
            parts.append(html_page.paragraph(f"{training.folder}: no metrics.jsonl", "note"))
            continue
        last = training.metrics[-1]
        title = (f"{training.stream}, split {training.split}: {len(training.metrics)} epoch(s), best validation "
                 f"top-1 {max(row.get('val_acc', 0.0) for row in training.metrics):.1f}%")
        parts.append(images.figure(figures.training_curves(training.metrics, title),
                                   f"curves_split{training.split}_{training.stream}.png",
                                   f"Training curves of {training.stream} (split {training.split}); last epoch "
                                   f"lr {last.get('lr', float('nan')):.3g}."))
    return "\n".join(parts)


def pick_videos(run: RunFolder, training: TrainingRun, count: int) -> list[tuple[str, int | None]]:
    """Test videos of different classes (the first of each class, in class order), with their labels."""
    from pipelines.scoring.scores import load_scores

    path = run.score_file(training.split, training.stream)
    if not path.is_file():
        from flow.store import FlowStore

        return [(video, None) for video in FlowStore(run.store).video_ids()[:count]]
    scores = load_scores(path)
    pairs = sorted(zip(scores.labels.tolist(), scores.video_ids.tolist()))
    chosen: list[tuple[str, int | None]] = []
    for label, video in pairs:
        if all(label != seen for _, seen in chosen):
            chosen.append((video, label))
    chosen += [(video, label) for label, video in pairs if (video, label) not in chosen]
    return chosen[:count]


def _sta_training(run: RunFolder) -> TrainingRun | None:
    return next((t for t in run.trainings if t.has_sta and t.best.is_file()), None)


def _attention_section(run: RunFolder, images: _Images, count: int, device: str, log: Callable[[str], None]) -> str:
    from pipelines.data.synth import motion_windows
    from pipelines.inference.attention import AttentionProbe, describe_selection, window_selection
    from pipelines.report.attention_figures import write_attention

    training = _sta_training(run)
    if training is None:
        return html_page.paragraph("No stream of this run has STA, so there are no attention weights to show.",
                                   "note")
    if run.store is None:
        return html_page.paragraph("The run's flow store was not found, so its videos cannot be shown.", "note")
    picks = pick_videos(run, training, count)
    if not picks:
        return html_page.paragraph("No videos asked for (--videos 0).", "note")
    parts = [html_page.paragraph(
        f"{training.stream} (split {training.split}, {training.best.name}, STA "
        f"{training.manifest['config']['sta']}) on {len(picks)} test video(s), every test clip. The temporal weight "
        "of a frame is the mean over channels of the STA gate W at that frame, interpolated from the feature map's "
        "time axis onto the clip's frames; the channel × frame maps show W itself. Where the data records each "
        "video's motion window (synthetic data made with motion_window), the gate's selection of it is given "
        "per channel as well as for the channel mean: channels can favour the window in opposite directions and "
        "cancel in the mean.")]
    probe = AttentionProbe(training.best, run.store, device)
    windows = motion_windows(probe.store.source_root.parent)
    for number, (video, label) in enumerate(picks, start=1):
        log(f"attention: {video}")
        attention = probe.video(video, label)
        window = windows.get(video)
        paths = write_attention(attention, images.folder, prefix=f"attention{number}_", window=window)
        images.keep(paths["json"])
        parts.append(f"<h3>{html_page.text(attention.describe())}</h3>")
        if window is not None:
            parts.append(html_page.paragraph(describe_selection(window_selection(attention, *window), *window)))
            parts.append(images.embed(paths["window_contrast"], "How each channel weighs the motion window: "
                                                                "W_in − W_out per channel and clip."))
        parts.append(images.embed(paths["overlay"], "Frames with their temporal weights (border colour, brightness "
                                                    "and bars)."))
        parts.append(images.embed(paths["frame_weights"], "Temporal weight per frame, one curve per test clip."))
        parts.append(images.embed(paths["channel_frame"], "STA weights W, channels × feature frames."))
    return "\n".join(parts)


def _flow_section(run: RunFolder, images: _Images) -> str:
    from flow.store import FlowStore
    from pipelines.report.attention_figures import flow_strip

    if run.store is None:
        return html_page.paragraph("The run's flow store was not found.", "note")
    store = FlowStore(run.store)
    ids = store.video_ids()
    if not ids:
        return html_page.paragraph(f"{run.store}: the store holds no videos.", "note")
    training = _sta_training(run) or (run.trainings[0] if run.trainings else None)
    picks = pick_videos(run, training, 1) if training else []
    video = picks[0][0] if picks else ids[0]
    frames, flow = store.frames(video), store.flow(video)
    indices = np.unique(np.linspace(0, len(flow) - 1, min(FLOW_SAMPLE_FRAMES, len(flow))).round().astype(int))
    preprocessing = store.preprocessing
    title = (f"{video}: TV-L1 ({preprocessing.get('tvl1_preset', 'default')} preset), bound ±{store.bound:g} px, "
             f"{preprocessing.get('quantization')} quantisation")
    return images.figure(flow_strip(frames, flow, indices, title), "flow_sample.png",
                         "Frames and their optical flow from the store: hue is the direction of motion, brightness "
                         "its magnitude.")


def write_run_report(run_dir: str | Path, out: str | Path | None = None, videos: int = 3, device: str = "auto",
                     log: Callable[[str], None] = print) -> Path:
    """Write the HTML report of a finished run (default ``RUN_DIR/report.html``) and its PNGs; return its path."""
    figures.require_matplotlib()
    run = open_run_folder(run_dir)
    out = Path(out) if out else run.root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    images = _Images(out.with_name(f"{out.stem}_files"), out.parent)
    images.folder.mkdir(parents=True, exist_ok=True)
    sections = [] if run.report is None else [
        ("Results", _results_section(run)),
        ("Best fusion per split", _best_section(run, images)),
        ("Training", _training_section(run, images)),
        ("STA attention", _attention_section(run, images, videos, device, log)),
        ("Optical flow", _flow_section(run, images)),
        ("Parameters and compute", profile_section(run)),
        ("Manifest", manifest_section(run)),
    ]
    if run.detection is not None:
        sections.append(("Temporal action detection", detection_section(run.detection, images.figure)))
    try:
        version = metadata.version("mars-sta")
    except metadata.PackageNotFoundError:
        version = "source checkout"
    dataset = ("temporal detection" if run.report is None else run.report.dataset or "dataset not named")
    subtitle = (f"{dataset}, run folder {run.root.resolve()}; written "
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} by mars-sta {version}")
    images.remove_stale()
    write_text_atomic(out, html_page.page(f"mars-sta run report: {dataset}", subtitle, sections))
    return out
