"""How time and memory grow with the work: wall time and peak RSS of every step at 1x, 4x and 16x its size.

Each step runs as a process of its own, so its peak RSS is its own (``os.wait4`` reports it: the largest process of
the step, worker processes included). Workloads:

* ``store``: the number of videos, up to UCF-101's 13,320 (tiny 8-frame 32 px clips, one per class, hard-linked
  under every name): extraction in two shards, a rerun with nothing left to do (the resume scan), merge-stores,
  verify-store, opening and listing the store, building the training loader's index, and an evaluation plan
  (opening, listing and planning every test video's views; no network). The last three are timed inside their
  process, without the interpreter's start; the others are whole commands as a user runs them;
* ``untrimmed``: the length of two untrimmed 112 px videos (10 s of synthetic video tiled up to THUMOS-like
  minutes): ``features``, S-CNN training (one epoch; the action instances stay those of the first 10 s, so the
  number of steps is fixed while the video grows) and R-C3D detection, with 96-frame buffers so that even the
  shortest video holds several and what grows beyond one buffer shows;
* ``geometry``: one ResNeXt-101 training step on 64 x 112 x 112 clips at batch 1 and 2 on the CPU, in float32 and
  under bf16 autocast, with the per-clip memory they imply for batch 32.

The growth exponent of a step is the slope of log cost against log size (least squares over the sizes). Goals:
time exponent <= 1.1 and memory exponent <= 0.2 for every store and untrimmed step, and a 13,320-video store that
opens and lists in under 2 s.

    PYTHONPATH=. python benchmarks/scale.py [--quick] [--only store,untrimmed,geometry] [--work DIR]

``--quick`` divides the store sizes by 16, starts the untrimmed videos at 100 frames and takes 16-frame clips for
the geometry (a few minutes in all). ``--work`` names an empty or new folder that keeps the data; without it the
data goes to a temporary folder that is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import describe  # noqa: E402

CLI = [sys.executable, "-m", "cli"]
GROWTH = (1, 4, 16)
UCF101_VIDEOS = 13_320
STORE_CLASSES = 101
UNTRIMMED_FRAMES = 250  # 10 s at 25 fps, the 1x length
NETWORK_SIZE = 112  # the detectors' clip side in this benchmark
BUFFER = 96  # R-C3D's and features' buffer, sampled frames: every size holds several, so growth beyond one shows
TIME_GOAL, MEMORY_GOAL, LIST_GOAL_S = 1.1, 0.2, 2.0


@dataclass
class Cost:
    """What one step took: wall seconds and the peak RSS of its largest process, in MiB."""

    seconds: float
    peak_mib: float

    def plus(self, other: Cost) -> Cost:
        """Two processes run one after the other: their times add, the peak is the larger."""
        return Cost(self.seconds + other.seconds, max(self.peak_mib, other.peak_mib))


def run_step(command: list[str]) -> tuple[Cost, str]:
    """Run ``command`` from the repository root; its cost and output. A failing step stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    output = process.stdout.read()  # drained before waiting, so a full pipe never blocks the child
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"step failed ({process.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return Cost(seconds, usage.ru_maxrss / 1024), output


def probe(kind: str, *args: str) -> tuple[Cost, dict]:
    """An in-process step of this script run as its own process; also returns what the probe printed (JSON)."""
    cost, output = run_step([sys.executable, str(Path(__file__).resolve()), "--probe", kind, *args])
    return cost, json.loads(output.strip().splitlines()[-1])


def exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log value against log size."""
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


# -- store workload ------------------------------------------------------------------------------------------------
def write_sources(folder: Path) -> list[Path]:
    """One 8-frame 32 px MJPG clip per class (the synthetic generator's motions), to be hard-linked many times."""
    import cv2

    from pipelines.data.synth import SynthConfig, render_clip

    config = SynthConfig(size=32, frames=8)
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for index in range(STORE_CLASSES):
        clip, _ = render_clip(config, index % config.classes, index)
        path = folder / f"source{index:03d}.avi"
        writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 32))
        for frame in clip:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        sources.append(path)
    return sources


def link_dataset(sources: list[Path], folder: Path, count: int) -> None:
    """``count`` videos in UCF-101's layout (``videos/<Class>/v_<Class>_gGG_cCC.avi``) and its split files."""
    classes = [f"Class{index:03d}" for index in range(STORE_CLASSES)]
    train: list[str] = []
    test: list[str] = []
    for k in range(count):
        label, rank = k % STORE_CLASSES, k // STORE_CLASSES
        name = f"{classes[label]}/v_{classes[label]}_g{rank // 4 + 1:02d}_c{rank % 4 + 1:02d}.avi"
        target = folder / "videos" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[label], target)
        (test if k % 3 == 0 else train).append(name)  # about UCF-101's share of test videos
    splits = folder / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(classes)))
    (splits / "trainlist01.txt").write_text("".join(f"{name}\n" for name in train))
    (splits / "testlist01.txt").write_text("".join(f"{name}\n" for name in test))


def store_steps(folder: Path, count: int, sources: list[Path]) -> dict[str, Cost]:
    """Every store step on a dataset of ``count`` videos."""
    link_dataset(sources, folder, count)
    videos, shards = folder / "videos", [folder / "shard0", folder / "shard1"]
    extract = [*CLI, "extract-flow", str(videos), "--short-side", "0", "--preset", "cheap", "--workers", "2",
               "--no-progress"]
    costs = {"extract (2 shards)": run_step([*extract, "--out", str(shards[0]), "--shard", "0/2"])[0].plus(
        run_step([*extract, "--out", str(shards[1]), "--shard", "1/2"])[0])}
    costs["extract rerun (resume scan)"] = run_step([*extract, "--out", str(shards[0]), "--shard", "0/2"])[0]
    store = folder / "store"
    costs["merge-stores"] = run_step([*CLI, "merge-stores", *map(str, shards), "--out", str(store)])[0]
    costs["verify-store"] = run_step([*CLI, "verify-store", str(store)])[0]
    for kind in ("open-list", "loader-index", "eval-plan"):  # timed inside the process: no interpreter start
        cost, printed = probe(kind, str(store), str(folder / "splits"))
        costs[kind] = Cost(printed["seconds"], cost.peak_mib)
    return costs


# -- untrimmed workload ----------------------------------------------------------------------------------------------
def untrimmed_base(folder: Path, frames: int) -> Path:
    """Two synthetic untrimmed 112 px videos of ``frames`` frames (one val, one test), extracted with cheap TV-L1."""
    from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed

    config = UntrimmedConfig(size=112, val_videos=1, test_videos=1, frames=(frames, frames), instances=(2, 3),
                             ambiguous_probability=0.0)
    generate_untrimmed(folder / "synth", config)
    store = folder / "base-store"
    run_step([*CLI, "extract-flow", str(folder / "synth" / "videos"), "--out", str(store), "--short-side", "0",
              "--preset", "cheap", "--workers", "2", "--no-progress"])
    return store


def tiled_store(base: Path, out: Path, times: int) -> None:
    """The base store's videos repeated ``times`` times end to end, written with the store's own file writer."""
    import h5py

    from flow.store import VideoFileWriter

    (out / "videos").mkdir(parents=True)
    shutil.copy(base / "manifest.json", out / "manifest.json")
    for source in sorted((base / "videos").glob("*.h5")):
        with h5py.File(source, "r") as handle:
            jpegs, codes = handle["frames"][:], handle["flow"][:]
            attrs = {k: v for k, v in handle.attrs.items() if k not in ("height", "width")}
            height, width = int(handle.attrs["height"]), int(handle.attrs["width"])
        writer = VideoFileWriter(out / "videos" / source.name, attrs)
        for copy in range(times):
            for jpeg in jpegs:
                writer.add_jpeg(jpeg)
            for field in codes:
                writer.add_flow(field)
            if copy + 1 < times:
                writer.add_flow(codes[-1])  # the flow across the seam: any field of the right shape
        writer.commit(height, width)


def tiled_annotations(synth: Path, out: Path, times: int) -> None:
    """The val video keeps the first copy's instances (a fixed training set); the test video's repeat."""
    payload = json.loads((synth / "annotations.json").read_text())
    for video, entry in payload["database"].items():
        length = entry["duration"]
        entry["duration"] = round(length * times, 2)
        if entry["subset"] == "testing":
            entry["annotations"] = [{**item, "segment": [round(s + copy * length, 2) for s in item["segment"]]}
                                    for copy in range(times) for item in entry["annotations"]]
    out.write_text(json.dumps(payload))


def untrimmed_steps(folder: Path, base: Path, times: int, rc3d_model: Path) -> dict[str, Cost]:
    """features, one S-CNN epoch and R-C3D detection on the videos tiled ``times`` times."""
    store, truth = folder / f"store-{times}x", folder / f"annotations-{times}x.json"
    if not store.exists():
        tiled_store(base, store, times)
        tiled_annotations(folder / "synth", truth, times)
    common = ["--device", "cpu", "--no-progress"]
    costs = {"features": run_step([*CLI, "features", "--checkpoint", str(rc3d_model / "rc3d.pth"), "--store",
                                   str(store), "--out", str(folder / f"features-{times}x"), "--buffer",
                                   str(BUFFER), *common])[0]}
    costs["S-CNN training (1 epoch)"] = run_step(
        [*CLI, "train-detector", "--store", str(store), "--annotations", str(truth), "--out",
         str(folder / f"scnn-{times}x"), "--arch", "tiny_resnet", "--stream", "rgb", "--size", str(NETWORK_SIZE),
         "--epochs", "1", *common])[0]
    costs["R-C3D detection"] = run_step(
        [*CLI, "detect", "--model", str(rc3d_model), "--store", str(store), "--annotations", str(truth),
         "--subset", "test", "--out", str(folder / f"detections-{times}x.json"), *common])[0]
    return costs


def trained_rc3d(folder: Path, base: Path) -> Path:
    """An R-C3D (tiny 3D ResNet) trained one epoch on the 1x videos: the model ``detect`` and ``features`` run."""
    tiled_store(base, folder / "store-1x", 1)
    tiled_annotations(folder / "synth", folder / "annotations-1x.json", 1)
    model, config = folder / "rc3d", folder / "rc3d.toml"
    config.write_text(f"[detection.rc3d]\nbuffer = {BUFFER}\n")
    run_step([*CLI, "train-detector", "--detector", "rc3d", "--config", str(config), "--store", str(folder / "store-1x"), "--annotations",
              str(folder / "annotations-1x.json"), "--out", str(model), "--arch", "tiny_resnet", "--stream", "rgb",
              "--size", str(NETWORK_SIZE), "--epochs", "1", "--device", "cpu", "--no-progress"])
    return model


# -- geometry workload ---------------------------------------------------------------------------------------------
def training_step(batch: int, frames: int, bf16: bool) -> dict:
    """One ResNeXt-101 SGD step on random ``batch`` x 3 x ``frames`` x 112 x 112 clips; its seconds."""
    import torch

    from mars_sta import build_model

    model = build_model("resnext101", num_classes=101, in_channels=3, sample_size=112, sample_duration=frames)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs, labels = torch.randn(batch, 3, frames, 112, 112), torch.zeros(batch, dtype=torch.long)
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    loss.backward()
    optimizer.step()
    return {"seconds": time.perf_counter() - started, "parameters": sum(p.numel() for p in model.parameters())}


def geometry_steps(frames: int) -> dict[str, Cost]:
    costs = {}
    for batch, bf16 in ((1, False), (2, False), (1, True), (2, True)):
        cost, printed = probe("train-step", str(batch), str(frames), "bf16" if bf16 else "fp32")
        costs[f"batch {batch} {'bf16 autocast' if bf16 else 'fp32'}"] = Cost(printed["seconds"], cost.peak_mib)
    return costs


def print_geometry(costs: dict[str, Cost], frames: int) -> None:
    print(f"\n## ResNeXt-101 training step, {frames} x 112 x 112 clips, CPU "
          "(seconds of the step itself; peak RSS of the process)")
    for name, cost in costs.items():
        print(f"  {name:<22} {cost.seconds:8.1f} s  {cost.peak_mib:9.0f} MiB")
    for precision in ("fp32", "bf16 autocast"):
        one, two = costs[f"batch 1 {precision}"].peak_mib, costs[f"batch 2 {precision}"].peak_mib
        per_clip, fixed = two - one, 2 * one - two
        print(f"  {precision}: {per_clip:.0f} MiB per clip, {fixed:.0f} MiB fixed (interpreter, weights, gradients); "
              f"batch 32 by linear extrapolation {(fixed + 32 * per_clip) / 1024:.1f} GiB")


# -- probes: in-process steps, each run in a process of its own ------------------------------------------------------
def run_probe(kind: str, args: list[str]) -> dict:
    if kind == "train-step":
        return training_step(int(args[0]), int(args[1]), args[2] == "bf16")
    from flow.store import FlowStore
    from pipelines.data.clips import ClipDataset
    from pipelines.data.dataset import open_stage_data

    store, splits = Path(args[0]), Path(args[1])
    started = time.perf_counter()
    if kind == "open-list":
        return {"seconds": time.perf_counter() - started, "videos": len(FlowStore(store).video_ids())}
    data = open_stage_data(store, splits, 1, 0.1, 0)
    if kind == "loader-index":
        dataset = ClipDataset(data.store, data.train, "rgb+flow", 16, 112, train=True)
        return {"seconds": time.perf_counter() - started, "clips": len(dataset)}
    plan = data.video_dataset(data.test, "rgb+flow", 16, 112)
    views = sum(len(plan.windows(video)) for video, _ in data.test)
    return {"seconds": time.perf_counter() - started, "views": views}


# -- report --------------------------------------------------------------------------------------------------------
def print_growth(title: str, unit: str, sizes: list[int], table: dict[str, dict[int, Cost]]) -> list[str]:
    """The table of one workload with each step's exponents; returns the steps that miss a goal."""
    print(f"\n## {title}")
    print(f"  {'step':<30}" + "".join(f"{f'{size} {unit}':>22}" for size in sizes) + "   time exp  memory exp")
    misses = []
    for step, by_size in table.items():
        cells = "".join(f"{f'{by_size[s].seconds:8.2f} s {by_size[s].peak_mib:6.0f} MiB':>22}" for s in sizes)
        time_exp = exponent(sizes, [by_size[s].seconds for s in sizes])
        memory_exp = exponent(sizes, [by_size[s].peak_mib for s in sizes])
        verdict = "" if time_exp <= TIME_GOAL and memory_exp <= MEMORY_GOAL else "  <- misses a goal"
        misses += [step] if verdict else []
        print(f"  {step:<30}{cells}   {time_exp:8.2f}  {memory_exp:10.2f}{verdict}")
    return misses


def grow(sizes: list[int], steps_at: Callable[[int], dict[str, Cost]]) -> dict[str, dict[int, Cost]]:
    """Run ``steps_at(size)`` for every size; step -> size -> cost, printed as it goes."""
    table: dict[str, dict[int, Cost]] = {}
    for size in sizes:
        for step, cost in steps_at(size).items():
            table.setdefault(step, {})[size] = cost
            print(f"    {size:>6}  {step:<30} {cost.seconds:8.2f} s  {cost.peak_mib:7.0f} MiB", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every size divided by 16, 16-frame geometry")
    parser.add_argument("--only", default="store,untrimmed,geometry", help="comma-separated workloads")
    parser.add_argument("--work", type=Path, help="an empty or new folder for the data (default: a temporary one, "
                        "removed)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(run_probe(args.probe[0], args.probe[1:])))
        return
    if args.work and args.work.is_dir() and any(args.work.iterdir()):
        parser.error(f"--work {args.work}: the folder holds files; give an empty or new one (every step writes anew)")
    divide = 16 if args.quick else 1
    work = args.work or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{describe()}; python {sys.version.split()[0]}; work folder {work}", flush=True)
    started, results, misses = time.perf_counter(), {}, []
    try:
        only = set(args.only.split(","))
        if "store" in only:
            sizes = [UCF101_VIDEOS // 16 // divide * g for g in GROWTH[:-1]] + [UCF101_VIDEOS // divide]
            sources = write_sources(work / "store" / "sources")
            table = grow(sizes, lambda n: store_steps(work / "store" / f"{n}-videos", n, sources))
            misses += print_growth("store: the number of videos", "videos", sizes, table)
            results["store"] = {step: {str(n): vars(c) for n, c in row.items()} for step, row in table.items()}
            listing = table["open-list"][sizes[-1]].seconds
            print(f"  a {sizes[-1]}-video store opens and lists in {listing:.2f} s (goal < {LIST_GOAL_S:.0f} s)")
        if "untrimmed" in only:
            frames = 100 if args.quick else UNTRIMMED_FRAMES
            folder = work / "untrimmed"
            base = untrimmed_base(folder, frames)
            model = trained_rc3d(folder, base)
            table = grow(list(GROWTH), lambda times: untrimmed_steps(folder, base, times, model))
            misses += print_growth(f"untrimmed: the length of two 112 px videos ({frames} frames at 1x)", "x",
                                   list(GROWTH), table)
            results["untrimmed"] = {step: {str(n): vars(c) for n, c in row.items()} for step, row in table.items()}
        if "geometry" in only:
            frames = 16 if args.quick else 64
            costs = geometry_steps(frames)
            print_geometry(costs, frames)
            results["geometry"] = {name: vars(cost) for name, cost in costs.items()}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nsteps missing a goal: {', '.join(misses) or 'none'}; wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
