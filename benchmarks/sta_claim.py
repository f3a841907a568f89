"""Does STA pick the informative frames, in the paper's regime? Pretrained streams fine-tuned on windowed clips.

Run from the repository root::

    python -m benchmarks.sta_claim --quick                      # a couple of minutes: 2 seeds, short everything
    nice python -m benchmarks.sta_claim --out runs/sta-claim    # the full setting: 8 seeds (85 min on 2 shared cores)

The paper fine-tunes STA inside streams already trained on the dataset (the authors' code: MARS's 64-frame
checkpoints, only ``layer4`` and ``fc`` trained, the attention at 10× the learning rate, STA-MARS distilled from an
STA-Flow teacher). This benchmark does the same on synthetic clips whose class motion fills only a window of the
clip (``pipelines.data.synth``: ``motion_window`` steps at a random time, a random walk of ``distractor`` px per
frame outside it), so that a gate that favours the window's frames has something to gain:

1. per seed, a Flow and an RGB network (the tiny 3D ResNet at half width, 16 px) are trained on full-motion clips;
2. each arm fine-tunes the last stage and ``fc`` from those weights, on windowed clips, with the same seed, batch
   order and dropout draws: plain; STA (``layer3:bn`` with ``init=authors``, and with the project's identity
   init) on the residual branch; STA on the trunk (``:output``, ``init=authors``); an oracle mask (1 inside the
   window, 0 outside, ``mars_sta.interventions``) on the residual branch and on the trunk. MARS arms distil from
   the Flow network of the same arm (STA-MARS from STA-Flow). STA arms are also tested with W replaced by its mean
   over time (constant-W);
3. the same arms fine-tuned and tested on full-motion clips are the control: there no frame is more informative.

Differences to plain are paired within a seed (same pretrained weights, data, batches); the tables give their mean
with a 95 % t interval over seeds. The gate's selection on windowed test clips: the share of the channel-mean weight
inside the window (against the uniform share), the share of channels with W_in > W_out and the mean |W_in − W_out|
(``pipelines.inference.attention.gate_selection``). The flow is OpenCV's Farneback on the 32 px renders (TV-L1
costs about 15× more), both streams are then downsampled to 16 px: sizes chosen so that 8 seeds fit in about 40
minutes on 2 cores. Training runs here, in memory, not through ``pipelines.core.training`` (whose loop writes a
checkpoint per epoch: hundreds of short fine-tunes would spend their time on files). Finished seeds are read back
from ``--out``, so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from mars_sta import MARSLoss, parse_sta
from mars_sta.blocks import BasicBlock
from mars_sta.interventions import constant_in_time, set_frame_masks, use_oracle, window_masks
from mars_sta.resnet import ResNet3D
from mars_sta.sta import STA, attention_modules
from pipelines.data.synth import SynthConfig, render_clip
from pipelines.inference.attention import gate_selection


@dataclass(frozen=True)
class Setting:
    """Sizes of one run; ``FULL`` meets the claim's bar (8 seeds, ≥ 2,000 gate updates, ≥ 1,000 test clips)."""

    seeds: tuple[int, ...] = tuple(range(8))
    classes: int = 10
    steps: int = 8  # flow pairs per clip (frames - 1); the network sees this many frames
    window: int = 3  # steps of class motion in a windowed clip (the old benchmark's 6 of 16)
    distractor: float = 1.0  # px per frame of random walk outside the window
    render_size: int = 32  # px the clips are drawn and the flow computed at
    size: int = 16  # px the networks see
    pretrain_clips: int = 1200
    train_clips: int = 1000  # per fine-tuning set (windowed, full-motion)
    test_clips: int = 1000
    pretrain_epochs: int = 20
    finetune_steps: int = 2000
    batch: int = 16
    lr: float = 1e-3
    attention_lr_mult: float = 10.0  # the authors' 10× on the attention parameters
    alpha: float = 10.0  # MARS, on the MSE normalised by the teacher's mean square (the demo's setting)


FULL = Setting()
QUICK = Setting(seeds=(0, 1), pretrain_clips=400, train_clips=300, test_clips=300, pretrain_epochs=8,
                finetune_steps=150)

# Arm name -> the sta spec it is built with; oracle arms replace that attention by the oracle mask.
ARMS = {
    "plain": None,
    "sta-authors": "layer3:bn:init=authors",
    "sta-identity": "layer3:bn",
    "sta-trunk": "layer3:bn:output:init=authors",
    "oracle-residual": "layer3:ta",
    "oracle-trunk": "layer3:ta:output",
}
STA_ARMS = ("sta-authors", "sta-identity", "sta-trunk")
MARS_ARMS = ("plain", *STA_ARMS)
REGIMES = ("windowed", "full")


@dataclass
class ClipSet:
    """Clips of one set as network inputs, with labels and each clip's motion window on its frames."""

    rgb: torch.Tensor  # (N, 3, steps, size, size)
    flow: torch.Tensor  # (N, 2, steps, size, size)
    labels: torch.Tensor
    masks: torch.Tensor  # (N, steps) bool: inside the motion window

    def stream(self, name: str) -> torch.Tensor:
        return self.flow if name == "flow" else self.rgb


def render_set(setting: Setting, seed: int, part: int, count: int, windowed: bool) -> ClipSet:
    """``count`` clips of a synthetic set of its own (``part`` keeps the sets of one seed apart)."""
    config = SynthConfig(classes=setting.classes, videos_per_class=math.ceil(count / setting.classes),
                         frames=setting.steps + 1, size=setting.render_size, seed=seed * 16 + part,
                         motion_window=setting.window if windowed else 0,
                         distractor=setting.distractor if windowed else 0.0, bg_saturation=0.55)
    rgb, flow, labels, starts, stops = [], [], [], [], []
    for i in range(count):
        clip, facts = render_clip(config, i % setting.classes, i // setting.classes)
        rgb.append(_shrink(clip[:-1].astype(np.float32) / 255.0, setting.size))
        flow.append(_shrink(_farneback(clip), setting.size))
        labels.append(i % setting.classes)
        starts.append(facts["window_start"])
        stops.append(facts["window_stop"])
    rgb_tensor = (torch.from_numpy(np.stack(rgb)) - 0.45) / 0.25
    flow_tensor = torch.from_numpy(np.stack(flow)) / 2.0  # px at 16 px (half the 32 px values): roughly unit scale
    masks = window_masks(torch.tensor(starts), torch.tensor(stops), setting.steps)
    return ClipSet(rgb_tensor.permute(0, 4, 1, 2, 3).contiguous(), flow_tensor.permute(0, 4, 1, 2, 3).contiguous(),
                   torch.tensor(labels), masks)


def _farneback(clip: np.ndarray) -> np.ndarray:
    """(steps, H, W, 2) optical flow in pixels between consecutive frames (OpenCV's Farneback)."""
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clip]
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 7, 2, 5, 1.1, 0)
                     for a, b in zip(grey[:-1], grey[1:])])


def _shrink(frames: np.ndarray, size: int) -> np.ndarray:
    """Area-average every frame (T, H, W, C) down to size × size; flow is scaled to the new pixels by the caller."""
    return np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA) for frame in frames])


def build(setting: Setting, in_channels: int, arm: str) -> ResNet3D:
    """The tiny 3D ResNet's design (``mars_sta.tiny``) at half its widths, with the arm's attention."""
    model = ResNet3D(BasicBlock, (1, 1, 1), num_classes=setting.classes, in_channels=in_channels,
                     sample_size=setting.size, attention=parse_sta(ARMS[arm]), widths=(8, 16, 32),
                     stage_strides=((1, 1, 1), (1, 2, 2), (1, 2, 2)), stem_width=8, stem_kernel=(3, 5, 5),
                     stem_stride=(1, 2, 2), max_pool=False, dropout=0.3)
    if arm.startswith("oracle"):
        use_oracle(model)
    return model


def pretrain(setting: Setting, data: ClipSet, stream: str, seed: int) -> ResNet3D:
    """A plain stream trained on full-motion clips: AdamW, one-cycle, the seed's batch order."""
    torch.manual_seed(seed)
    model = build(setting, data.stream(stream).shape[1], "plain").train()
    steps_per_epoch = len(data.labels) // setting.batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=setting.pretrain_epochs
                                                   * steps_per_epoch, pct_start=0.15)
    order = np.random.default_rng([seed, 1])
    for _ in range(setting.pretrain_epochs):
        batches = order.permutation(steps_per_epoch * setting.batch).reshape(steps_per_epoch, setting.batch)
        for batch in batches:
            loss = F.cross_entropy(model(data.stream(stream)[batch]), data.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def trunk_features(model: ResNet3D, clips: torch.Tensor) -> torch.Tensor:
    """What the fine-tuned last stage reads: the frozen stem and first two stages, in eval mode."""
    model.eval()
    parts = [model.layer2(model.layer1(model.relu(model.bn1(model.conv1(chunk))))) for chunk in clips.split(256)]
    return torch.cat(parts)


class Head(nn.Module):
    """The part that is fine-tuned: ``layer3`` (with the arm's attention), pool, dropout, ``fc``."""

    def __init__(self, model: ResNet3D) -> None:
        super().__init__()
        self.layer3, self.avgpool, self.dropout, self.fc = model.layer3, model.avgpool, model.dropout, model.fc

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.flatten(self.avgpool(self.layer3(features)), 1)
        return self.fc(self.dropout(pooled)), pooled


def head_for(setting: Setting, base: ResNet3D, arm: str) -> Head:
    """The arm's network with the pretrained weights (its attention keeps its own init), cut to the head."""
    torch.manual_seed(0)  # every arm's attention starts alike whatever the seed; the seed decides data and batches
    model = build(setting, base.conv1.in_channels, arm)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".sta." in key for key in missing)
    return Head(model)


def _batches(setting: Setting, count: int, seed: int) -> np.ndarray:
    """(finetune_steps, batch) clip indices: whole shuffled epochs, the same for every arm of a seed."""
    order = np.random.default_rng([seed, 2])
    per_epoch = count // setting.batch
    epochs = math.ceil(setting.finetune_steps / per_epoch)
    rows = [order.permutation(count)[: per_epoch * setting.batch].reshape(per_epoch, setting.batch)
            for _ in range(epochs)]
    return np.concatenate(rows)[: setting.finetune_steps]


def fine_tune(setting: Setting, head: Head, features: torch.Tensor, data: ClipSet, seed: int,
              teacher: torch.Tensor | None = None) -> None:
    """AdamW with cosine decay, the attention at ``attention_lr_mult`` × the rate; CE, or the MARS loss when a
    teacher's features are given. Each step sets the seed before it, so dropout draws the same in every arm."""
    attention = [p for _, module in attention_modules(head) for p in module.parameters()]
    chosen = {id(p) for p in attention}
    groups = [{"params": [p for p in head.parameters() if id(p) not in chosen], "lr": setting.lr}]
    if attention:
        groups.append({"params": attention, "lr": setting.lr * setting.attention_lr_mult})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, setting.finetune_steps)
    mars = MARSLoss(setting.alpha, normalize=True)
    head.train()
    for step, batch in enumerate(_batches(setting, len(data.labels), seed)):
        torch.manual_seed(seed * 100_000 + step)
        set_frame_masks(head, data.masks[batch])
        logits, pooled = head(features[batch])
        if teacher is None:
            loss = F.cross_entropy(logits, data.labels[batch])
        else:
            loss = mars(logits, data.labels[batch], pooled, teacher[batch]).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


@torch.no_grad()
def _predict(head: Head, features: torch.Tensor, data: ClipSet, gates: list[torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes and pooled features of every clip (eval mode); the STA gate per clip into ``gates``."""
    head.eval()
    predicted, pooled = [], []
    stas = [module for _, module in attention_modules(head) if isinstance(module, STA)]
    for chunk in torch.arange(len(data.labels)).split(500):
        set_frame_masks(head, data.masks[chunk])
        logits, features_out = head(features[chunk])
        predicted.append(logits.argmax(1))
        pooled.append(features_out)
        if gates is not None and stas:
            gates.append(stas[-1].last_weights.flatten(2))  # type: ignore[union-attr]
    return torch.cat(predicted), torch.cat(pooled)


def evaluate(head: Head, features: torch.Tensor, data: ClipSet) -> dict:
    """Top-1 %; for STA arms also top-1 with W constant in time and the gate's selection of the window."""
    gates: list[torch.Tensor] = []
    predicted, _ = _predict(head, features, data, gates)
    result: dict = {"top1": 100.0 * (predicted == data.labels).float().mean().item()}
    if gates:
        selection = gate_selection(torch.cat(gates).numpy(), data.masks.numpy())
        result["selection"] = None if selection is None else asdict(selection)
        with constant_in_time(head):
            constant, _ = _predict(head, features, data)
        result["constant_w_top1"] = 100.0 * (constant == data.labels).float().mean().item()
    return result


def run_regime(setting: Setting, seed: int, bases: dict[str, ResNet3D], train: ClipSet, test: ClipSet) -> dict:
    """Every arm fine-tuned on ``train`` and tested on ``test``: Flow, RGB, and MARS from the arm's own Flow."""
    features = {stream: (trunk_features(bases[stream], train.stream(stream)),
                         trunk_features(bases[stream], test.stream(stream))) for stream in ("flow", "rgb")}
    results = {}
    for arm in ARMS:
        teacher = None
        for stream in ("flow", "rgb", "mars") if arm in MARS_ARMS else ("flow", "rgb"):
            source = "rgb" if stream == "mars" else stream
            head = head_for(setting, bases[source], arm)
            fine_tune(setting, head, features[source][0], train, seed, teacher if stream == "mars" else None)
            results[f"{stream}/{arm}"] = evaluate(head, features[source][1], test)
            if stream == "flow":
                teacher = _predict(head, features["flow"][0], train)[1]
    return results


def run_seed(setting: Setting, seed: int, out: Path) -> dict:
    """Data, pretraining and both regimes of one seed; read back when ``out`` already holds it."""
    done = out / f"seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    pretraining = render_set(setting, seed, 0, setting.pretrain_clips, windowed=False)
    sets = {regime: (render_set(setting, seed, 1 + 2 * i, setting.train_clips, regime == "windowed"),
                     render_set(setting, seed, 2 + 2 * i, setting.test_clips, regime == "windowed"))
            for i, regime in enumerate(REGIMES)}
    data_seconds = time.perf_counter() - started
    bases = {stream: pretrain(setting, pretraining, stream, seed) for stream in ("flow", "rgb")}
    pretrained = {f"{stream}/{regime}": 100.0 * (_predict(Head(base), trunk_features(base, test.stream(stream)),
                                                          test)[0] == test.labels).float().mean().item()
                  for stream, base in bases.items() for regime, (_, test) in sets.items()}
    result = {"seed": seed, "pretrained_top1": pretrained,
              "regimes": {regime: run_regime(setting, seed, bases, *sets[regime]) for regime in REGIMES},
              "seconds": {"data": round(data_seconds, 1), "total": round(time.perf_counter() - started, 1)}}
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=1))
    return result


def _worker(setting: Setting, seed: int, out: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    return run_seed(setting, seed, out)


def interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of paired differences."""
    values = np.asarray(differences, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def _show(differences: list[float]) -> str:
    mean, low, high = interval(differences)
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


def _gain(results: list[dict], regime: str, key: str, field: str = "top1") -> list[float]:
    """Per seed: the arm's ``field`` less plain's top-1 of the same stream and regime."""
    stream = key.split("/")[0]
    return [r["regimes"][regime][key][field] - r["regimes"][regime][f"{stream}/plain"]["top1"] for r in results]


def print_top1(results: list[dict]) -> None:
    print("| stream / arm | windowed top-1 | − plain | full-motion top-1 | − plain | gain windowed − gain full |")
    print("|---|---|---|---|---|---|")
    for key in results[0]["regimes"]["windowed"]:
        means = [np.mean([r["regimes"][regime][key]["top1"] for r in results]) for regime in REGIMES]
        if key.endswith("/plain"):
            print(f"| {key} | {means[0]:.1f} | | {means[1]:.1f} | | |")
            continue
        windowed, full = _gain(results, "windowed", key), _gain(results, "full", key)
        print(f"| {key} | {means[0]:.1f} | {_show(windowed)} | {means[1]:.1f} | {_show(full)} "
              f"| {_show([w - f for w, f in zip(windowed, full)])} |")


def print_sta(results: list[dict]) -> None:
    print("\n| stream / arm | regime | top-1 | constant-W top-1 | lost when W is constant "
          "| channel-mean share in window (uniform) | channels with W_in > W_out | mean abs(W_in − W_out) |")
    print("|---|---|---|---|---|---|---|---|")
    for key, first in results[0]["regimes"]["windowed"].items():
        if "constant_w_top1" not in first:
            continue
        for regime in REGIMES:
            rows = [r["regimes"][regime][key] for r in results]
            lost = [row["top1"] - row["constant_w_top1"] for row in rows]
            chosen = [row["selection"] for row in rows if row.get("selection")]
            measured = "| – | – | – |"
            if chosen:
                share, uniform, favouring, contrast = (np.mean([c[k] for c in chosen]) for k in (
                    "channel_mean_share", "uniform_share", "channels_favouring_window", "mean_abs_contrast"))
                measured = f"| {share:.3f} ({uniform:.3f}) | {favouring:.3f} | {contrast:.4f} |"
            print(f"| {key} | {regime} | {np.mean([row['top1'] for row in rows]):.1f} "
                  f"| {np.mean([row['constant_w_top1'] for row in rows]):.1f} | {_show(lost)} {measured}")


def print_checks(results: list[dict]) -> None:
    """The claim's three tests per STA arm, with the oracle's gain at the same placement beside them."""
    print("\n| stream / arm | beats plain, windowed (interval > 0) | gains more windowed than full "
          "| loses with constant W, windowed | oracle gain at its placement, windowed |")
    print("|---|---|---|---|---|")
    for key, first in results[0]["regimes"]["windowed"].items():
        if "constant_w_top1" not in first:
            continue
        stream, arm = key.split("/")
        windowed, full = _gain(results, "windowed", key), _gain(results, "full", key)
        lost = [r["regimes"]["windowed"][key]["top1"] - r["regimes"]["windowed"][key]["constant_w_top1"]
                for r in results]
        oracle = f"{'flow' if stream == 'flow' else 'rgb'}/oracle-{'trunk' if arm == 'sta-trunk' else 'residual'}"
        checks = [interval(values)[1] > 0 for values in (windowed, [w - f for w, f in zip(windowed, full)], lost)]
        print(f"| {key} | {'yes' if checks[0] else 'no'} | {'yes' if checks[1] else 'no'} "
              f"| {'yes' if checks[2] else 'no'} | {oracle}: {_show(_gain(results, 'windowed', oracle))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, small sets, 150 steps: checks it runs")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: 0-7, or 0-1 with --quick)")
    parser.add_argument("--out", type=Path, default=Path("runs/sta-claim"))
    parser.add_argument("--workers", type=int, default=2,
                        help="seeds run side by side, each in its own process; the cores are shared out")
    args = parser.parse_args()
    setting = QUICK if args.quick else FULL
    if args.seeds:
        setting = replace(setting, seeds=tuple(args.seeds))
    out = args.out / ("quick" if args.quick else "full")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit or '?'}; {platform.processor() or platform.machine()}; torch {torch.__version__}; "
          f"{asdict(setting)}", flush=True)
    started = time.perf_counter()
    results = _run_seeds(setting, out, max(1, args.workers))
    print("pretrained top-1 before fine-tuning (mean over seeds): " + ", ".join(
        f"{key} {np.mean([r['pretrained_top1'][key] for r in results]):.1f}" for key in results[0]["pretrained_top1"]))
    print_top1(results)
    print_sta(results)
    print_checks(results)
    print(f"\nwall time {time.perf_counter() - started:.0f} s for {len(results)} seeds "
          f"(per seed as run: {', '.join(str(r['seconds']['total']) for r in results)} s)")


def _run_seeds(setting: Setting, out: Path, workers: int) -> list[dict]:
    if workers == 1:
        results = []
        for seed in setting.seeds:
            results.append(run_seed(setting, seed, out))
            print(f"seed {seed} done ({results[-1]['seconds']['total']} s)", flush=True)
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, setting, seed, out, threads) for seed in setting.seeds]
        results = []
        for seed, future in zip(setting.seeds, futures):
            results.append(future.result())
            print(f"seed {seed} done ({results[-1]['seconds']['total']} s)", flush=True)
        return results


if __name__ == "__main__":
    main()
