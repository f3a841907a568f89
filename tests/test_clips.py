"""The clip loader on a real store: synthetic and hand-made videos extracted with the real TV-L1 pipeline."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flow.errors import InputError
from flow.extract import ExtractConfig, extract_flow
from flow.store import FlowStore
from pipelines.data.clips import (
    ACTIVITYNET_MEAN,
    ClipDataset,
    Normalization,
    VideoClips,
    corner_crop,
    test_windows as mars_test_windows,
    train_window,
)
from pipelines.data.synth import SynthConfig, generate

SYNTH = [("left/left_0001", 0), ("right/right_0002", 1)]
WIDE = [("wide/long", 1), ("wide/short", 0)]  # 40 and 10 frames of 48x64


def write_panning_video(path: Path, frames: int, height: int, width: int) -> None:
    """Smooth colour texture sliding left by one pixel per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    texture = cv2.resize(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8), (width + frames, height),
                         interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    for t in range(frames):
        writer.write(np.ascontiguousarray(texture[:, t : t + width]))
    writer.release()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FlowStore:
    root = tmp_path_factory.mktemp("clips")
    generate(root / "data", SynthConfig(classes=2, videos_per_class=2, frames=17, size=32))
    write_panning_video(root / "data" / "videos" / "wide" / "long.avi", 40, 48, 64)
    write_panning_video(root / "data" / "videos" / "wide" / "short.avi", 10, 48, 64)
    config = ExtractConfig(short_side=0, preset="cheap", workers=2)
    summary = extract_flow(config, root / "data" / "videos", root / "store", progress=False)
    assert summary.extracted == 6, summary.failures
    return FlowStore(root / "store")


@pytest.mark.parametrize("mode, channels", [("rgb", 3), ("flow", 2), ("rgb+flow", 5)])
def test_shapes_and_dtypes(store, mode, channels):
    for train in (True, False):
        clip, label = ClipDataset(store, SYNTH + WIDE, mode, 16, 24, train=train)[2]
        assert clip.shape == (channels, 16, 24, 24) and clip.dtype == torch.float32 and label == 1
    clips, label = VideoClips(store, WIDE, mode, 16, 24)[0]
    assert clips.shape == (2, channels, 16, 24, 24) and clips.dtype == torch.float32 and label == 1
    views, _ = VideoClips(store, WIDE, mode, 8, 24, clips=4, crops=3)[0]
    assert views.shape == (12, channels, 8, 24, 24)


def test_test_clips_follow_the_mars_protocol_on_the_flow_grid(store):
    """floor((T-1)/16) clips; with the sample size equal to the short side only the centre crop acts."""
    rgb, _ = VideoClips(store, WIDE, "rgb", 16, 48)[0]
    flow, _ = VideoClips(store, WIDE, "flow", 16, 48)[0]
    frames, codes = store.frames("wide/long"), store.flow_codes("wide/long")
    assert frames.shape[0] == 40 and rgb.shape[0] == flow.shape[0] == 39 // 16
    for k in range(2):
        window = slice(16 * k, 16 * k + 16)
        expected_rgb = frames[window, :, 8:56].astype(np.float32) - np.float32(ACTIVITYNET_MEAN)
        expected_flow = codes[window, :, 8:56].astype(np.float32) - 127.5
        assert torch.equal(rgb[k], torch.from_numpy(expected_rgb.transpose(3, 0, 1, 2).copy()))
        assert torch.equal(flow[k], torch.from_numpy(expected_flow.transpose(3, 0, 1, 2).copy()))
    short, _ = VideoClips(store, WIDE, "flow", 16, 48)[1]  # 10 frames: 9 flow frames looped to 16
    looped = np.concatenate([np.arange(9), np.arange(7)])
    expected = store.flow_codes("wide/short")[looped][:, :, 8:56].astype(np.float32) - 127.5
    assert short.shape[0] == 1 and torch.equal(short[0], torch.from_numpy(expected.transpose(3, 0, 1, 2).copy()))


def test_flow_of_a_leftward_pan_is_negative_x(store):
    clip, _ = VideoClips(store, WIDE, "flow", 16, 48)[0]
    step = 2 * store.bound / 255  # pixels per code
    assert -1.3 < float(clip[0, 0].median()) * step < -0.7 and abs(float(clip[0, 1].median()) * step) < 0.3


def test_normalisation_presets():
    assert Normalization.named("mars") == Normalization(ACTIVITYNET_MEAN, 1.0, 127.5, 1.0)
    unit = Normalization.named("unit", bound=20.0)
    assert unit.rgb_scale == 1 / 64 and unit.flow_scale == pytest.approx(40 / 255 / 4)
    with pytest.raises(ValueError):
        Normalization.named("imagenet")


def test_unit_normalisation_values(store):
    unit = Normalization.named("unit", store.bound)
    flow, _ = VideoClips(store, WIDE, "flow", 16, 48, normalization=unit)[0]
    codes = store.flow_codes("wide/long", 0, 16)[:, :, 8:56].astype(np.float32)
    expected = (codes - 127.5) * np.float32((2 * store.bound / 255) / 4)
    assert torch.allclose(flow[0], torch.from_numpy(expected.transpose(3, 0, 1, 2).copy()))


def mirrored(clip: torch.Tensor, horizontal: bool, flow_at: int | None) -> torch.Tensor:
    """What a mirror must do to a (C, T, H, W) clip: flip the images, negate the flow across the mirror."""
    out = clip.flip(-1 if horizontal else -2).clone()
    if flow_at is not None:
        out[flow_at + (0 if horizontal else 1)] *= -1
    return out


def test_horizontal_flip_mirrors_the_clip_and_negates_flow_x(store):
    plain = ClipDataset(store, WIDE, "rgb+flow", 16, 24, flip=False, seed=7)
    flipping = ClipDataset(store, WIDE, "rgb+flow", 16, 24, seed=7)
    seen = set()
    for epoch in range(8):
        plain.set_epoch(epoch)
        flipping.set_epoch(epoch)
        (a, label_a), (b, label_b) = plain[0], flipping[0]
        flipped = torch.equal(b, mirrored(a, True, 3))
        assert flipped or torch.equal(a, b)
        assert label_a == label_b == 1  # no map: a flip keeps the label (MARS)
        seen.add(flipped)
    assert seen == {True, False}


def test_label_aware_flips_relabel_and_mirror_vertically(store):
    hmap, vmap = {0: 1, 1: 0}, {0: 1, 1: 0}
    plain = ClipDataset(store, SYNTH, "flow", 16, 24, flip=False, seed=3)
    aware = ClipDataset(store, SYNTH, "flow", 16, 24, hflip_map=hmap, vflip_map=vmap, seed=3)
    seen = set()
    for epoch in range(12):
        plain.set_epoch(epoch)
        aware.set_epoch(epoch)
        (a, label), (b, new_label) = plain[0], aware[0]
        for h in (False, True):
            for v in (False, True):
                expected = a
                if h:
                    expected = mirrored(expected, True, 0)
                if v:
                    expected = mirrored(expected, False, 0)
                if torch.equal(b, expected):
                    seen.add((h, v))
                    relabelled = hmap[label] if h else label
                    assert new_label == (vmap[relabelled] if v else relabelled)
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_rgb_flow_parts_equal_the_single_modes(store):
    for train in (True, False):
        both = ClipDataset(store, SYNTH + WIDE, "rgb+flow", 16, 24, train=train, seed=5)
        rgb = ClipDataset(store, SYNTH + WIDE, "rgb", 16, 24, train=train, seed=5)
        flow = ClipDataset(store, SYNTH + WIDE, "flow", 16, 24, train=train, seed=5)
        for index in range(4):
            for dataset in (both, rgb, flow):
                dataset.set_epoch(index)
            clip = both[index][0]
            assert torch.equal(clip[:3], rgb[index][0]) and torch.equal(clip[3:], flow[index][0])


def test_clips_depend_only_on_seed_epoch_and_index(store):
    first = ClipDataset(store, WIDE, "flow", 8, 24, seed=11)
    first.set_epoch(4)
    resumed = ClipDataset(store, WIDE, "flow", 8, 24, seed=11)
    _ = resumed[0]  # an earlier draw must not matter
    resumed.set_epoch(4)
    assert torch.equal(first[0][0], resumed[0][0])
    draws = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        draws.add(first[0][0].numpy().tobytes())
    assert len(draws) > 3


def test_works_in_a_spawn_dataloader_with_two_workers(store):
    dataset = ClipDataset(store, SYNTH + WIDE, "rgb+flow", 16, 24, seed=2)
    dataset.set_epoch(1)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    batches = list(loader)
    clips = torch.cat([clip for clip, _ in batches])
    labels = torch.cat([label for _, label in batches])
    assert clips.shape == (4, 5, 16, 24, 24)
    assert torch.equal(clips, torch.stack([dataset[i][0] for i in range(4)]))
    assert labels.tolist() == [0, 1, 1, 0]


def test_a_clip_of_exactly_the_video_length_uses_the_whole_video(store):
    """17 frames = 16 flow positions: every training clip is the whole video; scale 1 keeps the whole frame."""
    dataset = ClipDataset(store, SYNTH, "rgb+flow", 16, 32, flip=False, scales=(1.0,), seed=9)
    frames, codes = store.frames("left/left_0001", 0, 16), store.flow_codes("left/left_0001")
    expected = np.concatenate([frames.astype(np.float32) - np.float32(ACTIVITYNET_MEAN),
                               codes.astype(np.float32) - 127.5], axis=-1)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        assert torch.equal(dataset[0][0], torch.from_numpy(expected.transpose(3, 0, 1, 2).copy()))


def test_windows_and_crops():
    rng = np.random.default_rng(0)
    starts = {int(train_window(20, 16, rng)[0]) for _ in range(200)}
    assert starts == set(range(5))  # every start that fits, the last included
    short = train_window(5, 16, rng)
    assert len(short) == 16 and np.array_equal(np.diff(short) % 5, np.ones(15))  # loops through the video
    assert [w.tolist() for w in mars_test_windows(35, 16)] == [list(range(16)), list(range(16, 32))]
    assert corner_crop(48, 64, 0.5, "c") == (12, 20, 24)
    assert corner_crop(48, 64, 0.5, "br") == (24, 40, 24)
    assert corner_crop(48, 64, 2**-0.25, "tr") == (0, 64 - 40, 40)


def test_missing_videos_and_bad_modes(store):
    with pytest.raises(InputError, match=r"has no video 'jump/v1' \(1 of 2 listed videos are missing"):
        ClipDataset(store, [("jump/v1", 0), ("wide/long", 1)], "rgb")
    with pytest.raises(ValueError, match="mode must be one of"):
        ClipDataset(store, WIDE, "depth")
