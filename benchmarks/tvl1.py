"""TV-L1 throughput and agreement: OpenCV's DualTVL1OpticalFlow against the PyTorch version, on the same pairs.

    python benchmarks/tvl1.py [--pairs 16] [--single-pairs 4] [--sizes 320x240 340x256] [--cpu-batches 1 16]
                              [--compile]

For each frame size, on consecutive frames of generated videos (a pan over scikit-learn's sample photographs with a
patch moving across, written as MJPG and decoded, as benchmarks/extract.py makes them), with OpenCV's defaults:

- pairs/s of OpenCV with 1 and 2 threads (a fresh object per pair);
- pairs/s of the torch version on CPU (2 threads) at batch 1 and 16 (``--cpu-batches``), compiled at batch 16
  with ``--compile`` (after one untimed batch that pays for compilation), and on CUDA at batch 1, 16 and 64 when
  torch sees a GPU;
- each rate over OpenCV's with 2 threads;
- end-point error of the torch flow against OpenCV's: median and 95th percentile over all pixels of all pairs, and
  the largest per-pair mean.

Batch 1 runs the first ``--single-pairs`` pairs only (it is the slowest row); every other row runs all pairs. Goals:
median EPE ≤ 0.1 px; CPU batch 16 with 2 threads at least as fast as OpenCV with 2 threads.

On a machine whose OpenCV lacks the contrib modules (a GPU image with ``opencv-python-headless``), the OpenCV rows
are left out: the end-point errors are then against torch on CPU at the first ``--cpu-batches`` size, and the ratios
against ``--opencv-rate`` (OpenCV's pairs/s with 2 threads measured on another machine, which the output says).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import gray_pairs, make_videos  # noqa: E402

from flow.tvl1 import OPENCV_DEFAULTS  # noqa: E402
from flow.tvl1_torch import TorchTVL1  # noqa: E402

THREADS = 2


def opencv_rate(pairs: list[tuple[np.ndarray, np.ndarray]], threads: int) -> tuple[float, np.ndarray]:
    """(pairs/s, flows) of OpenCV with ``threads`` threads."""
    cv2.setNumThreads(threads)
    started = time.perf_counter()
    flows = [cv2.optflow.DualTVL1OpticalFlow_create(**OPENCV_DEFAULTS).calc(a, b, None) for a, b in pairs]
    return len(pairs) / (time.perf_counter() - started), np.stack(flows)


def torch_rate(pairs: list[tuple[np.ndarray, np.ndarray]], batch: int, device: str,
               compile: bool = False) -> tuple[float, np.ndarray]:
    """(pairs/s, flows) of the torch version in batches of ``batch`` pairs; compilation is paid before timing."""
    solver = TorchTVL1(OPENCV_DEFAULTS, device, compile=compile)
    first, second = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    if compile or device == "cuda":
        solver(first[:batch], second[:batch])
    _synchronize(device)
    started = time.perf_counter()
    flows = [solver(first[k: k + batch], second[k: k + batch]) for k in range(0, len(pairs), batch)]
    _synchronize(device)
    return len(pairs) / (time.perf_counter() - started), np.concatenate(flows)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """EPE of ``ours`` against ``reference`` (N, H, W, 2): pixel median and 95th percentile, worst pair's mean."""
    error = np.linalg.norm(ours - reference, axis=-1)
    return {"median": float(np.median(error)), "p95": float(np.percentile(error, 95)),
            "worst_pair_mean": float(error.mean(axis=(1, 2)).max())}


def benchmark_size(size: tuple[int, int], args: argparse.Namespace, folder: Path) -> list[tuple[str, int, float]]:
    """Rows (method, pairs, pairs/s) for one frame size, and the agreement printed on the way."""
    frames = 9
    videos = make_videos(folder / f"{size[0]}x{size[1]}", -(-args.pairs // (frames - 1)), frames, size)
    pairs = gray_pairs(videos, 0)[: args.pairs]
    single = pairs[: args.single_pairs]
    rows: list[tuple[str, int, float]] = []
    reference = None
    if hasattr(cv2, "optflow"):
        rate_1, reference = opencv_rate(pairs, 1)
        rate_2, _ = opencv_rate(pairs, THREADS)
        rows = [("OpenCV, 1 thread", len(pairs), rate_1), (f"OpenCV, {THREADS} threads", len(pairs), rate_2)]
    torch.set_num_threads(THREADS)
    runs = [("cpu", batch, False, single if batch == 1 else pairs) for batch in args.cpu_batches]
    if args.compile:
        runs.append(("cpu", 16, True, pairs))
    if torch.cuda.is_available():
        runs += [("cuda", batch, args.compile, pairs) for batch in (1, 16, 64)]
    against = "OpenCV" if reference is not None else "torch CPU"
    for device, batch, compiled, chosen in runs:
        rate, flows = torch_rate(chosen, batch, device, compiled)
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {THREADS} threads"
        label = f"torch {name}, batch {batch}{', compiled' if compiled else ''}"
        rows.append((label, len(chosen), rate))
        if reference is None:  # no contrib OpenCV: the first torch CPU row is the reference
            reference = flows if len(chosen) == len(pairs) else torch_rate(pairs, batch, device)[1]
        scores = agreement(flows, reference[: len(chosen)])
        print(f"  {size[0]}x{size[1]} {label}: EPE vs {against} median {scores['median']:.4f} px, "
              f"p95 {scores['p95']:.4f} px, worst pair mean {scores['worst_pair_mean']:.4f} px", flush=True)
    print(f"  {size[0]}x{size[1]}: mean |flow| {np.linalg.norm(reference, axis=-1).mean():.2f} px")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16, help="pairs per size")
    parser.add_argument("--single-pairs", type=int, default=4, help="pairs timed at batch 1")
    parser.add_argument("--sizes", nargs="+", default=["320x240", "340x256"])
    parser.add_argument("--cpu-batches", nargs="+", type=int, default=[1, 16], help="torch CPU batch sizes")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd iterations")
    parser.add_argument("--opencv-rate", type=float, help="OpenCV's pairs/s with 2 threads from another machine, "
                                                          "for ratios where this OpenCV has no contrib modules")
    args = parser.parse_args()
    print(f"opencv {cv2.__version__}, torch {torch.__version__}, "
          f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.sizes:
            size = tuple(int(v) for v in text.split("x"))
            rows = benchmark_size(size, args, Path(tmp))
            opencv_2 = rows[1][2] if hasattr(cv2, "optflow") else args.opencv_rate
            source = "" if hasattr(cv2, "optflow") else " (given, another machine)"
            print(f"\n| {text} | pairs | pairs/s | × OpenCV {THREADS} threads{source} |\n|---|---|---|---|")
            for label, count, rate in rows:
                print(f"| {label} | {count} | {rate:.3f} | {rate / opencv_2:.2f} |" if opencv_2 else
                      f"| {label} | {count} | {rate:.3f} | - |")
            print(flush=True)


if __name__ == "__main__":
    main()
