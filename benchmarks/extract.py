"""Flow extraction throughput and store size, measured side by side in one run on the same generated videos.

    python benchmarks/extract.py [--videos 8] [--frames 6] [--short-side 128] [--preset default] [--workers 2]
                                 [--backend opencv|torch] [--no-storage | --no-throughput] [--storage-frames 17]

Sections (each a function of the generated data, so more can be added, e.g. reading clips for training):

1. throughput: a bare loop over pre-decoded gray pairs calling OpenCV TV-L1 with one thread and with OpenCV's own
   threading on every core, against ``extract_flow`` (decode, resize, TV-L1, quantise, JPEG, HDF5) with 1 and with
   N worker processes. Goals: 1 worker within 10 % of the one-thread loop; N workers ≥ 0.9·N× it and faster than
   OpenCV's threading. Wall time decides; CPU time is printed too, as it shows overhead even when other programs
   share the cores. Keep the video count a multiple of N: each worker takes whole videos. With ``--backend torch``
   the extractions run the torch TV-L1 on the CPU (each worker with CPUs // N torch threads), so 1 and N workers
   compare side by side; the bare loops stay OpenCV's, as the reference.
2. storage (at ``--short-side``; 256 keeps the 320x240 videos as they are): bytes per frame of the store against
   MARS-style JPEG folders (the store's JPEG frames, two JPEGs per flow field), in bytes and on disk, the store's
   parts (JPEG, flow codes, HDF5 structure, and its size in the HDF5 1.8 formats of older stores), and the
   encodings considered: lossless settings for the flow codes, lossless frames, JPEG flow; each with the time to
   read and decode a 16-frame window.

The videos pan over scikit-learn's sample photographs (real texture, so compression figures mean something) with a
second photograph's patch moving across; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flow.extract import ExtractConfig, available_cpus, extract_flow  # noqa: E402
from flow import store as store_module  # noqa: E402
from flow.store import FlowStore  # noqa: E402
from flow.tvl1 import preset_params  # noqa: E402
from flow.video import VideoReader  # noqa: E402

WINDOW = 16  # frames per read, as a training clip


# -- data --------------------------------------------------------------------------------------------------------
def sample_photographs() -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return cv2.imread(str(folder / "china.jpg")), cv2.imread(str(folder / "flower.jpg"))


def make_videos(folder: Path, count: int, frames: int, size: tuple[int, int] = (320, 240)) -> list[Path]:
    """``count`` MJPG videos of ``frames`` frames: a slow pan (1–2 px/frame) and a patch moving 3–4 px/frame."""
    scene, patch_source = sample_photographs()
    width, height = size
    paths = []
    for k in range(count):
        path = folder / f"Class{k % 2}" / f"video_{k:02d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
        patch = cv2.resize(patch_source[60 + 20 * k: 260 + 20 * k, 150:350], (height // 3, height // 3))
        for t in range(frames):
            x, y = 10 * k + (1 + k % 2) * t, 5 * k + t
            frame = scene[y: y + height, x: x + width].copy()
            px, py = 20 + (3 + k % 2) * t, height // 3
            frame[py: py + patch.shape[0], px: px + patch.shape[1]] = patch
            writer.write(frame)
        writer.release()
        paths.append(path)
    return paths


def gray_pairs(videos: list[Path], short_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive gray frame pairs, decoded and resized as the extraction does, before any timing starts."""
    pairs = []
    for path in videos:
        gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in VideoReader(path, short_side)]
        pairs += list(zip(gray, gray[1:]))
    return pairs


# -- 1. throughput -----------------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes (the extraction workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``action()``; CPU time shows overhead even when other load slows the wall."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    action()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def bare_tvl1(pairs: list[tuple[np.ndarray, np.ndarray]], preset: str, threads: int) -> None:
    """TV-L1 alone over every pair, a fresh OpenCV object per pair, ``threads`` OpenCV threads."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    params = preset_params(preset)
    for a, b in pairs:
        cv2.optflow.DualTVL1OpticalFlow_create(**params).calc(a, b, None)
    cv2.setNumThreads(previous)


def extraction(videos: Path, store: Path, workers: int, args: argparse.Namespace) -> None:
    """A whole extract_flow run into a new store (pool start-up included)."""
    shutil.rmtree(store, ignore_errors=True)
    config = ExtractConfig(short_side=args.short_side, preset=args.preset, workers=workers, backend=args.backend,
                           device="cpu")
    extract_flow(config, videos, store, progress=False)


def throughput_section(videos: Path, paths: list[Path], work: Path, args: argparse.Namespace) -> None:
    """Every method once per round, rounds interleaved, best round kept: other load on the machine hits all alike."""
    pairs = gray_pairs(paths, args.short_side)
    height, width = pairs[0][0].shape
    cores = available_cpus()
    store = work / "store"
    methods = {
        "bare TV-L1 loop, 1 OpenCV thread": lambda: bare_tvl1(pairs, args.preset, 1),
        f"bare TV-L1 loop, OpenCV threads on {cores} cores": lambda: bare_tvl1(pairs, args.preset, cores),
        f"extract-flow --backend {args.backend} --workers 1": lambda: extraction(videos, store, 1, args),
        f"extract-flow --backend {args.backend} --workers {args.workers}":
            lambda: extraction(videos, store, args.workers, args),
    }
    bare_tvl1(pairs[:1], args.preset, 1)  # warm-up
    load_before = os.getloadavg()[0]
    best = {name: timed(run) for name, run in methods.items()}
    for _ in range(args.rounds - 1):
        for name, run in methods.items():
            best[name] = min(best[name], timed(run))
    print(f"\n## Throughput: {len(pairs)} pairs of {width}x{height}, preset {args.preset}, {cores} CPUs, best of "
          f"{args.rounds} interleaved rounds; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    rates = {name: len(pairs) / wall for name, (wall, _) in best.items()}
    baseline = next(iter(rates.values()))
    print(f"{'method':<56} {'seconds':>8} {'pairs/s':>8} {'vs 1 thread':>12} {'CPU s':>7}")
    for name, rate in rates.items():
        print(f"{name:<56} {best[name][0]:8.2f} {rate:8.2f} {rate / baseline:11.2f}x {best[name][1]:7.2f}")
    threads, one_worker, n_workers = (rate / baseline for rate in list(rates.values())[1:])
    if args.backend == "torch":
        print(f"torch backend: {args.workers} workers run {n_workers / one_worker:.2f}x as fast as 1 worker")
        return
    print(f"goals: 1 worker ≥ 0.90x: {one_worker:.2f}x; {args.workers} workers ≥ {0.9 * args.workers:.1f}x: "
          f"{n_workers:.2f}x, and faster than OpenCV's threading ({threads:.2f}x): {n_workers > threads}")


# -- 2. storage --------------------------------------------------------------------------------------------------
def allocated(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes allocated on disk) of a file or of every file below a folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def write_mars_folders(store: FlowStore, out: Path) -> None:
    """MARS's layout: frames/<id>/image_00001.jpg (the store's JPEG bytes as they are, so both layouts hold the
    same frames), flow_x and flow_y JPEGs per flow field (OpenCV quality 95, as MARS's extractor)."""
    for video_id in store.video_ids():
        for name in ("frames", "flow_x", "flow_y"):
            (out / name / video_id).mkdir(parents=True, exist_ok=True)
        with h5py.File(store.path_of(video_id), "r") as handle:
            for k, data in enumerate(handle["frames"][:], 1):
                (out / "frames" / video_id / f"image_{k:05d}.jpg").write_bytes(data.tobytes())
        for k, field in enumerate(store.flow_codes(video_id), 1):
            cv2.imwrite(str(out / "flow_x" / video_id / f"image_{k:05d}.jpg"), field[..., 0])
            cv2.imwrite(str(out / "flow_y" / video_id / f"image_{k:05d}.jpg"), field[..., 1])


def read_mars_window(out: Path, video_id: str, start: int) -> None:
    for k in range(start + 1, start + WINDOW + 1):
        cv2.imread(str(out / "frames" / video_id / f"image_{k:05d}.jpg"))
        cv2.imread(str(out / "flow_x" / video_id / f"image_{k:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
        cv2.imread(str(out / "flow_y" / video_id / f"image_{k:05d}.jpg"), cv2.IMREAD_GRAYSCALE)


def seconds_per_window(read, video_ids: list[str], repeats: int = 5) -> float:
    """Mean CPU seconds of ``read(video_id, 0)`` (robust to other load, unlike wall time); each read opens its
    files anew, so no HDF5 chunk cache helps it."""
    started = time.process_time()
    for _ in range(repeats):
        for video_id in video_ids:
            read(video_id, 0)
    return (time.process_time() - started) / (repeats * len(video_ids))


# Lossless HDF5 settings for the flow codes (the store's own is gzip 4, one (1, H, W, 2) chunk per field).
FLOW_CODECS = {
    "gzip 4 (the store's)": {"compression": "gzip", "compression_opts": 4},
    "gzip 1": {"compression": "gzip", "compression_opts": 1},
    "gzip 6": {"compression": "gzip", "compression_opts": 6},
    "gzip 9": {"compression": "gzip", "compression_opts": 9},
    "gzip 4 + shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf": {"compression": "lzf"},
    "gzip 4, x and y chunked apart": {"compression": "gzip", "compression_opts": 4, "planar": True},
}


def flow_codecs(store: FlowStore, out: Path, video_ids: list[str]) -> list[tuple[str, float, float, float]]:
    """(name, bytes per flow field, ms per 16-field read, CPU ms per field to write) of the flow codes under each
    lossless setting."""
    results = []
    fields = sum(store.num_frames(v) - 1 for v in store.video_ids())
    codes = {video_id: store.flow_codes(video_id) for video_id in store.video_ids()}
    for name, options in FLOW_CODECS.items():
        options = dict(options, fletcher32=True)
        planar = options.pop("planar", False)
        path = out / f"flow-{len(results)}.h5"
        with h5py.File(path, "w") as handle:
            started = time.process_time()
            for video_id, video_codes in codes.items():
                chunks = (1, *video_codes.shape[1:3], 1 if planar else 2)
                handle.create_dataset(video_id, data=video_codes, chunks=chunks, **options)
            write = (time.process_time() - started) / fields
            stored = sum(handle[v].id.get_storage_size() for v in codes)
        read = seconds_per_window(lambda v, s, p=path: read_hdf5(p, v, s), video_ids)
        results.append((name, stored / fields, read, write))
    return results


def alternative_encodings(store: FlowStore, out: Path) -> list[tuple[str, float, float]]:
    """(name, bytes per frame, ms per 16-frame read+decode) of lossless uint8 frames and of JPEG flow in HDF5."""
    results = []
    video_ids = [v for v in store.video_ids() if store.num_frames(v) > WINDOW]
    for name, options in (("frames raw uint8, lzf", {"compression": "lzf"}),
                          ("frames raw uint8, gzip 4", {"compression": "gzip", "compression_opts": 4})):
        path = out / f"{name.split(',')[1].strip().replace(' ', '')}.h5"
        with h5py.File(path, "w") as handle:
            for video_id in store.video_ids():
                frames = store.frames(video_id)
                handle.create_dataset(video_id, data=frames, chunks=(1, *frames.shape[1:]), **options)
        frames_total = sum(store.num_frames(v) for v in store.video_ids())
        results.append((name, path.stat().st_size / frames_total,
                        seconds_per_window(lambda v, s, p=path: read_hdf5(p, v, s), video_ids)))
    path = out / "flowjpeg.h5"
    worst = 0
    with h5py.File(path, "w") as handle:
        for video_id in store.video_ids():
            codes = store.flow_codes(video_id)
            dataset = handle.create_dataset(video_id, (2 * len(codes),), dtype=h5py.vlen_dtype(np.uint8))
            for k, field in enumerate(codes):
                for c in range(2):
                    dataset[2 * k + c] = cv2.imencode(".jpg", field[..., c])[1].ravel()
                    decoded = cv2.imdecode(dataset[2 * k + c], cv2.IMREAD_GRAYSCALE)
                    worst = max(worst, int(np.abs(decoded.astype(int) - field[..., c]).max()))
    pairs_total = sum(store.num_frames(v) - 1 for v in store.video_ids())

    def read_jpeg_flow(video_id: str, start: int) -> None:
        with h5py.File(path) as handle:
            [cv2.imdecode(b, cv2.IMREAD_GRAYSCALE) for b in handle[video_id][2 * start: 2 * (start + WINDOW)]]

    results.append((f"flow JPEG 95 x+y in HDF5, lossy (codes off <= {worst})",
                    path.stat().st_size / pairs_total, seconds_per_window(read_jpeg_flow, video_ids)))
    return results


def read_hdf5(path: Path, video_id: str, start: int) -> None:
    with h5py.File(path) as handle:
        handle[video_id][start: start + WINDOW]


def hdf5_18_copy(store: FlowStore, out: Path) -> Path:
    """The store with its video files written as before FILE_FORMAT: in HDF5's default 1.8 object formats."""
    out.mkdir(parents=True)
    shutil.copy(store.root / store_module.MANIFEST, out)
    saved, store_module.FILE_FORMAT = store_module.FILE_FORMAT, None
    try:
        for video_id in store.video_ids():
            attrs = store.attrs(video_id)
            writer = store_module.VideoFileWriter(store_module.video_path(out, video_id), attrs)
            with h5py.File(store.path_of(video_id), "r") as handle:
                for data in handle["frames"][:]:
                    writer.add_jpeg(data)
            for codes in store.flow_codes(video_id):
                writer.add_flow(codes)
            writer.commit(attrs["height"], attrs["width"])
    finally:
        store_module.FILE_FORMAT = saved
    return out


def storage_section(store_path: Path, work: Path) -> None:
    store = FlowStore(store_path)
    frames = sum(store.num_frames(v) for v in store.video_ids())
    pairs = frames - len(store)
    flow_bytes = jpeg_bytes = 0
    for video_id in store.video_ids():
        with h5py.File(store.path_of(video_id)) as handle:
            flow_bytes += handle["flow"].id.get_storage_size()
            jpeg_bytes += sum(len(data) for data in handle["frames"][:])
    store_apparent, store_disk = allocated(store_path / "videos")
    mars = work / "mars"
    write_mars_folders(store, mars)
    mars_frames, mars_frames_disk = allocated(mars / "frames")
    mars_flow = [allocated(mars / name) for name in ("flow_x", "flow_y")]
    video_ids = [v for v in store.video_ids() if store.num_frames(v) > WINDOW]
    height, width = store.frame_size(store.video_ids()[0])

    def read_store(video_id: str, start: int, path: Path = store_path) -> None:
        with FlowStore(path) as fresh:
            fresh.frames(video_id, start, start + WINDOW)
            fresh.flow_codes(video_id, start, start + WINDOW)  # codes, as MARS's folders hold them

    print(f"\n## Storage: {len(store)} videos, {frames} frames of {width}x{height}, {pairs} flow fields")
    print(f"{'layout':<56} {'KB/frame':>9} {'on disk':>9} {f'CPU ms/{WINDOW}-frame read':>22}")
    per_frame = (store_apparent / frames, store_disk / frames)
    print(f"{'this store (JPEG 95 frames + gzip 4 flow codes)':<56} {per_frame[0] / 1e3:9.1f} "
          f"{per_frame[1] / 1e3:9.1f} {1e3 * seconds_per_window(read_store, video_ids):22.2f}")
    print(f"{'  of which JPEG frames':<56} {jpeg_bytes / frames / 1e3:9.1f}")
    print(f"{'  of which flow codes, per field':<56} {flow_bytes / pairs / 1e3:9.1f}")
    overhead = store_apparent - jpeg_bytes - flow_bytes
    print(f"{'  of which HDF5 structure (per frame)':<56} {overhead / frames / 1e3:9.1f}")
    old = hdf5_18_copy(store, work / "hdf5-18")
    old_apparent, old_disk = allocated(old / "videos")
    old_seconds = seconds_per_window(lambda v, s: read_store(v, s, old), video_ids)
    print(f"{'  the same files in HDF5 1.8 formats (stores before)':<56} {old_apparent / frames / 1e3:9.1f} "
          f"{old_disk / frames / 1e3:9.1f} {1e3 * old_seconds:22.2f}")
    mars_apparent = mars_frames / frames + sum(a for a, _ in mars_flow) / pairs
    mars_disk = mars_frames_disk / frames + sum(d for _, d in mars_flow) / pairs
    print(f"{'MARS JPEG folders (frame + flow x + flow y)':<56} {mars_apparent / 1e3:9.1f} {mars_disk / 1e3:9.1f}"
          f" {1e3 * seconds_per_window(lambda v, s: read_mars_window(mars, v, s), video_ids):22.2f}")
    print(f"{'  of which flow x + y JPEGs (per field)':<56} {sum(a for a, _ in mars_flow) / pairs / 1e3:9.1f}"
          f" {sum(d for _, d in mars_flow) / pairs / 1e3:9.1f}")
    print(f"store / MARS: {per_frame[0] / mars_apparent:.3f}x in bytes, {per_frame[1] / mars_disk:.3f}x on disk "
          f"(goal <= 1.0x)")
    for name, size, seconds, write in flow_codecs(store, work, video_ids):
        print(f"{'alt flow per field, lossless: ' + name:<56} {size / 1e3:9.1f} {'':>9} "
              f"{1e3 * seconds:22.2f}   write {1e3 * write:.2f} CPU ms/field")
    for name, size, seconds in alternative_encodings(store, work):
        print(f"{'alt: ' + name:<56} {size / 1e3:9.1f} {'':>9} {1e3 * seconds:22.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="frames per video (pairs = frames − 1)")
    parser.add_argument("--short-side", type=int, default=128, help="extraction short side; videos are 320x240")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best is kept")
    parser.add_argument("--storage-frames", type=int, default=17, help="frames per video of the storage section")
    parser.add_argument("--backend", choices=("opencv", "torch"), default="opencv",
                        help="TV-L1 of the extract-flow rows (torch: on the CPU)")
    parser.add_argument("--no-storage", action="store_true", help="throughput only")
    parser.add_argument("--no-throughput", action="store_true", help="storage only")
    args = parser.parse_args()
    print(f"OpenCV {cv2.__version__}, h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), "
          f"{available_cpus()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        videos = work / "videos"
        if not args.no_throughput:
            paths = make_videos(videos, args.videos, args.frames)
            throughput_section(videos, paths, work, args)
        if args.no_storage:
            return
        storage_videos = work / "storage-videos"
        make_videos(storage_videos, 3, args.storage_frames)
        storage_store = work / "storage-store"
        config = ExtractConfig(short_side=args.short_side, preset=args.preset, workers=args.workers)
        extract_flow(config, storage_videos, storage_store, progress=False)
        storage_section(storage_store, work)


if __name__ == "__main__":
    main()
