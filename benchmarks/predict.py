"""What MARS saves at prediction time: per-video seconds of MARS alone against two-stream RGB+Flow with TV-L1.

    python benchmarks/predict.py [--arch resnext101] [--videos 2] [--frames 17] [--repeats 3]
                                 [--short-side 112] [--preset default] [--device auto]

Both predictors run ``pipelines.stages.predict.Predictor`` on the same generated videos (320x240 MJPG panning over a
photograph with a second one's patch moving across, from ``benchmarks/extract.py``) in the same process, taking
turns, each ``--repeats`` times; the fastest repetition counts, as other load on the machine only ever adds time.
Each prediction is the whole job: decode, resize to the store's short side, JPEG round trip of the RGB frames,
TV-L1 for the Flow stream (the checkpoint's preset, one OpenCV thread as an extraction worker uses), every
non-overlapping 16-frame clip through the network(s), mean logits. The networks have random weights (speed does not
depend on them) and 101 classes. Both costs grow linearly with a video's length (TV-L1 per frame pair, the network
per 16 of them), so short videos give the ratio of long ones.

MARS's promise is that the flow computation disappears at test time: the printed ratio is (RGB+Flow) / MARS per
video (goal ≥ 20×). On a CPU the 3D network's own cost is large next to TV-L1 at 112 px, so the ratio there is far
smaller than on a GPU, where the network costs milliseconds and TV-L1 (CPU) dominates. Decoding alone (for RGB)
and decoding with TV-L1 are timed in the same rounds: their ratio is the speed-up when the networks cost nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.extract import make_videos  # noqa: E402
from flow.extract import ExtractConfig  # noqa: E402
from mars_sta import build_model  # noqa: E402
from pipelines.core.checkpoint import save_checkpoint  # noqa: E402
from pipelines.core.manifest import config_hash  # noqa: E402
from flow.decode import FrameCoding, decode_video  # noqa: E402
from pipelines.stages.predict import PredictConfig, Predictor  # noqa: E402

CLASSES = [f"class_{k:03d}" for k in range(101)]


def write_checkpoint(path: Path, arch: str, stream: str, preprocessing: dict) -> Path:
    """A checkpoint as ``train`` writes it, with random weights."""
    model = build_model(arch, num_classes=len(CLASSES), in_channels=2 if stream == "flow" else 3)
    save_checkpoint(path, {"arch": arch, "model_kwargs": model.build_kwargs, "stream": stream, "classes": CLASSES,
                           "preprocessing": preprocessing, "preprocessing_hash": config_hash(preprocessing),
                           "train_config": {"normalization": "mars"}, "state_dict": model.state_dict()})
    return path


def seconds(action) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnext101", help="registry name of the networks (resnet18, ...)")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=17,
                        help="frames per video (17 = one clip of 16 on the flow grid; the generator allows up to 55)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per video and predictor; the fastest counts")
    parser.add_argument("--short-side", type=int, default=112)
    parser.add_argument("--preset", default="default", help="TV-L1 preset of the Flow checkpoint's store")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # TV-L1 as one extraction worker runs it

    preprocessing = ExtractConfig(short_side=args.short_side, preset=args.preset).preprocessing()
    coding = FrameCoding.of_store(preprocessing)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        videos = make_videos(work / "videos", args.videos, args.frames)
        warm_up = make_videos(work / "warm-up", 1, 17)[0]
        mars = Predictor([write_checkpoint(work / "mars.pth", args.arch, "mars", preprocessing)],
                         PredictConfig(device=args.device))
        two_stream = Predictor([write_checkpoint(work / "rgb.pth", args.arch, "rgb", preprocessing),
                                write_checkpoint(work / "flow.pth", args.arch, "flow", preprocessing)],
                               PredictConfig(device=args.device))
        print(f"{args.videos} videos of {args.frames} frames (320x240 -> short side {args.short_side}), "
              f"{args.arch}, TV-L1 preset {args.preset}, device {mars.device}, torch threads {torch.get_num_threads()}")
        mars(warm_up), two_stream(warm_up)  # first calls allocate memory and pick kernels
        rows = []
        for video in videos:
            times = [(seconds(lambda: mars(video)), seconds(lambda: two_stream(video)),
                      seconds(lambda: decode_video(video, preprocessing, coding, rgb=False, flow=True)),
                      seconds(lambda: decode_video(video, preprocessing, coding, rgb=True, flow=False)))
                     for _ in range(args.repeats)]
            rows.append(tuple(min(column) for column in zip(*times)))
            mars_s, both_s, flow_s, rgb_s = rows[-1]
            print(f"  {video.name}: MARS {mars_s:6.2f} s   RGB+Flow {both_s:6.2f} s   ratio {both_s / mars_s:5.1f}x   "
                  f"(decoding for RGB {rgb_s:.2f} s, decoding + TV-L1 {flow_s:.2f} s)")
    mars_mean, both_mean, flow_mean, rgb_mean = (statistics.mean(column) for column in zip(*rows))
    print(f"per video: MARS {mars_mean:.2f} s, RGB+Flow {both_mean:.2f} s -> MARS is {both_mean / mars_mean:.1f}x "
          f"faster (median of per-video ratios {statistics.median(r[1] / r[0] for r in rows):.1f}x; goal >= 20x)")
    print(f"without the networks' time (their cost on a GPU is milliseconds): decoding + TV-L1 {flow_mean:.2f} s "
          f"against decoding for RGB {rgb_mean:.2f} s, {flow_mean / rgb_mean:.0f}x")


if __name__ == "__main__":
    main()
