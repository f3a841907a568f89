"""Detection commands: eval-detection, train-detector, detect (and the untrimmed synth and the detection demo)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click


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
    """Per-class AP and mAP of DETECTIONS (ActivityNet results JSON) at each tIoU threshold."""
    from pipelines.detection.evaluation import evaluate_file, format_table

    result = evaluate_file(detections, annotations_path, subset, tiou, protocol)
    click.echo(json.dumps(result.to_json()) if as_json else format_table(result))


@click.command("train-detector")
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Flow store of the untrimmed videos.")
@click.option("--annotations", "annotations_path", required=True, type=click.Path(path_type=Path),
              help="THUMOS'14 annotation folder or ActivityNet-style JSON.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for proposal.pth, localization.pth and manifest.json (rerun to resume).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose [detection.train] table sets any of these options (options given here win).")
@click.option("--subset", help="Annotation subset to train on.  [default: val]")
@click.option("--arch", help="Registry name (see `mars-sta models`).  [default: tiny_resnet]")
@click.option("--stream", type=click.Choice(["rgb", "flow", "mars"]),
              help="Input stream; mars reads RGB only and distils from --teacher.  [default: flow]")
@click.option("--teacher", type=click.Path(file_okay=False, path_type=Path),
              help="Flow detector (a train-detector folder) the mars stream distils from.")
@click.option("--sta", help="STA in the localization network (STA-S-CNN), e.g. 'layer3'.")
@click.option("--pretrained", help="Recognition checkpoint both networks start from.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--accumulate", type=int, help="Micro-batches per optimizer step.  [default: 1]")
@click.option("--alpha", type=float, help="MARS feature-matching weight (mars stream).  [default: 50]")
@click.option("--lr", type=float)
@click.option("--frames", type=int, help="Clip length every window is sampled to.  [default: 16]")
@click.option("--size", type=int, help="Clip side in pixels.  [default: 32]")
@click.option("--seed", type=int)
@click.option("--device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes on this machine: relaunches itself under torchrun (DistributedDataParallel).")
def train_detector_command(store: Path, annotations_path: Path, out: Path, config_path: Path | None,
                           teacher: Path | None, no_progress: bool, nproc: int, **options) -> None:
    """Train S-CNN's proposal and localization networks (STA-S-CNN with --sta) on annotated untrimmed videos.

    \b
    Several GPUs or machines: torchrun --nproc_per_node N [--nnodes M ...] -m cli train-detector ...
    """
    if nproc > 1:
        from cli.launch import relaunch_under_torchrun

        relaunch_under_torchrun(nproc)
    from pipelines.detection.stages import train_detector_stage

    paths = train_detector_stage(store, annotations_path, out, config_path, options, log=click.echo,
                                 progress=not no_progress, teacher=teacher)
    if paths:
        click.echo(f"detector: {paths['proposal']}, {paths['localization']}")


@click.command("detect")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder written by train-detector.")
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Flow store holding the videos.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results JSON to write (ActivityNet's results format).")
@click.option("--annotations", "annotations_path", type=click.Path(path_type=Path),
              help="Detect in the videos of this annotation subset (default: every video of the store).")
@click.option("--subset", default="test", show_default=True, help="Subset of --annotations.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose [detection.detect] table sets any of these options.")
@click.option("--proposal-threshold", type=float, help="Keep windows the proposal network scores at least this.")
@click.option("--nms-threshold", type=float, help="Per-class NMS tIoU (S-CNN: 0.1 below the evaluation tIoU).")
@click.option("--batch-size", type=int)
@click.option("--device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def detect_command(model_dir: Path, store: Path, out: Path, annotations_path: Path | None, subset: str,
                   config_path: Path | None, no_progress: bool, **options) -> None:
    """Detect actions with a trained detector: windows, proposal filter, localization scores, per-class NMS."""
    from pipelines.detection.stages import detect_stage

    detect_stage(model_dir, store, out, annotations_path, subset, config_path, options, log=click.echo,
                 progress=not no_progress)


def detection_demo(out: Path, seed: int, config_path: Path | None) -> None:
    """``demo --task detection``."""
    from pipelines.detection.demo import run_detection_demo

    run_detection_demo(out, seed=seed, config_path=config_path, log=click.echo)


def synth_untrimmed(out_dir: Path, options: dict) -> None:
    """``synth --untrimmed``: the untrimmed generator with the options the user gave."""
    from pipelines.detection.synth import UntrimmedConfig, generate_untrimmed

    try:
        config = UntrimmedConfig(**options)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc).split("__init__() ")[-1]) from None
    started = time.perf_counter()
    info = generate_untrimmed(out_dir, config)
    click.echo(f"wrote {info['videos']} untrimmed videos with {info['instances']} annotated instances of "
               f"{len(info['classes'])} classes to {out_dir / 'videos'}, annotations to {out_dir / 'annotations'} "
               f"and {out_dir / 'annotations.json'} in {time.perf_counter() - started:.1f} s")


commands: list[click.Command] = [eval_detection, train_detector_command, detect_command]

