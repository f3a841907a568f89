"""Detection commands: ``eval-detection`` scores an ActivityNet results file against THUMOS'14 or ActivityNet ground truth."""
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


commands: list[click.Command] = [eval_detection]

