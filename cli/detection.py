"""Detection commands: eval-detection, train-detector, detect (and the untrimmed synth and the detection demo)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from cli.options import (ARCH, COUNT, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, SHARD, STA_SPEC,
                         WRITABLE_FILE, WRITABLE_FOLDER, FiniteFloatRange)
from pipelines.core.stream_specs import STREAM_SPECS

FRACTION = FiniteFloatRange(0, 1)  # a probability or a tIoU


def _parse_tiou(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    """``0.1,0.2,0.5`` -> [0.1, 0.2, 0.5], each in (0, 1]."""
    try:
        thresholds = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not thresholds or not all(0 < t <= 1 for t in thresholds):
        raise click.BadParameter("give tIoU thresholds in (0, 1], e.g. 0.1,0.3,0.5")
    return thresholds


@click.command("eval-detection")
@click.argument("detections", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--annotations", "annotations_path", required=True, type=click.Path(path_type=Path),
              help="A THUMOS'14 annotation folder (<Class>_<subset>.txt) or an ActivityNet-style JSON.")
@click.option("--subset", default="test", show_default=True,
              help="Which videos: <Class>_<subset>.txt, or the JSON's subset (test matches testing, val validation).")
@click.option("--tiou", callback=_parse_tiou, default="0.1,0.2,0.3,0.4,0.5", show_default=True,
              help="tIoU thresholds, comma-separated.")
@click.option("--protocol", type=click.Choice(["activitynet", "thumos14"]), default="activitynet",
              show_default=True, help="ActivityNet's eval_detection.py, or the THUMOS'14 toolkit's TH14evalDet.")
@click.option("--json", "as_json", is_flag=True, help='Print {"tiou", "mAP", "per_class"} (AP as fractions).')
def eval_detection(detections: Path, annotations_path: Path, subset: str, tiou: list[float], protocol: str,
                   as_json: bool) -> None:
    """Per-class AP and mAP of DETECTIONS at each tIoU threshold.

    DETECTIONS is an ActivityNet results JSON, or the THUMOS'14 toolkit's text: one 'video start end class score'
    line per detection, the class a name or a number of the annotation folder's detclasslist.txt.
    """
    from pipelines.scoring.detection_map import evaluate_file, format_table

    result = evaluate_file(detections, annotations_path, subset, tiou, protocol,
                           warn=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(result.to_json()) if as_json else format_table(result))


@click.command("train-detector")
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Flow store of the untrimmed videos.")
@click.option("--annotations", "annotations_path", required=True, type=click.Path(path_type=Path),
              help="THUMOS'14 annotation folder or ActivityNet-style JSON.")
@click.option("--out", required=True, type=WRITABLE_FOLDER,
              help="Folder for proposal.pth, classification.pth, localization.pth and manifest.json (rerun to "
                   "resume).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose [detection.train] table sets any of these options (options given here win).")
@click.option("--detector", type=click.Choice(["scnn", "rc3d"]), default="scnn", show_default=True,
              help="S-CNN (proposal, classification, localization networks) or R-C3D (table [detection.rc3d]).")
@click.option("--mode", type=click.Choice(["end-to-end", "heads"]),
              help="R-C3D: fine-tune the backbone, or train the heads on --features.  [default: end-to-end]")
@click.option("--features", type=click.Path(file_okay=False, path_type=Path),
              help="R-C3D heads mode: a feature store computed with --pretrained (mars-sta features).")
@click.option("--subset", help="Annotation subset to train on.  [default: val]")
@click.option("--arch", type=ARCH, help="Registry name (see `mars-sta models`).  [default: tiny_resnet]")
@click.option("--stream", type=click.Choice(list(STREAM_SPECS)),
              help="Input stream; mars reads RGB only and distils from --teacher (S-CNN).  [default: flow]")
@click.option("--teacher", type=click.Path(file_okay=False, path_type=Path),
              help="Flow detector (a train-detector folder) the mars stream distils from.")
@click.option("--sta", type=STA_SPEC,
              help="STA in S-CNN's localization network (STA-S-CNN) or R-C3D's backbone, e.g. 'layer3'.")
@click.option("--pretrained", help="Recognition checkpoint the networks start from (S-CNN: proposal and "
                                   "classification; localization starts from classification).")
@click.option("--epochs", type=POSITIVE_INT, help="Passes over the training windows (S-CNN: per network) or "
                                                 "buffers (R-C3D).  [default: 8; R-C3D: 5]")
@click.option("--batch-size", type=POSITIVE_INT, help="S-CNN: windows per optimizer step (R-C3D takes one buffer "
                                                      "per step and process).  [default: 32]")
@click.option("--accumulate", type=POSITIVE_INT,
              help="Micro-batches (R-C3D: buffers) per optimizer step and process.  [default: 1]")
@click.option("--alpha", type=NON_NEGATIVE_FLOAT, help="MARS feature-matching weight (mars stream).  [default: 50]")
@click.option("--lr", type=POSITIVE_FLOAT, help="Learning rate (S-CNN: AdamW, or SGD by its config; R-C3D: SGD, or "
                                              "AdamW by its config)."
                                              "  [default: 0.002; R-C3D: 0.0001]")
@click.option("--frames", type=POSITIVE_INT, help="Clip length every window is sampled to.  [default: 16]")
@click.option("--size", type=POSITIVE_INT, help="Clip side in pixels.  [default: 32]")
@click.option("--seed", type=COUNT, help="Seeds the networks' initial weights, the window or buffer order and "
                                         "dropout.  [default: 0]")
@click.option("--cache-mb", type=COUNT, help="S-CNN: MB of decoded frames each process keeps (LRU; 0: none).  "
                                             "[default: 1024]")
@click.option("--device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes on this machine: relaunches itself under torchrun (DistributedDataParallel).")
def train_detector_command(store: Path, annotations_path: Path, out: Path, config_path: Path | None,
                           detector: str, features: Path | None, teacher: Path | None, no_progress: bool,
                           nproc: int, **options) -> None:
    """Train a detector on annotated untrimmed videos: S-CNN's proposal, classification and localization networks
    (STA-S-CNN with --sta) or R-C3D (STA-R-C3D with --sta).

    \b
    Several GPUs or machines: MARS_STA_TORCHRUN_ARGS='["train-detector", "--store", ...]' torchrun
      --nproc_per_node N [--nnodes M ...] -m cli  (the command line as a JSON list: torchrun's parser
      would read options such as --sta or --mode as abbreviations of its own)
    """
    if nproc > 1:
        from cli.launch import relaunch_under_torchrun

        relaunch_under_torchrun(nproc)
    from pipelines.detection.stages import train_detector_stage

    paths = train_detector_stage(store, annotations_path, out, config_path, options, log=click.echo,
                                 progress=not no_progress, detector=detector, features=features, teacher=teacher)
    if paths:
        click.echo(f"detector: {', '.join(map(str, paths.values()))}")


@click.command("detect")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder written by train-detector.")
@click.option("--store", type=click.Path(path_type=Path), help="Flow store holding the videos.")
@click.option("--features", type=click.Path(file_okay=False, path_type=Path),
              help="R-C3D: run only the heads, on this feature store of the model's backbone.")
@click.option("--out", required=True, type=WRITABLE_FILE,
              help="Results JSON to write (ActivityNet's results format).")
@click.option("--annotations", "annotations_path", type=click.Path(path_type=Path),
              help="Detect in the videos of this annotation subset (default: every video of the store).")
@click.option("--subset", default="test", show_default=True, help="Subset of --annotations.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose [detection.detect] table sets any of these options.")
@click.option("--proposal-threshold", type=FRACTION,
              help="Keep windows the proposal network scores at least this.  [default: 0.5]")
@click.option("--nms-threshold", type=FRACTION,
              help="Per-class NMS tIoU of the results file (S-CNN's one result set per tIoU, NMS 0.1 below it: "
                   "nms_below_tiou in [detection.detect]).  [default: 0.4]")
@click.option("--score-threshold", type=FRACTION,
              help="R-C3D: drop class probabilities below this.  [default: 0.005]")
@click.option("--batch-size", type=POSITIVE_INT, help="S-CNN: windows per forward pass.  [default: 64]")
@click.option("--device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def detect_command(model_dir: Path, store: Path | None, features: Path | None, out: Path,
                   annotations_path: Path | None, subset: str, config_path: Path | None, no_progress: bool,
                   **options) -> None:
    """Detect actions with a trained S-CNN (windows, proposal filter, localization scores, and S-CNN's
    post-processing as [detection.detect] sets it) or R-C3D (end to end, or its heads on --features), then per-class
    NMS."""
    from pipelines.detection.stages import detect_stage

    detect_stage(model_dir, store, out, annotations_path, subset, config_path, options, log=click.echo,
                 progress=not no_progress, features=features)


@click.command("features")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A checkpoint of this project whose network is a 3D ResNet (recognition, detector, rc3d.pth).")
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Flow store of the videos.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Feature store folder (rerun to resume; another checkpoint recomputes it).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose [features] table sets any of these options.")
@click.option("--stride", type=int, help="Grid frames between sampled frames.  [default: 1]")
@click.option("--layer", help="A backbone stage (layer3) or pool (last stage averaged over space).  [default: pool]")
@click.option("--buffer", type=int, help="Sampled frames per backbone pass.  [default: 768]")
@click.option("--device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--shard", type=SHARD, help="I/N: every N-th video from the I-th (0-based), for one of N processes or "
                                          "machines; join the shard stores with merge-stores.  [default: all]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def features_command(checkpoint: Path, store: Path, out: Path, config_path: Path | None, no_progress: bool,
                     **options) -> None:
    """Cache a backbone's feature sequence of every video of STORE (per-video HDF5 files renamed into place)."""
    from pipelines.inference.features import features_stage

    features_stage(checkpoint, store, out, config_path, options, log=click.echo, progress=not no_progress)


def detection_demo(out: Path, seeds: tuple[int, ...], config_path: Path | None) -> None:
    """``demo --task detection``, for one seed or several."""
    from pipelines.stages.detection_demo import run_detection_demos

    run_detection_demos(out, seeds, config_path=config_path, log=click.echo)


def synth_untrimmed(out_dir: Path, options: dict) -> None:
    """``synth --untrimmed``: the untrimmed generator with the options the user gave."""
    from pipelines.data.untrimmed import UntrimmedConfig, generate_untrimmed

    try:
        config = UntrimmedConfig(**options)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc).split("__init__() ")[-1]) from None
    started = time.perf_counter()
    info = generate_untrimmed(out_dir, config)
    click.echo(f"wrote {info['videos']} untrimmed videos with {info['instances']} annotated instances of "
               f"{len(info['classes'])} classes to {out_dir / 'videos'}, annotations to {out_dir / 'annotations'} "
               f"and {out_dir / 'annotations.json'} in {time.perf_counter() - started:.1f} s")


commands: list[click.Command] = [eval_detection, train_detector_command, detect_command, features_command]

