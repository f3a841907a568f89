"""Training throughput of one process against two (torchrun, gloo) on this machine's CPU, side by side.

The same tiny training (the demo's network and recipe) runs on the same synthetic store, first as one process with
``--accumulate 2`` (the same global batch), then as two DistributedDataParallel processes; both take every core
between them. Printed: clips per second of each and their ratio (two processes / one). On a 2-core CPU the ratio
says how much the gradient all-reduce and the second process cost, not what GPUs gain.

    python -m benchmarks.ddp [--epochs 3] [--videos-per-class 12]     (from the repository root)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from flow.extract import ExtractConfig, extract_flow
from pipelines.data.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
TRAIN = """[train]
arch = "tiny_resnet"
frames = 16
size = 32
epochs = {epochs}
batch_size = 8
optimizer = "adamw"
lr = 0.002
scheduler = "none"
normalization = "unit"
crop_scales = [1.0]
cache_mb = 128
workers = 0
val_fraction = 0.1
"""


def clips_per_second(out: Path, train_videos: int) -> float:
    """Training clips per second over the epochs after the first (which also fills the video cache)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows
    return train_videos * len(timed) / sum(row["seconds"] for row in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--videos-per-class", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", SynthConfig(videos_per_class=args.videos_per_class))
        extract_flow(ExtractConfig(short_side=0, preset="cheap"), root / "data" / "videos", root / "store",
                     progress=False)
        config = root / "train.toml"
        config.write_text(TRAIN.format(epochs=args.epochs))
        base = [sys.executable, "-m", "cli", "train", "--config", str(config), "--stream", "rgb",
                "--store", str(root / "store")]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(base + ["--out", str(root / "one"), "--accumulate", "2"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run(base + ["--out", str(root / "two"), "--nproc", "2"], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        manifest = json.loads((root / "one" / "manifest.json").read_text())
        one = clips_per_second(root / "one", manifest["train_videos"])
        two = clips_per_second(root / "two", manifest["train_videos"])
    print(f"1 process (accumulate 2): {one:8.1f} clips/s")
    print(f"2 processes (DDP, gloo) : {two:8.1f} clips/s")
    print(f"ratio 2 / 1             : {two / one:8.2f}")


if __name__ == "__main__":
    main()
