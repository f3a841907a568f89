"""The report's reference sections: what the networks cost (``mars_sta.profile``) and what the run was made of
(data, preprocessing, training settings, fusion inputs, library versions), from the manifests the run wrote."""
from __future__ import annotations

import json
from typing import Any

from pipelines.core.stream_specs import stream_spec
from pipelines.report import html_page
from pipelines.report.run_folder import RunFolder, TrainingRun, read_json


def _first_split(run: RunFolder) -> list[TrainingRun]:
    splits = sorted({t.split for t in run.trainings})
    return [t for t in run.trainings if t.split == splits[0]] if splits else []


def _profile_of(training: TrainingRun, num_classes: int):
    from mars_sta.profile import profile_model

    config = training.manifest.get("config", {})
    return profile_model(config["arch"], sta=config.get("sta") or None, frames=config["frames"],
                         size=config["size"], num_classes=num_classes,
                         in_channels=stream_spec(config.get("stream", "rgb")).in_channels)


def profile_section(run: RunFolder) -> str:
    """One row per stream (parameters, MACs and FLOPs per clip) and Table IV's view of each attention module."""
    rows, modules, problems = [], [], []
    for training in _first_split(run):
        try:
            profile = _profile_of(training, len(training.manifest.get("classes") or run.fused.classes))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{training.folder / 'manifest.json'}: cannot profile ({exc})")
            continue
        cost = profile.with_attention or profile.base
        rows.append([training.stream, cost.label, f"{profile.in_channels}×{profile.frames}×{profile.size}²",
                     f"{cost.params:,}", f"{cost.params_without_classifier:,}", f"{cost.macs / 1e9:.4f}",
                     f"{cost.flops / 1e9:.4f}"])
        modules += [[training.stream, m.name, m.kind, m.channels, m.length, f"{m.height}×{m.width}", f"{m.params:,}",
                     "-" if m.table4_params is None else f"{m.table4_params:,}", f"{m.macs:,}",
                     "-" if m.table4_mults is None else f"{m.table4_mults:,}"] for m in profile.attention]
    if not rows:
        return "\n".join(html_page.paragraph(p, "note") for p in problems) or \
            html_page.paragraph("No training manifests to profile.", "note")
    parts = [
        html_page.paragraph("One clip, batch 1, measured with torch's FlopCounterMode on meta tensors. GMACs are "
                            "multiply-accumulates (the paper's \"GFLOPs\"); GFLOPs (2/MAC) count a multiply-add as "
                            "two operations. Convolutions and matrix products only."),
        html_page.table(["stream", "network", "input (C×T×S²)", "params", "params w/o classifier", "GMACs",
                         "GFLOPs (2/MAC)"], rows),
    ]
    if modules:
        parts += ["<h3>Attention modules (Table IV: params c·(h·w+4)+5, mults c·l·(h·w+4)+3·l)</h3>",
                  html_page.table(["stream", "module", "kind", "c", "l", "h×w", "params", "Table IV", "MACs",
                                   "Table IV"], modules)]
    parts += [html_page.paragraph(p, "note") for p in problems]
    return "\n".join(parts)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _data_rows(run: RunFolder, store: dict[str, Any]) -> list[list[Any]]:
    classes = run.fused.classes
    rows: list[list[Any]] = [["dataset", run.fused.dataset or "not named"],
                             ["classes", f"{len(classes)}: {', '.join(classes)}"],
                             ["videos folder", store.get("source_root", "?")],
                             ["flow store", str(run.store) if run.store else "not found"]]
    if run.store is not None:
        rows.append(["videos in the store", len(list((run.store / "videos").rglob("*.h5")))])
    test_videos = {row.split: row.videos for row in run.fused.rows if isinstance(row.split, int)}
    for training in _first_split(run)[:1]:
        inputs = training.manifest.get("inputs", {})
        rows.append(["splits", inputs.get("splits", "splits/ beside the videos folder")])
    for split in sorted(test_videos):
        training = next((t for t in run.trainings if t.split == split), None)
        manifest = training.manifest if training else {}
        rows.append([f"split {split}", f"train {manifest.get('train_videos', '?')}, validation "
                                       f"{manifest.get('val_videos', '?')}, test {test_videos[split]} videos"])
    return rows


def _versions(run: RunFolder, store: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    sources = {"flow store": store.get("versions", {})}
    if run.trainings:
        sources["training"] = run.trainings[0].manifest.get("versions", {})
    sources["fusion"] = run.fused.manifest.get("versions", {})
    names = list(dict.fromkeys(name for versions in sources.values() for name in versions))
    return ["library", *sources], [[name, *(v.get(name, "-") for v in sources.values())] for name in names]


def manifest_section(run: RunFolder) -> str:
    """Data, preprocessing, training settings per stream, fusion inputs and versions, then the raw manifests."""
    store = read_json(run.store / "manifest.json") if run.store else {}
    parts = ["<h3>Data</h3>", html_page.table(["item", "value"], _data_rows(run, store), numbers=False)]
    if store:
        parts += [f"<h3>Preprocessing (flow store, created {html_page.text(store.get('created', '?'))})</h3>",
                  html_page.table(["setting", "value"],
                                  [[key, _cell(value)] for key, value in _flatten(store.get("preprocessing", {}))],
                                  numbers=False)]
    trainings = _first_split(run)
    if trainings:
        configs = [t.manifest.get("config", {}) for t in trainings]
        keys = list(dict.fromkeys(key for config in configs for key in config))
        parts += ["<h3>Training settings (first split)</h3>",
                  html_page.table(["setting", *(t.stream for t in trainings)],
                                  [[key, *(_cell(c.get(key, "-")) for c in configs)] for key in keys], numbers=False)]
    files = run.fused.score_files
    if files:
        parts += ["<h3>Fusion inputs</h3>",
                  html_page.table(["file", "stream", "split", "subset", "videos", "role", "sha256"],
                                  [[f.path, f.stream, f.split, f.subset, f.videos, f.role, f.sha256[:12]]
                                   for f in files], numbers=False)]
    headers, rows = _versions(run, store)
    parts += ["<h3>Versions</h3>", html_page.table(headers, rows, numbers=False), "<h3>Raw manifests</h3>"]
    if store:
        parts.append(html_page.details("flow store manifest.json", store))
    parts += [html_page.details(f"{t.folder.relative_to(run.root)}/manifest.json", t.manifest) for t in run.trainings]
    parts.append(html_page.details("fused/report.json manifest", run.fused.manifest))
    return "\n".join(parts)
