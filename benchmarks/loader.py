"""Can the clip loader keep a ResNeXt-101 fed? Loader clips/s against the clips/s one training step consumes.

Both are measured here, side by side, on this machine's CPU:

* loader: ``ClipDataset`` in training mode, ``rgb+flow``, 16 x 112 x 112 clips (random window, multi-scale corner
  crop, flip), from a store of 341 x 256 videos (short side 256, as MARS), one process, every clip reopening its
  HDF5 file (as on a dataset larger than the handle cache);
* model: ResNeXt-101 (MARS's backbone), forward + backward + SGD step, batch 2, 16 x 112 x 112 RGB.

The ratio is loader clips/s divided by model clips/s; a ratio of 2 or more means one loader process is never what
training waits for. Without ``--store`` a small store is built first (synthetic clips, cheap TV-L1), which takes
about half a minute on two cores.

    PYTHONPATH=. python benchmarks/loader.py [--store STORE] [--clips 48] [--steps 2]   (from the repository root)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from flow.extract import ExtractConfig, extract_flow
from flow.store import FlowStore
from pipelines.data.synth import SynthConfig, render_clip

WIDTH, HEIGHT = 341, 256


def build_store(folder: Path, videos: int = 4, frames: int = 21) -> Path:
    """Synthetic clips rendered at 256 px, stretched to 341 x 256, written as MJPG and extracted with cheap TV-L1."""
    config = SynthConfig(size=256, frames=frames)
    root = folder / "videos"
    for index in range(videos):
        clip, _ = render_clip(config, index % config.classes, index)
        path = root / config.class_names[index % config.classes] / f"clip{index}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25.0,
                                 (WIDTH, HEIGHT))
        for frame in clip:
            writer.write(cv2.resize(frame[..., ::-1], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR))
        writer.release()
    store = folder / "store"
    extract_flow(ExtractConfig(short_side=256, preset="cheap", workers=2), root, store, progress=False)
    return store


def loader_rate(store_path: Path, clips: int) -> float:
    """Training clips per second from one process."""
    from pipelines.data.clips import ClipDataset

    store = FlowStore(store_path, max_open_files=1)
    items = [(video, 0) for video in store.video_ids()]
    dataset = ClipDataset(store, items, "rgb+flow", 16, 112, train=True)
    dataset[0]  # first decode pays one-off costs
    started = time.perf_counter()
    for n in range(clips):
        dataset.set_epoch(n // len(items))
        clip, _ = dataset[n % len(items)]
    assert clip.shape == (5, 16, 112, 112)
    return clips / (time.perf_counter() - started)


def model_rate(steps: int) -> float:
    """Clips per second that ResNeXt-101 training (batch 2, RGB 16 x 112 x 112) consumes."""
    import torch

    from mars_sta import build_model

    model = build_model("resnext101", num_classes=101, in_channels=3, sample_size=112, sample_duration=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs, labels = torch.randn(2, 3, 16, 112, 112), torch.tensor([3, 7])

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    step()  # warm-up: allocations and kernel selection
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return 2 * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="an existing store (default: build a small one)")
    parser.add_argument("--clips", type=int, default=48, help="clips the loader delivers while timed")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    args = parser.parse_args()

    import torch

    scratch = None
    store = args.store
    if store is None:
        scratch = Path(tempfile.mkdtemp(prefix="loader-bench-"))
        started = time.perf_counter()
        store = build_store(scratch)
        print(f"built a {WIDTH}x{HEIGHT} store in {time.perf_counter() - started:.1f} s")
    try:
        loader = loader_rate(store, args.clips)
        model = model_rate(args.steps)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch)
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"loader (1 process, rgb+flow, 16x112x112 from short side 256): {loader:8.2f} clips/s")
    print(f"ResNeXt-101 training (batch 2, forward+backward):              {model:8.2f} clips/s")
    print(f"ratio loader / training: {loader / model:.1f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
