"""The extraction job: videos in, a flow store out, in parallel, resumable after a crash at any moment.

Each worker process extracts whole videos and writes each one's file itself (temporary name, then rename), so there
is no single writer to wait on. The parent holds the store's lock, writes the manifest first and failures.json last.
A rerun skips the videos whose file is in place, deletes temporaries of interrupted videos and redoes those.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import platform
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import cv2
import h5py
import numpy as np

from flow import store as layout
from flow.decode import FrameCoding, stored_frames
from flow.errors import InputError, VideoError
from flow.progress import progress_bar
from flow.quantize import QUANTIZATIONS
from flow.shard import parse_shard, resolve_shard
from flow.tvl1 import BACKEND_CLASSES, BACKENDS, PRESETS, check_device_name, device_kind, preset_params, resolve_device
from flow.video import RESIZE_INTERPOLATION, VideoEntry, VideoReader, find_videos

# What a manifest written before the backend choice existed means by the keys it lacks.
OPENCV_BEFORE_BACKENDS = {"tvl1_backend": "opencv", "tvl1_device": "cpu"}
WORKER_DIED = "the worker process died while working on this video, twice (a crash in the decoder?)"


@dataclass
class ExtractConfig:
    """Settings of ``extract-flow`` (TOML table ``[extract]``); the defaults follow MARS/TSN practice."""

    short_side: int = 256  # resize so the short side is this many pixels; never upscale; 0 keeps the native size
    fps: float | None = None  # resample to this frame rate (MARS used 25); None keeps the native rate
    bound: float = 20.0  # flow is clipped to ±bound pixels before quantisation to uint8
    quantization: str = "round"  # "round" (TSN, denseflow) or "truncate" (MARS's uint8 cast, −0.078 px bias)
    preset: str = "default"  # TV-L1 parameters: "default" (OpenCV's), "mid" or "cheap" (small frames, demos)
    backend: str = "opencv"  # TV-L1 implementation: "opencv" (CPU) or "torch" (the same algorithm, batched)
    device: str = "auto"  # torch backend: "cuda", "cuda:N", "cpu", or "auto" (CUDA when torch sees a GPU)
    batch_pairs: int = 16  # torch backend: frame pairs solved together (does not change the flow)
    jpeg_quality: int = 95  # JPEG quality of the stored RGB frames (OpenCV's default)
    workers: int = 0  # worker processes; 0 = every CPU this process may use
    shard: str | None = None  # "I/N": extract every N-th video from the I-th; None = from torchrun/Slurm, or all
    allow_failures: bool = False  # exit status 0 even when some videos could not be extracted
    verify_sources: bool = False  # also compare each finished video's source by content (SHA-256), not size/mtime only

    def __post_init__(self) -> None:
        problems = []
        if self.short_side < 0:
            problems.append(f"short_side must be ≥ 0, got {self.short_side}")
        if self.fps is not None and not self.fps > 0:
            problems.append(f"fps must be > 0, got {self.fps}")
        if not self.bound > 0:
            problems.append(f"bound must be > 0, got {self.bound}")
        if self.quantization not in QUANTIZATIONS:
            problems.append(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        try:
            check_device_name(self.device)
        except InputError as exc:
            problems.append(exc.problem)
        if self.batch_pairs < 1:
            problems.append(f"batch_pairs must be ≥ 1, got {self.batch_pairs}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.workers < 0:
            problems.append(f"workers must be ≥ 0, got {self.workers}")
        if problems:
            raise InputError(None, "extract config: " + "; ".join(problems))
        if self.shard is not None:
            parse_shard(self.shard)

    def preprocessing(self, device_kind: str = "cpu") -> dict[str, Any]:
        """Everything that decides the stored arrays, as recorded in (and compared against) the manifest.

        ``device_kind`` is where the torch backend runs ("cpu" or "cuda"): float results differ slightly between them.
        """
        return {
            "short_side": self.short_side,
            "fps": None if self.fps is None else float(self.fps),
            "resize_interpolation": RESIZE_INTERPOLATION,
            "gray": "COLOR_BGR2GRAY of the resized frame",
            "tvl1_class": BACKEND_CLASSES[self.backend],
            "tvl1_backend": self.backend,
            "tvl1_device": device_kind,
            "tvl1_preset": self.preset,
            "tvl1": preset_params(self.preset),
            "bound": float(self.bound),
            "quantization": self.quantization,
            "frame_encoding": "jpeg",
            "jpeg_quality": self.jpeg_quality,
            "flow_encoding": "uint8 codes, HDF5 gzip level 4, one chunk per frame",
        }


@dataclass
class ExtractSummary:
    """What one run did. ``failures`` maps video id to its source and reason (this run's failures only)."""

    store: str
    shard: str | None
    selected: int
    extracted: int
    skipped: int
    pairs: int
    seconds: float
    workers: int
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    stale: int = 0  # finished videos whose source changed since, extracted again (counted in ``extracted``)


@dataclass(frozen=True)
class VideoJob:
    """Everything a worker needs for one video (picklable, as it crosses to a spawned process)."""

    video_id: str
    source: str
    relative_source: str
    final: str
    short_side: int
    fps: float | None
    bound: float
    quantization: str
    tvl1: dict[str, Any]
    jpeg_quality: int
    backend: str = "opencv"
    device: str = "cpu"
    batch_pairs: int = 1

    @property
    def coding(self) -> FrameCoding:
        return FrameCoding(bound=self.bound, quantization=self.quantization, tvl1=self.tvl1, backend=self.backend,
                           device=self.device, batch_pairs=self.batch_pairs, jpeg_quality=self.jpeg_quality)


@dataclass(frozen=True)
class VideoResult:
    video_id: str
    pairs: int
    failure: str | None = None


def extract_flow(config: ExtractConfig, videos: str | os.PathLike, out: str | os.PathLike,
                 progress: bool = True) -> ExtractSummary:
    """Extract every video of ``videos`` (a folder or a list file) that ``out`` does not hold yet."""
    started = time.perf_counter()
    device = resolve_device(config.backend, config.device)
    listing = find_videos(videos)
    shard = resolve_shard(config.shard, os.environ)
    selected = shard.select(listing.entries) if shard else listing.entries
    out = Path(out)
    layout.refuse_foreign_folder(out)
    with layout.StoreLock(out):
        _write_or_check_manifest(out, config, listing.root, device_kind(device))
        layout.remove_temporaries(out)
        done = set(layout.finished_ids(out))
        stale = {entry.video_id for entry in selected if entry.video_id in done and layout.source_change(
            layout.video_path(out, entry.video_id), entry.path, config.verify_sources)}
        todo = [entry for entry in selected if entry.video_id not in done or entry.video_id in stale]
        workers = _worker_count(config, len(todo))
        jobs = [_job(entry, listing.root, out, config, device) for entry in todo]
        jobs.sort(key=lambda job: -os.stat(job.source).st_size if os.path.exists(job.source) else 0)
        results = run_with_progress(jobs, extract_video, workers, progress, f"extract-flow {shard}" if shard else
                                    "extract-flow", "pairs", config.backend)
        layout.remove_temporaries(out)  # of workers that died mid-video (their videos were redone)
        for result in results:  # a changed source that no longer extracts: its old flow must not stay
            if result.failure and result.video_id in stale:
                layout.video_path(out, result.video_id).unlink(missing_ok=True)
        failures = _updated_failures(out, {e.video_id for e in selected}, results, jobs)
    return ExtractSummary(
        store=str(out), shard=str(shard) if shard else None, selected=len(selected),
        extracted=sum(r.failure is None for r in results), skipped=len(selected) - len(jobs),
        pairs=sum(r.pairs for r in results), seconds=round(time.perf_counter() - started, 3), workers=workers,
        failures=failures, stale=sum(r.failure is None and r.video_id in stale for r in results),
    )


def _worker_count(config: ExtractConfig, videos: int) -> int:
    """Processes: one per CPU for OpenCV; one for torch unless asked (its batch and threads are the parallelism)."""
    default = available_cpus() if config.backend == "opencv" else 1
    return max(1, min(config.workers or default, videos))


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset and Slurm's cgroup affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def format_summary(summary: ExtractSummary) -> str:
    """A few lines for the terminal, failures with their reasons."""
    rate = summary.pairs / summary.seconds if summary.seconds else 0.0
    shard = f" (shard {summary.shard})" if summary.shard else ""
    stale = f" ({summary.stale} re-extracted as stale: the source changed)" if summary.stale else ""
    lines = [f"{summary.store}{shard}: {summary.extracted} extracted{stale}, {summary.skipped} already done, "
             f"{len(summary.failures)} failed of {summary.selected} videos; {summary.pairs} flow frames in "
             f"{summary.seconds:.1f} s ({rate:.1f} pairs/s, {summary.workers} workers)"]
    return "\n".join(lines + failure_lines(summary.store, summary.failures))


def failure_lines(store: str, failures: dict[str, dict[str, str]]) -> list[str]:
    """The failed videos with their reasons, and where the list is kept, for a command's summary."""
    lines = [f"  failed: {failure['source']}: {failure['reason']}" for _, failure in sorted(failures.items())]
    if failures:
        lines.append(f"  (listed in {Path(store, layout.FAILURES)}; rerun the command to retry them)")
    return lines


# -- the store's manifest ---------------------------------------------------------------------------------------
def check_store(config: ExtractConfig, videos: str | os.PathLike, out: str | os.PathLike,
                named_by: str = "--out") -> None:
    """Refuse now, before any work, what ``extract_flow`` would refuse later: a folder that is not a flow store, or
    a store of other videos or of other preprocessing. ``named_by`` is what names the store, for the message."""
    out, videos = Path(out), Path(videos)
    layout.refuse_foreign_folder(out)
    if (out / layout.MANIFEST).exists():
        root = find_videos(videos).root if videos.exists() else videos.resolve()
        _check_manifest(out, config, root, device_kind(resolve_device(config.backend, config.device)), named_by)


def open_store(config: ExtractConfig, videos: str | os.PathLike, out: str | os.PathLike) -> bool:
    """Write a new store's manifest, or check an existing store's, before any video is extracted; True when this
    call made the store (so a caller can record that the store is its own before extraction starts)."""
    listing = find_videos(videos)
    out = Path(out)
    layout.refuse_foreign_folder(out)
    kind = device_kind(resolve_device(config.backend, config.device))
    with layout.StoreLock(out):
        return _write_or_check_manifest(out, config, listing.root, kind)


def _write_or_check_manifest(out: Path, config: ExtractConfig, source_root: Path, kind: str) -> bool:
    """Check an existing manifest against this extraction on a device of ``kind`` (cpu, cuda), or write a new one;
    True when it wrote one."""
    if (out / layout.MANIFEST).exists():
        _check_manifest(out, config, source_root, kind)
        return False
    layout.write_json_atomic(out / layout.MANIFEST, {
        "format": layout.FORMAT,
        "format_version": layout.FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_root": str(source_root),
        "preprocessing": json.loads(json.dumps(config.preprocessing(kind))),
        "versions": library_versions(config.backend),
    })
    return True


def _check_manifest(out: Path, config: ExtractConfig, source_root: Path, kind: str,
                    named_by: str = "--out") -> None:
    manifest = layout.read_manifest(out)
    stored = {**OPENCV_BEFORE_BACKENDS, **manifest["preprocessing"]}
    differences = layout.preprocessing_differences(stored, json.loads(json.dumps(config.preprocessing(kind))))
    if differences:
        raise InputError(out, f"was extracted with other preprocessing; use another {named_by} or the same "
                              "settings: " + "; ".join(differences))
    if manifest["source_root"] != str(source_root):
        raise InputError(out, f"holds videos of {manifest['source_root']}, not of {source_root}; "
                              f"use another {named_by}")


def library_versions(backend: str = "opencv") -> dict[str, str]:
    """Versions that can change the stored arrays (the TV-L1 backend and OpenCV's JPEG codec above all)."""
    versions = {"python": platform.python_version(), "opencv": cv2.__version__, "numpy": np.__version__,
                "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version}
    if backend == "torch":
        import torch

        versions["torch"] = torch.__version__
    try:
        versions["mars-sta"] = metadata.version("mars-sta")
    except metadata.PackageNotFoundError:
        pass
    return versions


class ListedJob(Protocol):
    """What the pool and the failure list need of a job (an extraction's or an import's)."""

    @property
    def video_id(self) -> str: ...

    @property
    def relative_source(self) -> str: ...


JobT = TypeVar("JobT", bound=ListedJob)


def _updated_failures(out: Path, selected: set[str], results: list[VideoResult],
                      jobs: Sequence[ListedJob]) -> dict[str, dict[str, str]]:
    """Write failures.json: this run's failures plus earlier ones of videos this run did not look at."""
    sources = {job.video_id: job.relative_source for job in jobs}
    current = {r.video_id: {"source": sources[r.video_id], "reason": r.failure} for r in results if r.failure}
    done = set(layout.finished_ids(out))
    kept = {vid: failure for vid, failure in layout.read_failures(out).items()
            if vid not in selected and vid not in done}
    layout.write_failures(out, {**kept, **current})
    return current


# -- running the jobs -------------------------------------------------------------------------------------------
def _job(entry: VideoEntry, root: Path, out: Path, config: ExtractConfig, device: str) -> VideoJob:
    return VideoJob(
        video_id=entry.video_id, source=str(entry.path), relative_source=entry.path.relative_to(root).as_posix(),
        final=str(layout.video_path(out, entry.video_id)), short_side=config.short_side, fps=config.fps,
        bound=float(config.bound), quantization=config.quantization, tvl1=preset_params(config.preset),
        jpeg_quality=config.jpeg_quality, backend=config.backend, device=device, batch_pairs=config.batch_pairs,
    )


def run_with_progress(jobs: Sequence[JobT], work: Callable[[JobT], VideoResult], workers: int, progress: bool,
                      label: str, counted: str, backend: str = "opencv") -> list[VideoResult]:
    """``work`` on every job in spawned worker processes (extraction's and import's), with a bar of videos and the
    rate of what a result's ``pairs`` counts (``counted``: pairs, frames)."""
    results: list[VideoResult] = []
    done = 0
    started = time.perf_counter()
    with progress_bar(total=len(jobs), unit="video", desc=label, disable=not progress or not jobs,
                      dynamic_ncols=True) as bar:
        def on_result(result: VideoResult) -> None:
            nonlocal done
            results.append(result)
            done += result.pairs
            bar.set_postfix_str(f"{done / max(time.perf_counter() - started, 1e-9):.1f} {counted}/s", refresh=False)
            bar.update(1)

        _run_jobs(jobs, _PoolWork(work, workers, backend, label), on_result)
    return results


@dataclass(frozen=True)
class _PoolWork(Generic[JobT]):
    """What each pool runs: the function, how many workers, the TV-L1 backend they load, the command's name."""

    work: Callable[[JobT], VideoResult]
    workers: int
    backend: str
    label: str


def _run_jobs(jobs: Sequence[JobT], pool_work: _PoolWork[JobT], on_result: Callable[[VideoResult], None]) -> None:
    """Run every job; a job in flight when a worker died is retried alone and fails if it kills a worker again."""
    queue = deque(jobs)
    while queue:
        suspects = _run_pool(queue, pool_work, pool_work.workers, on_result)
        if suspects and not _workers_can_start():
            raise RuntimeError(f"{pool_work.label} worker processes exit as soon as they start (their error is "
                               "printed above); a script that runs it must be a file whose main code is guarded by "
                               "`if __name__ == '__main__':`")
        for job in suspects:
            if _run_pool(deque([job]), pool_work, 1, on_result):
                on_result(VideoResult(job.video_id, 0, WORKER_DIED))


def _spawn_pool(workers: int, backend: str = "opencv") -> ProcessPoolExecutor:
    """Spawn, not fork: forking a process that has imported torch (a caller may have) can deadlock."""
    torch_threads = worker_torch_threads(workers) if backend == "torch" else 0
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(os.getpid(), torch_threads))


def worker_torch_threads(workers: int) -> int:
    """Torch threads of each of ``workers`` processes: their share of the CPUs, so that together they use each CPU
    once; torch's default, a thread per CPU in every worker, makes the threads wait on each other."""
    return max(1, available_cpus() // workers)


def _workers_can_start() -> bool:
    """Whether a worker can run anything at all: tells a crashing video from workers that cannot start."""
    with _spawn_pool(1) as pool:
        try:
            pool.submit(os.getpid).result()
            return True
        except BrokenProcessPool:
            return False


def _run_pool(queue: deque[JobT], pool_work: _PoolWork[JobT], workers: int,
              on_result: Callable[[VideoResult], None]) -> list[JobT]:
    """Run queued jobs in a spawn-started pool until the queue is empty or a worker dies.

    Returns the jobs that were in flight when a worker died (empty when all went well). At most ``workers`` jobs
    are in flight, so those are exactly the suspects.
    """
    with _spawn_pool(workers, pool_work.backend) as pool:
        running: dict[Future[VideoResult], JobT] = {}
        while queue or running:
            while queue and len(running) < workers:
                job = queue.popleft()
                running[pool.submit(pool_work.work, job)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    return list(running.values())
                del running[future]
                on_result(result)
    return []


def _init_worker(parent: int, torch_threads: int) -> None:
    """One OpenCV thread per worker (the workers are the parallelism), ``torch_threads`` torch threads for the torch
    backend (0: torch is not used), and no worker outliving its parent."""
    cv2.setNumThreads(1)
    if sys.platform.startswith("linux"):
        # Without this, killing the parent leaves workers running: they would finish and rename their video
        # while a rerun is already redoing it.
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    if torch_threads:  # before the first video, so no torch call ever runs with more threads
        import torch

        torch.set_num_threads(torch_threads)


def extract_video(job: VideoJob) -> VideoResult:
    """Decode, resize, compute TV-L1 between consecutive frames, quantise, and write the video's file."""
    return video_result(job, _extract)


def video_result(job: JobT, run: Callable[[JobT], int]) -> VideoResult:
    """What ``run(job)`` counted, as a result; a problem of the video itself (or OpenCV's) fails that video only."""
    try:
        count = run(job)
    except VideoError as exc:
        return VideoResult(job.video_id, 0, exc.problem)
    except cv2.error as exc:
        return VideoResult(job.video_id, 0, f"OpenCV error: {str(exc).strip().splitlines()[-1]}")
    return VideoResult(job.video_id, count)


def _extract(job: VideoJob) -> int:
    with VideoReader(job.source, job.short_side, job.fps) as reader:
        stat = os.stat(job.source)
        attrs = {"fps": reader.fps, "native_fps": reader.native_fps, "bound": job.bound,
                 "quantization": job.quantization, "frame_encoding": "jpeg", "jpeg_quality": job.jpeg_quality,
                 "source": job.relative_source, "source_size": stat.st_size, "source_mtime": stat.st_mtime,
                 "source_sha256": layout.file_sha256(job.source)}
        writer = layout.VideoFileWriter(Path(job.final), attrs)
        try:
            height = width = 0
            for stored in stored_frames(reader, job.coding):  # one TV-L1 solver per video (flow.tvl1.TVL1)
                assert stored.jpeg is not None  # an extraction's coding always has a JPEG quality
                writer.add_jpeg(stored.jpeg)
                for codes in stored.flow_codes:
                    writer.add_flow(codes)
                height, width = stored.bgr.shape[:2]
            if writer.num_frames < 2:
                raise VideoError(job.source, f"has {writer.num_frames} frame; flow needs at least 2")
            pairs = writer.num_frames - 1
            writer.commit(height, width)
        except BaseException:
            writer.abort()
            raise
    return pairs
