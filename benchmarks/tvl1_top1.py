"""Does a flow stream trained on the PyTorch TV-L1 reach the top-1 of one trained on OpenCV's?

Run from the repository root::

    python -m benchmarks.tvl1_top1 [--seeds 0 1 2] [--out runs/tvl1-top1] [--device cpu]

Each seed generates the demo's synthetic dataset (``configs/demo.toml``), extracts its flow twice, with
``--backend opencv`` and ``--backend torch`` and the same TV-L1 parameters, and trains and tests the demo's Flow
stream on each store. Everything but the backend is the same within a seed (videos, split, seed, recipe), so the
difference torch − OpenCV is paired; the summary gives its mean with a 95 % t interval over seeds, and the median
end-point error between the two stores' flow. Seeds already finished in ``--out`` are read back.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.sta_claim import interval
from flow.store import FlowStore
from pipelines.core.config import read_toml
from pipelines.stages.demo import demo_config_path
from pipelines.stages.run import load_plan, run

BACKENDS = ("opencv", "torch")


def run_backend(out: Path, seed: int, backend: str, device: str, videos: Path | None) -> tuple[float, Path]:
    """The demo's Flow stream on a store extracted by ``backend``: its test top-1 and the store."""
    tables = read_toml(demo_config_path())  # edited before planning, so the run checks them as a user's file
    if videos is not None:  # the second backend reads the videos the first one generated
        tables.pop("synth")
        tables["data"]["videos"] = str(videos)
    else:
        tables["synth"]["seed"] = seed
    tables["train"]["seed"] = seed
    tables["extract"].update(backend=backend, **({"device": device} if backend == "torch" else {}))
    tables["data"]["streams"] = ["flow"]
    plan = load_plan(demo_config_path(), out, base=out, tables=tables)
    report = run(plan, log=lambda message: None, progress=False)["report"]
    top1 = next(row.top1 for row in report.rows if row.split == 1 and row.model == "flow")
    return top1, plan.store


def store_epe(first: Path, second: Path, limit: int = 200) -> float:
    """Median end-point error (px, after decoding the uint8 codes) between two stores' flow, over ``limit`` videos."""
    a, b = FlowStore(first), FlowStore(second)
    errors = []
    for video in sorted(a.video_ids())[:limit]:
        flow_a, flow_b = a.flow(video), b.flow(video)
        errors.append(np.sqrt(((flow_a - flow_b) ** 2).sum(axis=-1)).ravel())
    return float(np.median(np.concatenate(errors)))


def run_seed(out: Path, seed: int, device: str) -> dict:
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    top1_cv, store_cv = run_backend(out / "opencv", seed, "opencv", device, None)
    top1_torch, store_torch = run_backend(out / "torch", seed, "torch", device, out / "opencv" / "data" / "videos")
    result = {"seed": seed, "top1": {"opencv": top1_cv, "torch": top1_torch},
              "median_epe_px": store_epe(store_cv, store_torch)}
    done.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/tvl1-top1"))
    parser.add_argument("--device", default="cpu", help="where the torch backend runs: cpu, cuda or auto")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit or '?'}; {platform.processor() or platform.machine()}; torch TV-L1 on {args.device}")
    results = [run_seed(args.out / f"seed{seed}", seed, args.device) for seed in args.seeds]
    print("| seed | Flow on OpenCV TV-L1 | Flow on torch TV-L1 | torch − OpenCV | median EPE (px) |")
    print("|---|---|---|---|---|")
    for r in results:
        cv, th = r["top1"]["opencv"], r["top1"]["torch"]
        print(f"| {r['seed']} | {cv:.1f} | {th:.1f} | {th - cv:+.1f} | {r['median_epe_px']:.3f} |")
    mean, low, high = interval([r["top1"]["torch"] - r["top1"]["opencv"] for r in results])
    print(f"torch − opencv: mean {mean:+.2f} points, 95 % interval [{low:+.2f}, {high:+.2f}] over {len(results)} seeds")


if __name__ == "__main__":
    main()
