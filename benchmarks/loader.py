"""Training clips per core: the flow store's loader against MARS's reading path (one JPEG per frame, PIL).

Both read the same videos, side by side in one run, one process each with one thread (as a DataLoader worker):

* store: ``ClipDataset`` in training mode, ``rgb+flow``, T x 112 x 112 clips (random window, multi-scale corner
  crop, flip), every clip reopening its HDF5 file (as on a dataset larger than the handle cache);
* MARS: the same videos written as MARS's JPEG folders (``<class>/<video>/%05d.jpg``, ``TVL1jpg_x_%05d.jpg``,
  ``TVL1jpg_y_%05d.jpg``, the layout ``mars-sta import-frames`` reads; the tree is imported once to check that),
  read as MARS's training loader does: list the folder to count frames, open and decode T RGB and 2T flow JPEGs
  with PIL, crop each at one of MARS's scales and corners, resize it to 112 (PIL bilinear), flip (inverting flow
  x), and turn it into a normalised float tensor, image by image.

Clips per CPU-second of the process are the figure per core (robust to other load on the machine); clips per
wall-second are printed beside them. The videos pan over a photograph (real texture) at 340 x 256, about MARS's
size for UCF-101 (short side 256). Without ``--work`` the store is built in a temporary folder first (mid TV-L1,
2 videos of 72 frames: about five minutes on two busy cores); with it the store and the JPEG tree are built once
and reused.

PIL (Pillow, installed with the ``report`` extra) is needed for the MARS path only and imported there.

    PYTHONPATH=. python benchmarks/loader.py [--work DIR] [--frames 64] [--clips 12] [--model-steps 0]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from flow.extract import ExtractConfig, extract_flow
from flow.importer import ImportConfig, import_frames
from flow.store import FlowStore
from pipelines.data.clips import POSITIONS, SCALES, ClipDataset, corner_crop

WIDTH, HEIGHT = 340, 256  # MARS's 341 x 256 for UCF-101, rounded to the even width MJPG needs
RGB_MEAN = (114.7748, 107.7354, 99.4750)  # MARS's ActivityNet mean
FLOW_CENTRE = 127.5


# -- data --------------------------------------------------------------------------------------------------------
def photo_videos(folder: Path, count: int, frames: int) -> None:
    """MJPG videos of ``frames`` frames: a slow pan over a photograph and a patch of another moving across."""
    import sklearn.datasets

    images = Path(sklearn.datasets.__file__).parent / "images"
    scene, other = cv2.imread(str(images / "china.jpg")), cv2.imread(str(images / "flower.jpg"))
    patch = cv2.resize(other[60:260, 150:350], (HEIGHT // 3, HEIGHT // 3))
    for k in range(count):
        path = folder / f"Class{k}" / f"video_{k:02d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (WIDTH, HEIGHT))
        for t in range(frames):
            x, y = (7 * k + t) % (scene.shape[1] - WIDTH), (5 * k + t // 2) % (scene.shape[0] - HEIGHT)
            frame = scene[y : y + HEIGHT, x : x + WIDTH].copy()
            px = (3 * t) % (WIDTH - patch.shape[1])
            frame[HEIGHT // 3 : HEIGHT // 3 + patch.shape[0], px : px + patch.shape[1]] = patch
            writer.write(frame)
        writer.release()


def build_store(work: Path, videos: int, frames: int) -> Path:
    """The store of the photograph videos (short side 256, mid TV-L1), built once per ``work`` folder."""
    store = work / "store"
    if not (store / "manifest.json").exists():
        photo_videos(work / "videos", videos, frames)
        extract_flow(ExtractConfig(short_side=256, preset="mid", workers=2), work / "videos", store, progress=False)
    return store


def write_mars_tree(store: FlowStore, out: Path) -> None:
    """MARS's folders of the store's videos: its RGB JPEGs as they are, flow codes as OpenCV JPEGs (quality 95,
    as MARS's extractor writes them), and the ``done`` mark MARS's dataset classes look for."""
    for video_id in store.video_ids():
        folder = out / video_id
        folder.mkdir(parents=True, exist_ok=True)
        with h5py.File(store.path_of(video_id), "r") as handle:
            for k, data in enumerate(handle["frames"][:], 1):
                (folder / f"{k:05d}.jpg").write_bytes(data.tobytes())
        for k, codes in enumerate(store.flow_codes(video_id), 1):
            cv2.imwrite(str(folder / f"TVL1jpg_x_{k:05d}.jpg"), codes[..., 0])
            cv2.imwrite(str(folder / f"TVL1jpg_y_{k:05d}.jpg"), codes[..., 1])
        (folder / "done").touch()


def check_import(tree: Path, store: FlowStore, out: Path) -> int:
    """Import the tree once: its frames must be the store's, its flow the store's codes up to JPEG's error (the
    largest code difference is returned). Proves the tree is in the layout ``import-frames`` reads."""
    summary = import_frames(ImportConfig(layout="mars", quantization=store.quantization, workers=1), tree, out,
                            progress=False)
    assert summary.imported == len(store) and not summary.failures, summary
    imported, worst = FlowStore(out), 0
    for video_id in store.video_ids():
        assert np.array_equal(imported.frames(video_id), store.frames(video_id)), video_id
        difference = imported.flow_codes(video_id).astype(int) - store.flow_codes(video_id)
        worst = max(worst, int(np.abs(difference).max()))
    return worst


# -- the two readers ---------------------------------------------------------------------------------------------
def store_reader(store_path: Path, duration: int, size: int) -> Callable[[int], torch.Tensor]:
    """Training clip ``n`` of the store, as ``train`` reads it (a fresh HDF5 handle per clip)."""
    store = FlowStore(store_path, max_open_files=1)
    items = [(video, 0) for video in store.video_ids()]
    dataset = ClipDataset(store, items, "rgb+flow", duration, size, train=True)

    def read(n: int) -> torch.Tensor:
        dataset.set_epoch(n // len(items))
        return dataset[n % len(items)][0]

    return read


def mars_reader(tree: Path, duration: int, size: int) -> Callable[[int], torch.Tensor]:
    """Training clip ``n`` read as MARS reads it: its folder listed, then per frame three PIL decodes, a crop, a
    resize, a flip and a tensor conversion (written anew here after MARS's dataset and preprocessing code)."""
    from PIL import Image, ImageChops

    folders = sorted(p.parent for p in tree.rglob("done"))
    rgb_mean = torch.tensor(RGB_MEAN).view(3, 1, 1)

    def to_tensor(image: Image.Image) -> torch.Tensor:
        array = np.asarray(image)
        return torch.from_numpy(array.reshape(*array.shape[:2], -1).transpose(2, 0, 1).copy()).float()

    def read(n: int) -> torch.Tensor:
        folder = folders[n % len(folders)]
        rng = np.random.default_rng(n)
        total = (len(os.listdir(folder)) + 1) // 3 - 1  # flow fields: N frames, 2(N - 1) flow files and "done"
        start = int(rng.integers(0, total - duration))
        scale, position = SCALES[rng.integers(len(SCALES))], POSITIONS[rng.integers(len(POSITIONS))]
        flip = bool(rng.random() < 0.5)
        clip = torch.empty(5, duration, size, size)
        box = None
        for t in range(duration):
            for channel, name in enumerate((f"{start + t + 1:05d}.jpg", f"TVL1jpg_x_{start + t + 1:05d}.jpg",
                                            f"TVL1jpg_y_{start + t + 1:05d}.jpg")):
                with Image.open(folder / name) as opened:
                    image = opened.copy()
                if box is None:
                    top, left, side = corner_crop(image.height, image.width, scale, position)
                    box = (left, top, left + side, top + side)
                image = image.crop(box).resize((size, size), Image.BILINEAR)
                if flip:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
                    if channel == 1:
                        image = ImageChops.invert(image)
                if channel == 0:
                    clip[0:3, t] = to_tensor(image) - rgb_mean
                else:
                    clip[2 + channel, t] = to_tensor(image)[0] - FLOW_CENTRE
        return clip

    return read


def store_stages(store_path: Path, duration: int, size: int, clips: int) -> dict[str, float]:
    """CPU ms per clip of the store path's stages, timed clip by clip over windows and crops like the training
    loop's (scale and corner cycling through MARS's choices)."""
    store = FlowStore(store_path, max_open_files=1)
    videos = store.video_ids()
    totals = dict.fromkeys(("read + decode the RGB JPEGs", "read + inflate the flow codes",
                            "crop + resize (INTER_AREA) RGB and flow"), 0.0)
    for n in range(clips):
        video = videos[n % len(videos)]
        start = n % (store.num_frames(video) - duration)
        top, left, side = corner_crop(*store.frame_size(video), SCALES[n % 5], POSITIONS[n // 5 % 5])
        marks = [cpu_seconds()]
        frames = store.frames(video, start, start + duration)
        marks.append(cpu_seconds())
        codes = store.flow_codes(video, start, start + duration)
        marks.append(cpu_seconds())
        for part in (frames, codes):
            [cv2.resize(f[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)
             for f in part]
        marks.append(cpu_seconds())
        for name, begin, end in zip(totals, marks, marks[1:]):
            totals[name] += 1e3 * (end - begin) / clips
    return totals


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rates(read: Callable[[int], torch.Tensor], clips: int, shape: tuple[int, ...]) -> tuple[float, float]:
    """(clips per wall-second, clips per CPU-second) of ``read`` over ``clips`` clips, after one untimed clip."""
    assert tuple(read(0).shape) == shape
    wall, cpu = time.perf_counter(), cpu_seconds()
    for n in range(1, clips + 1):
        read(n)
    return clips / (time.perf_counter() - wall), clips / (cpu_seconds() - cpu)


def model_rate(steps: int, duration: int, size: int) -> float:
    """Clips per second that ResNeXt-101 training (batch 2, RGB) consumes on this CPU."""
    from mars_sta import build_model

    model = build_model("resnext101", num_classes=101, in_channels=3, sample_size=size, sample_duration=duration)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs, labels = torch.randn(2, 3, duration, size, size), torch.tensor([3, 7])

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
    parser.add_argument("--work", type=Path, help="folder for the store and the JPEG tree, kept (default: temporary)")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip")
    parser.add_argument("--size", type=int, default=112, help="clip height and width")
    parser.add_argument("--clips", type=int, default=12, help="clips each reader delivers while timed")
    parser.add_argument("--videos", type=int, default=2, help="videos in a new store")
    parser.add_argument("--model-steps", type=int, default=0,
                        help="also time this many ResNeXt-101 training steps on the CPU (slow at 64 frames)")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core per reader, as in a DataLoader worker
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        started = time.perf_counter()
        store_path = build_store(work, args.videos, args.frames + 8)
        store = FlowStore(store_path)
        tree = work / "mars-tree"
        if not tree.exists():
            write_mars_tree(store, tree)
            worst = check_import(tree, store, work / "imported")
            print(f"import-frames read the JPEG tree: frames identical, flow codes within {worst} of the store's")
        print(f"store and JPEG tree ready in {time.perf_counter() - started:.1f} s")
        shape = (5, args.frames, args.size, args.size)
        store_rate = rates(store_reader(store_path, args.frames, args.size), args.clips, shape)
        mars_rate = rates(mars_reader(tree, args.frames, args.size), args.clips, shape)
        stages = store_stages(store_path, args.frames, args.size, args.clips)
        model = model_rate(args.model_steps, args.frames, args.size) if args.model_steps else None
    finally:
        if args.work is None:
            shutil.rmtree(work)
    load = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch {torch.__version__}, "
          f"1 thread per reader")
    print(f"clips: rgb+flow, {args.frames}x{args.size}x{args.size} from {WIDTH}x{HEIGHT}, training augmentation")
    print(f"{'reader':<40} {'clips/CPU-s':>12} {'clips/s':>9}")
    print(f"{'flow store (ClipDataset)':<40} {store_rate[1]:12.2f} {store_rate[0]:9.2f}")
    print(f"{'MARS JPEG folders (PIL)':<40} {mars_rate[1]:12.2f} {mars_rate[0]:9.2f}")
    print("store path, CPU ms per clip: " + ", ".join(f"{name} {ms:.1f}" for name, ms in stages.items())
          + f", all stages together {1e3 / store_rate[1]:.1f}")
    print(f"ratio store / MARS per CPU-second: {store_rate[1] / mars_rate[1]:.2f}x (goal >= 3x); "
          f"wall: {store_rate[0] / mars_rate[0]:.2f}x")
    if model is not None:
        print(f"ResNeXt-101 training on this CPU (batch 2, RGB, forward+backward): {model:.3f} clips/s; "
              f"store / training {store_rate[0] / model:.0f}x")


if __name__ == "__main__":
    main()
