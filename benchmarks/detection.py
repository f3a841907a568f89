"""What the feature store saves at detection time: R-C3D end to end against its heads on cached features.

    python benchmarks/detection.py [--arch tiny_resnet] [--sta layer3] [--videos 12] [--size 32] [--stride 1]
                                   [--buffer 768] [--repeats 3] [--device auto]

Synthetic untrimmed videos (``synth --untrimmed``, 120-240 frames at 25 fps) are extracted with the cheap TV-L1
preset; a backbone with random weights (speed does not depend on them) is saved as a checkpoint, the feature
store is built from it (timed: the one-off cost of the cache), R-C3D's heads train one epoch on it, and then the
same ``detect`` runs end to end (every buffer through the backbone, then the heads) and on the cached maps (heads
only), taking turns ``--repeats`` times; the fastest repetition counts, as other load only ever adds time. The
figures are video-minutes detected per second of wall time, and the cache's build time.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flow.extract import ExtractConfig, extract_flow  # noqa: E402
from flow.store import FlowStore  # noqa: E402
from mars_sta import build_model  # noqa: E402
from pipelines.core.checkpoint import save_checkpoint  # noqa: E402
from pipelines.data.annotations import read_annotations  # noqa: E402
from mars_sta.rc3d import map_geometry  # noqa: E402
from pipelines.detection.rc3d import RC3DConfig, train_rc3d  # noqa: E402
from pipelines.detection.rc3d_detect import RC3DDetectConfig, detect_rc3d  # noqa: E402
from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed  # noqa: E402
from pipelines.inference.features import FeaturesConfig, build_features  # noqa: E402

PORT_SCALES = (2, 4, 5, 6, 8, 9, 10, 12, 14, 16)  # R-C3D's anchors in feature steps, whatever the backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny_resnet")
    parser.add_argument("--sta", default="layer3")
    parser.add_argument("--videos", type=int, default=12, help="test videos (as many again to train the heads)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--buffer", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run(Path(folder), args)


def run(root: Path, args: argparse.Namespace) -> None:
    generate_untrimmed(root / "data", UntrimmedConfig(classes=4, val_videos=args.videos, test_videos=args.videos,
                                                      size=args.size))
    extract_flow(ExtractConfig(short_side=0, preset="cheap"), root / "data" / "videos", root / "store",
                 progress=False)
    backbone = build_model(args.arch, num_classes=5, in_channels=2, sample_size=args.size, sta=args.sta or None)
    save_checkpoint(root / "backbone.pth", {"arch": backbone.arch, "model_kwargs": dict(backbone.build_kwargs),
                                            "state_dict": backbone.state_dict(), "stream": "flow", "classes": [],
                                            "train_config": {"normalization": "unit"}})
    layer = backbone.stage_names[-1]
    features = FeaturesConfig(stride=args.stride, layer=layer, buffer=args.buffer, device=args.device)
    started = time.perf_counter()
    build_features(features, root / "backbone.pth", root / "store", root / "features", log=lambda _: None,
                   progress=False)
    cache_seconds = time.perf_counter() - started
    config = RC3DConfig(mode="heads", arch=args.arch, sta=args.sta or None, size=args.size, layer=layer,
                        pretrained=str(root / "backbone.pth"), stride=args.stride, buffer=args.buffer, epochs=1,
                        hidden=256, proposal_hidden=64, device=args.device,
                        anchor_frames=tuple(s * map_geometry(backbone, layer)[1] for s in PORT_SCALES))
    annotations = root / "data" / "annotations.json"
    train_rc3d(config, root / "store", read_annotations(annotations, "val"), root / "model", root / "features",
               log=lambda _: None)
    videos = sorted(read_annotations(annotations, "test").videos)
    store = FlowStore(root / "store")
    minutes = sum((store.num_frames(v) - 1) / float(store.attrs(v)["fps"]) for v in videos) / 60
    test = RC3DDetectConfig(device=args.device)
    best = {"end to end": float("inf"), "heads on cached features": float("inf")}
    for _ in range(args.repeats):
        for name, source in (("end to end", {"store_path": root / "store"}),
                             ("heads on cached features", {"features": root / "features"})):
            timed = detect_rc3d(root / "model", videos, root / "out.json", test, log=lambda _: None, **source)
            best[name] = min(best[name], timed["seconds"])
    print(f"{args.arch}{' + STA ' + args.sta if args.sta else ''}, {len(videos)} test videos "
          f"({minutes * 60:.0f} s of video at 25 fps, {args.size} px), stride {args.stride}, buffer {args.buffer}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    for name, seconds in best.items():
        print(f"{name:>26}: {minutes / seconds:8.2f} video-minutes/s ({seconds:.2f} s)")
    print(f"{'speed-up':>26}: {best['end to end'] / best['heads on cached features']:8.1f}x")
    print(f"{'feature cache build':>26}: {cache_seconds:.2f} s for {2 * args.videos} videos "
          f"({2 * minutes / cache_seconds:.2f} video-minutes/s)")


if __name__ == "__main__":
    main()
