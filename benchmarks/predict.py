"""What MARS saves at prediction time: per-video seconds of MARS alone against two-stream RGB+Flow with TV-L1.

    python benchmarks/predict.py [--arch resnext101] [--videos 3] [--frames 49] [--short-side 112]
                                 [--preset default] [--device auto]

Both predictors run ``pipelines.predict.Predictor`` on the same generated videos (320x240 MJPG panning over a
photograph with a second one's patch moving across, from ``benchmarks/extract.py``), in the same process,
alternating video by video so that other load on the machine hits both alike. Each prediction is the whole job:
decode, resize to the store's short side, JPEG round trip of the RGB frames, TV-L1 for the Flow stream (the
checkpoint's preset, one OpenCV thread per process as extraction uses), every non-overlapping 16-frame clip through
the network(s), mean logits. The networks have random weights (speed does not depend on them) and 101 classes.

MARS's promise is that the flow computation disappears at test time: the printed ratio is (RGB+Flow) / MARS per
video (goal ≥ 20×). On a CPU the 3D network's own cost is large next to TV-L1 at 112 px, so the ratio there is far
smaller than on a GPU, where the network costs milliseconds and TV-L1 (CPU) dominates; the breakdown line says
where the time goes.
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
from pipelines.checkpoint import save_checkpoint  # noqa: E402
from pipelines.manifest import config_hash  # noqa: E402
from pipelines.predict import PredictConfig, Predictor, decode_video  # noqa: E402

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
    parser.add_argument("--arch", default="resnext101", help="registry name of the networks (resnext101, resnet18, ...)")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--frames", type=int, default=49,
                        help="frames per video (49 = 3 clips of 16 on the flow grid; the generator allows up to 55)")
    parser.add_argument("--short-side", type=int, default=112)
    parser.add_argument("--preset", default="default", help="TV-L1 preset of the Flow checkpoint's store")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # TV-L1 as one extraction worker runs it

    preprocessing = ExtractConfig(short_side=args.short_side, preset=args.preset).preprocessing()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        videos = make_videos(work / "videos", args.videos, args.frames)
        mars = Predictor([write_checkpoint(work / "mars.pth", args.arch, "mars", preprocessing)],
                         PredictConfig(device=args.device))
        two_stream = Predictor([write_checkpoint(work / "rgb.pth", args.arch, "rgb", preprocessing),
                                write_checkpoint(work / "flow.pth", args.arch, "flow", preprocessing)],
                               PredictConfig(device=args.device))
        print(f"{args.videos} videos of {args.frames} frames (320x240 -> short side {args.short_side}), "
              f"{args.arch}, TV-L1 preset {args.preset}, device {mars.device}, torch threads {torch.get_num_threads()}")
        mars(videos[0]), two_stream(videos[0])  # warm-up: first calls allocate and pick kernels
        rows = []
        for video in videos:
            mars_s = seconds(lambda: mars(video))
            both_s = seconds(lambda: two_stream(video))
            flow_s = seconds(lambda: decode_video(video, preprocessing, rgb=False, flow=True))
            rows.append((video.name, mars_s, both_s, flow_s))
            print(f"  {video.name}: MARS {mars_s:6.2f} s   RGB+Flow {both_s:6.2f} s   ratio {both_s / mars_s:5.1f}x"
                  f"   (decode + TV-L1 alone {flow_s:5.2f} s)")
    mars_mean = statistics.mean(r[1] for r in rows)
    both_mean = statistics.mean(r[2] for r in rows)
    flow_mean = statistics.mean(r[3] for r in rows)
    print(f"per video: MARS {mars_mean:.2f} s, RGB+Flow {both_mean:.2f} s -> MARS is {both_mean / mars_mean:.1f}x "
          f"faster (goal >= 20x)")
    print(f"breakdown of RGB+Flow: decode + TV-L1 {flow_mean:.2f} s ({flow_mean / both_mean:.0%}), "
          f"networks and the rest {both_mean - flow_mean:.2f} s")


if __name__ == "__main__":
    main()
