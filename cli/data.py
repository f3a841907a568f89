"""Data commands: ``synth`` writes the synthetic motion dataset."""
from __future__ import annotations

import time
from pathlib import Path

import click

from cli.options import WRITABLE_FOLDER

_DEFAULTS = {  # mirrors pipelines.data.synth.SynthConfig, kept here so that --help needs no numpy/cv2 import
    "classes": 10,
    "videos_per_class": 80,
    "frames": 17,
    "size": 32,
    "seed": 0,
    "train_fraction": 0.625,
    "cue_probability": 0.6,
    "bg_saturation": 0.7,
    "pan": 0.6,
    "motion_window": 0,
    "distractor": 0.0,
}


@click.command("synth")
@click.argument("out_dir", type=WRITABLE_FOLDER)
@click.option("--classes", type=click.IntRange(2, 10), default=_DEFAULTS["classes"], show_default=True,
              help="Number of classes (even): the first CLASSES/2 direction pairs.")
@click.option("--videos-per-class", type=click.IntRange(min=2), default=_DEFAULTS["videos_per_class"],
              show_default=True)
@click.option("--frames", type=click.IntRange(min=2), default=_DEFAULTS["frames"], show_default=True,
              help="Frames per video (17 give 16 flow pairs).")
@click.option("--size", type=click.IntRange(min=8), default=_DEFAULTS["size"], show_default=True,
              help="Frame side in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=_DEFAULTS["seed"], show_default=True)
@click.option("--train-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=_DEFAULTS["train_fraction"], show_default=True, help="Share of each class in every trainlist.")
@click.option("--cue-probability", type=click.FloatRange(0, 1), default=_DEFAULTS["cue_probability"],
              show_default=True, help="Chance that the object wears its pair's colour (the cue only RGB sees).")
@click.option("--bg-saturation", type=click.FloatRange(0, 1), default=_DEFAULTS["bg_saturation"],
              show_default=True, help="Colour left in the background clutter (0 grey, 1 full).")
@click.option("--pan", type=click.FloatRange(min=0), default=_DEFAULTS["pan"], show_default=True,
              help="Largest camera pan, px per frame.")
@click.option("--motion-window", type=click.IntRange(min=0), default=_DEFAULTS["motion_window"], show_default=True,
              help="Frame steps during which the class motion runs, at a random time (0: the whole clip).")
@click.option("--distractor", type=click.FloatRange(min=0), default=_DEFAULTS["distractor"], show_default=True,
              help="Random-walk motion of the object outside the motion window, px per frame (not a class).")
@click.option("--untrimmed", is_flag=True,
              help="Untrimmed videos for detection instead: videos/*.avi, annotations/ (THUMOS'14) and "
                   "annotations.json (ActivityNet); takes --classes, --size, --seed, --pan, --bg-saturation, "
                   "--cue-probability.")
@click.pass_context
def synth(ctx: click.Context, out_dir: Path, untrimmed: bool, **options) -> None:
    """Write a synthetic motion dataset to OUT_DIR: videos/<class>/*.avi, splits/ (UCF-101 style) and synth.json."""
    from pipelines.data.synth import SynthConfig, generate

    if untrimmed:
        given = {k: v for k, v in options.items()
                 if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
        from cli.detection import synth_untrimmed
        synth_untrimmed(out_dir, given)
        return

    try:
        config = SynthConfig(**options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    started = time.perf_counter()
    info = generate(out_dir, config)
    sizes = info["splits"]["1"]
    click.echo(
        f"wrote {info['videos']} videos of {len(info['classes'])} classes to {out_dir / 'videos'} "
        f"and 3 splits ({sizes['train']} train / {sizes['test']} test) to {out_dir / 'splits'} "
        f"in {time.perf_counter() - started:.1f} s"
    )


commands: list[click.Command] = [synth]
