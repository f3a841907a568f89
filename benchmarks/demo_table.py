"""Run the demo for some seeds and print the README's demo table, with the commit and the machine beside it.

    python benchmarks/demo_table.py --seeds 0 1 2 --out /tmp/demo-table

Each seed runs ``mars-sta demo`` (the Python function behind it) into ``OUT/seed<N>``; a seed whose folder already
holds a finished run is skipped by the run's own stage cache, so an interrupted table resumes. Float results differ
across CPUs (vector widths and thread counts change the order of additions), so a table is only comparable with
one made on the same kind of machine; the lines above the table say which one made it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import commit, cpu_model  # noqa: E402
from pipelines.stages.demo import run_demo  # noqa: E402

COLUMNS = (("Flow", "flow"), ("RGB", "rgb"), ("MARS", "mars"), ("STA-MARS", "sta-mars"),
           ("MARS+RGB+Flow", "mars+rgb+flow"))


def table_row(seed: int, result: dict) -> tuple[str, dict[str, float]]:
    """One markdown row of split 1's test top-1 per column, and the numbers behind it."""
    top1 = {row.model: row.top1 for row in result["report"].rows if row.split == 1}
    cells = [f"{top1[key]:.1f}" if key in top1 else "–" for _, key in COLUMNS]
    return f"| {seed} | {' | '.join(cells)} | {result['seconds']:.0f} s |", top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("demo-table"))
    parser.add_argument("--config", type=Path, help="another demo config (default configs/demo.toml)")
    args = parser.parse_args()
    rows, differences = [], []
    for seed in args.seeds:
        result = run_demo(args.out / f"seed{seed}", seed=seed, config_path=args.config, log=lambda message: None)
        row, top1 = table_row(seed, result)
        rows.append(row)
        if {"sta-mars", "mars"} <= set(top1):
            differences.append(top1["sta-mars"] - top1["mars"])
    print(f"commit {commit()}; {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}; "
          f"config {args.config or 'configs/demo.toml'}")
    print("| seed | " + " | ".join(name for name, _ in COLUMNS) + " | wall time |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    print("\n".join(rows))
    if differences:
        spread = f", standard deviation {statistics.stdev(differences):.1f}" if len(differences) > 1 else ""
        print(f"\nSTA-MARS − MARS: {', '.join(f'{d:+.1f}' for d in differences)} points "
              f"(mean {statistics.mean(differences):+.1f}{spread})")


if __name__ == "__main__":
    main()
