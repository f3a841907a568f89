"""The feature store: per video, a backbone's feature sequence at a fixed temporal stride, cached on disk.

::

    FEATS/
      manifest.json          format, the checkpoint's SHA-256, layer, stride, buffer, input size and
                             normalization, the flow store's preprocessing and its hash, versions
      videos/<video_id>.h5   ``map`` float32 (L, C, h, w), one finished video per file, renamed into place
      .lock                  held (fcntl) while ``features`` writes

A video is read on the flow-frame grid every ``stride`` frames, cut into buffers of ``buffer`` sampled frames
(R-C3D's long input buffer; the last one may be shorter), and each buffer goes through the backbone up to
``layer`` (a stage name, or ``pool``: the last stage averaged over space). The buffers' maps are concatenated in
time; the attribute ``chunks`` holds their boundaries in feature steps, so heads that work per buffer see exactly
what the end-to-end path computes (``video_map`` is that one computation). Files are written like the flow
store's: built in memory, written under a temporary name, fsynced and renamed, so a killed run leaves only
temporaries, which the next run deletes before it resumes. Another checkpoint or other settings make every cached
video stale: ``build_features`` then deletes them and recomputes (a store never mixes two checkpoints).
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import torch

from flow.errors import InputError, write_error
from flow.merge import link_or_copy
from flow.progress import progress_bar
from flow.shard import parse_shard
from flow.store import (MANIFEST, TEMP_MARK, FlowStore, StoreLock, finished_ids, is_dangling_link,
                        read_json_manifest, remove_temporaries, video_path, write_json_atomic)
from pipelines.core.checkpoint import Checkpoint, load_checkpoint
from pipelines.core.config import build_config, check_at_least, read_toml
from pipelines.core.device import resolve_device
from pipelines.core.manifest import config_hash, file_sha256, library_versions
from pipelines.data.clips import Normalization
from pipelines.data.frame_cache import FrameCache

FORMAT = "mars-sta-feature-store"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeaturesConfig:
    """Settings of ``features`` (TOML table ``[features]``)."""

    stride: int = 1  # grid frames between two sampled frames (R-C3D reads every frame at 25 fps)
    layer: str = "pool"  # a backbone stage (``layer3``), or ``pool``: the last stage averaged over space
    buffer: int = 768  # sampled frames per backbone pass (R-C3D's buffer)
    device: str = "auto"
    shard: str | None = None  # "I/N": every N-th video from the I-th, into a shard store for merge-stores

    def __post_init__(self) -> None:
        check_at_least(stride=(self.stride, 1), buffer=(self.buffer, 1))
        if self.shard is not None:
            parse_shard(self.shard)


def fit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of (n, H, W, C) frames, resized to ``size`` when they are not already that size."""
    height, width = frames.shape[1:3]
    if height == width == size:
        return frames
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    cropped = frames[:, top:top + side, left:left + side]
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in cropped]).reshape(
        len(frames), size, size, frames.shape[3])


def read_grid(store: FlowStore, video: str, kind: str, indices: np.ndarray, size: int,
              normalization: Normalization, cache: FrameCache | None = None) -> np.ndarray:
    """Grid positions ``indices`` of one clip kind (``rgb``, ``flow`` or ``rgb+flow``: RGB then flow channels),
    normalised: (n, size, size, C) float32. Only those frames are read (through ``cache`` when given)."""
    cache, parts = cache or FrameCache(), []
    if "rgb" in kind.split("+"):
        raw = cache.read(store, video, "rgb", indices).astype(np.float32)
        parts.append(fit_frames((raw - np.float32(normalization.rgb_mean)) * normalization.rgb_scale, size))
    if "flow" in kind.split("+"):
        codes = cache.read(store, video, "flow", indices).astype(np.float32)
        parts.append(fit_frames((codes - normalization.flow_center) * normalization.flow_scale, size))
    if not parts:
        raise ValueError(f"unknown clip kind {kind!r} (rgb, flow or rgb+flow)")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)  # resized apart: cv2 takes <= 4 channels


def buffers(grid_length: int, stride: int, buffer: int) -> list[tuple[int, int]]:
    """The buffers of a video as ``[first, stop)`` in sampled steps (step k is grid frame k · stride)."""
    steps = -(-grid_length // stride)
    return [(first, min(first + buffer, steps)) for first in range(0, steps, buffer)]


@dataclass(frozen=True)
class BackboneInput:
    """How a checkpoint's backbone reads a video: stream, frame side, normalization, stride, buffer, layer."""

    stream: str
    size: int
    normalization: Normalization
    stride: int
    buffer: int
    layer: str

    @classmethod
    def of(cls, checkpoint: Checkpoint, store: FlowStore, config: FeaturesConfig) -> BackboneInput:
        """What ``checkpoint`` was trained to read (a recognition or a detector checkpoint) with ``config``, once
        ``store`` is known to hold what it was trained on."""
        reading = checkpoint.reading(store.preprocessing)
        checkpoint.check_input(reading, store.root)
        return cls(checkpoint.spec.test_clips, reading.size, Normalization.named(reading.normalization, store.bound),
                   config.stride, config.buffer, config.layer)

    def buffer_clip(self, store: FlowStore, video: str, first: int, stop: int) -> torch.Tensor:
        """Sampled steps ``first:stop`` of ``video`` as one clip (C, T, size, size); only the sampled frames are
        read, so memory follows the buffer, never the video."""
        data = read_grid(store, video, self.stream, np.arange(first, stop) * self.stride, self.size,
                         self.normalization)
        return torch.from_numpy(np.ascontiguousarray(data.transpose(3, 0, 1, 2)))


@torch.no_grad()
def buffer_maps(backbone: torch.nn.Module, store: FlowStore, video: str, reads: BackboneInput,
                device: torch.device) -> Iterator[torch.Tensor]:
    """A video's feature map buffer by buffer, each (C, l, h, w) on the CPU: a consumer that goes buffer by buffer
    holds one buffer's map, however long the video."""
    from mars_sta.rc3d import backbone_map

    backbone.eval()
    for first, stop in buffers(store.num_frames(video) - 1, reads.stride, reads.buffer):
        clip = reads.buffer_clip(store, video, first, stop)[None].to(device)
        yield backbone_map(backbone, clip, reads.layer)[0].float().cpu()


def video_map(backbone: torch.nn.Module, store: FlowStore, video: str, reads: BackboneInput,
              device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """A video's feature map (C, L, h, w) on the CPU, the buffers' maps in time, and their boundaries in steps."""
    maps = list(buffer_maps(backbone, store, video, reads, device))
    return torch.cat(maps, dim=1), [0, *np.cumsum([m.shape[1] for m in maps]).tolist()]


def feature_key(checkpoint_sha256: str, reads: BackboneInput, preprocessing: dict[str, Any]) -> str:
    """What a cached map depends on: the checkpoint's bytes, how frames are read and the store's preprocessing."""
    return config_hash({"checkpoint_sha256": checkpoint_sha256, "stream": reads.stream, "size": reads.size,
                        "normalization": vars(reads.normalization), "stride": reads.stride,
                        "buffer": reads.buffer, "layer": reads.layer, "preprocessing": preprocessing})


def build_features(config: FeaturesConfig, checkpoint_path: Path, store_path: Path, out: Path,
                   log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Write the feature store ``out`` for every video of the flow store; a rerun computes only what is missing.

    Args:
        config: stride, layer, buffer and device.
        checkpoint_path: any checkpoint of this project whose network is a registered 3D ResNet.
        store_path: the flow store of the videos.
        out: the feature store folder.
        log: where the summary lines go.
        progress: show a progress bar over the videos (plain lines when stderr is not a terminal).
    """
    checkpoint = load_checkpoint(checkpoint_path)
    store = FlowStore(store_path)
    reads = BackboneInput.of(checkpoint, store, config)
    device = resolve_device(config.device)
    backbone = checkpoint.build_model().to(device)
    _check_layer(backbone, config.layer, checkpoint_path)
    manifest = _manifest(checkpoint, reads, store)
    refuse_foreign(out)
    started, done = time.perf_counter(), 0
    shard = parse_shard(config.shard) if config.shard else None
    videos = shard.select(store.video_ids()) if shard else store.video_ids()
    with StoreLock(out):
        remove_temporaries(out)
        _drop_stale(out, manifest["key"], log)
        write_json_atomic(out / MANIFEST, manifest)
        for video in progress_bar(videos, desc="features", unit="video", disable=not progress or not videos):
            if _is_current(video_path(out, video), manifest["key"]):
                continue
            feature_map, bounds = video_map(backbone, store, video, reads, device)
            _write_video(video_path(out, video), feature_map, _video_attrs(store, video, reads, bounds,
                                                                           manifest["key"]))
            done += 1
    seconds = time.perf_counter() - started
    log(f"{done} videos computed, {len(videos) - done} cached, in {seconds:.1f} s -> {out}"
        + (f" (shard {shard})" if shard else ""))
    return {"computed": done, "videos": len(videos), "seconds": seconds}


def _video_attrs(store: FlowStore, video: str, reads: BackboneInput, bounds: list[int], key: str
                 ) -> dict[str, Any]:
    """Buffer boundaries, grid frames per sampled and per feature step, grid length, fps and the store's key."""
    grid = store.num_frames(video) - 1
    first, stop = buffers(grid, reads.stride, reads.buffer)[0]
    return {"chunks": np.asarray(bounds, np.int64), "stride": reads.stride,
            "feature_stride": reads.stride * (stop - first) / bounds[1], "grid_length": grid,
            "fps": float(store.attrs(video).get("fps") or 0.0), "key": key}


def _check_layer(backbone: torch.nn.Module, layer: str, checkpoint_path: Path) -> None:
    names = getattr(backbone, "stage_names", None)
    if names is None:
        raise InputError(checkpoint_path, f"'{backbone.arch}' is not a 3D ResNet; features need one of its stages")
    if layer not in (*names, "pool"):
        raise InputError(None, f"--layer {layer!r}: expected pool or one of {', '.join(names)}")


def _manifest(checkpoint: Checkpoint, reads: BackboneInput, store: FlowStore) -> dict[str, Any]:
    sha = file_sha256(checkpoint.path)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "checkpoint": str(checkpoint.path),
            "checkpoint_sha256": sha, "arch": checkpoint.arch, "model_kwargs": checkpoint.model_kwargs,
            "stream": checkpoint.stream, "layer": reads.layer, "stride": reads.stride, "buffer": reads.buffer,
            "size": reads.size, "normalization": vars(reads.normalization), "store": str(store.root),
            "preprocessing": store.preprocessing, "preprocessing_hash": config_hash(store.preprocessing),
            "key": feature_key(sha, reads, store.preprocessing), "versions": library_versions(),
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def merge_features(sources: list[Path], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Join feature stores of one checkpoint and settings (the shards of ``features --shard``) into ``out``.

    Every source is read through first and a damaged one refused; then each video file is hard-linked into place
    (copied through a temporary name across file systems), as ``merge-stores`` does, so a killed merge resumes.

    Args:
        sources: the feature stores to join; their manifests must hold the same key.
        out: a new feature store, or one of the same key to add to.
        log: where the summary line goes.
    """
    if not sources:
        raise InputError(None, "no feature stores to merge")
    manifests = [read_feature_manifest(source) for source in sources]
    if any(Path(source).resolve() == Path(out).resolve() for source in sources):
        raise InputError(out, "is also one of the stores to merge")
    for source, manifest in zip(sources, manifests):
        if manifest["key"] != manifests[0]["key"]:
            raise InputError(source, f"was computed with another checkpoint or other settings than {sources[0]}")
        problems = FeatureStore(source).verify()
        if problems:
            raise InputError(source, f"{len(problems)} damaged video file(s), e.g. {problems[0]}")
    refuse_foreign(out)
    if (out / MANIFEST).is_file() and read_feature_manifest(out)["key"] != manifests[0]["key"]:
        raise InputError(out, "holds features of another checkpoint or other settings")
    added = 0
    with StoreLock(out):
        remove_temporaries(out)
        write_json_atomic(out / MANIFEST, manifests[0])
        for source in sources:
            for video in finished_ids(source):
                if not video_path(out, video).is_file():
                    link_or_copy(video_path(source, video), video_path(out, video))
                    added += 1
    log(f"{out}: {added} videos added from {len(sources)} stores, {len(finished_ids(out))} in all")
    return {"added": added, "videos": len(finished_ids(out))}


def refuse_foreign(out: Path) -> None:
    """Never write into a folder that holds something other than a feature store."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        read_feature_manifest(out)


def _drop_stale(out: Path, key: str, log: Callable[[str], None]) -> None:
    """Delete every cached video when the store was written for another checkpoint or other settings."""
    if not (out / MANIFEST).is_file() or read_feature_manifest(out)["key"] == key:
        return
    stale = finished_ids(out)
    for video in stale:
        video_path(out, video).unlink()
    log(f"{out}: written with another checkpoint or other settings; recomputing its {len(stale)} videos")


def _is_current(path: Path, key: str) -> bool:
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            return handle.attrs.get("key") == key
    except OSError:
        return False


def _write_video(final: Path, feature_map: torch.Tensor, attrs: dict[str, Any]) -> None:
    """Build the file in memory, write it under a temporary name, fsync, rename: a video is done once in place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f"{final.name}{TEMP_MARK}{os.getpid()}")
    with h5py.File(temp, "w", driver="core", backing_store=False) as handle:
        handle.create_dataset("map", data=feature_map.permute(1, 0, 2, 3).numpy())
        handle.attrs.update(attrs)
        handle.flush()
        image = handle.id.get_file_image()
    try:
        with open(temp, "wb") as stream:
            stream.write(image)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, final)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise write_error(final, exc) from None


def read_feature_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a feature store; InputError when ``root`` is not one."""
    manifest = read_json_manifest(root, "feature store")
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("key"), str):
        raise InputError(Path(root) / MANIFEST, f"is not a feature store manifest (format is not {FORMAT!r})")
    return manifest


def is_feature_store(root: Path) -> bool:
    """Whether ``root`` holds a feature store's manifest (the store commands serve flow and feature stores)."""
    try:
        read_feature_manifest(root)
    except InputError:
        return False
    return True


class FeatureStore:
    """Read access to a feature store: each video's map (C, L, h, w) and its buffers' boundaries."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.manifest = read_feature_manifest(self.root)

    def video_ids(self) -> list[str]:
        return finished_ids(self.root)

    def __contains__(self, video: object) -> bool:
        """Listed in the store, as ``video_ids`` lists it (a dangling link too: reading it fails, naming it)."""
        return isinstance(video, str) and (video_path(self.root, video).is_file()
                                           or is_dangling_link(video_path(self.root, video)))

    def read(self, video: str) -> tuple[torch.Tensor, list[int], dict[str, Any]]:
        """The map (C, L, h, w), the buffer boundaries in feature steps and the video's attributes."""
        return self._read(video, None)

    def read_chunks(self, video: str) -> tuple[dict[str, Any], Iterator[torch.Tensor]]:
        """The video's attributes, and its buffers' maps (C, l, h, w) one by one, each read when it is reached."""
        first, bounds, attrs = self._read(video, 0)
        rest = (self.read_chunk(video, chunk) for chunk in range(1, len(bounds) - 1))
        return attrs, itertools.chain([first], rest)

    def read_chunk(self, video: str, chunk: int) -> torch.Tensor:
        """The map (C, l, h, w) of one buffer: only its steps are read, so heads-only training holds one buffer's
        map at a time, not every video's."""
        return self._read(video, chunk)[0]

    def _read(self, video: str, chunk: int | None) -> tuple[torch.Tensor, list[int], dict[str, Any]]:
        path = video_path(self.root, video)
        try:
            with h5py.File(path, "r") as handle:
                attrs = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in handle.attrs.items()}
                bounds = [int(b) for b in attrs["chunks"]]
                data = handle["map"][() if chunk is None else slice(bounds[chunk], bounds[chunk + 1])]
        except (OSError, KeyError) as exc:
            raise InputError(path, f"cannot be read as a feature-store video ({str(exc).splitlines()[0]})") from None
        if attrs.get("key") != self.manifest["key"]:
            raise InputError(path, "was written for another checkpoint or settings than its store's manifest")
        return torch.from_numpy(data).permute(1, 0, 2, 3).contiguous(), bounds, attrs

    def verify(self) -> list[str]:
        """One line per video file that cannot be read, is of another key or whose map disagrees with its chunks."""
        problems = []
        for video in self.video_ids():
            try:
                feature_map, bounds, _ = self.read(video)
            except InputError as exc:
                problems.append(str(exc))
                continue
            if bounds[0] != 0 or bounds[-1] != feature_map.shape[1] or not torch.isfinite(feature_map).all():
                problems.append(f"{video_path(self.root, video)}: map and buffer boundaries disagree")
        return problems


def features_stage(checkpoint: Path, store: Path, out: Path, config_path: Path | None,
                   options: dict[str, Any], log: Callable[[str], None] = print,
                   progress: bool = True) -> dict[str, Any]:
    """``features``: the config from the TOML table ``[features]`` and the options given, then the store."""
    table = dict(read_toml(config_path).get("features", {})) if config_path else {}
    config = build_config(FeaturesConfig, table, options, source=config_path)
    return build_features(config, checkpoint, store, out, log=log, progress=progress)
