"""Bring your own data and use what you trained: ``import-frames``, ``predict``, ``export``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.options import COUNT, POSITIVE_FLOAT, POSITIVE_INT, WRITABLE_FILE, WRITABLE_FOLDER

# Kept literal so that ``--help`` does not import OpenCV or torch; tests compare them with the modules' own lists.
LAYOUT_NAMES = ("auto", "mars", "mmaction2", "3d-resnets")
QUANTIZATION_NAMES = ("round", "truncate")
EXPORT_FORMATS = ("mars", "torch-export")

EXIT_SOME_FAILED = 1  # the run finished, but some videos could not be imported or predicted


@click.command("import-frames")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=WRITABLE_FOLDER, help="Store folder (created or resumed).")
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), default="auto", show_default=True,
              help="File naming of the frame folders; auto detects it and says which it found.")
@click.option("--bound", type=POSITIVE_FLOAT, default=20.0, show_default=True,
              help="The ±bound in pixels that the source's flow codes span.")
@click.option("--quantization", type=click.Choice(QUANTIZATION_NAMES),
              help="How the source's flow was coded.  [default: truncate for mars, round for mmaction2]")
@click.option("--workers", type=COUNT, default=0, help="Worker processes.  [default: all CPUs]")
@click.option("--allow-failures", is_flag=True, help="Exit with 0 even if some videos could not be imported.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_frames_command(root: Path, out: Path, no_progress: bool, **options) -> None:
    """Import folders of extracted JPEG frames (and flow) below ROOT into the flow store OUT.

    \b
    Layouts (one folder per video, <class>/<video>/):
      mars        %05d.jpg, TVL1jpg_x_%05d.jpg, TVL1jpg_y_%05d.jpg   (flow truncated)
      mmaction2   img_%05d.jpg, flow_x_%05d.jpg, flow_y_%05d.jpg     (denseflow; flow rounded)
      3d-resnets  image_%05d.jpg                                     (RGB only)

    Rerunning the same command resumes. Folders with gaps in their numbering, flow x/y counts that differ or files
    that are not whole JPEGs are listed in OUT/failures.json; the exit status is then 1 unless --allow-failures.
    """
    from flow.importer import ImportConfig, format_summary, import_frames

    config = ImportConfig(**options)
    summary = import_frames(config, root, out, progress=not no_progress, log=lambda line: click.echo(line, err=True))
    click.echo(format_summary(summary))
    if summary.failures and not config.allow_failures:
        sys.exit(EXIT_SOME_FAILED)


@click.command("predict")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="VIDEO_OR_FOLDER...")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Checkpoint written by train (repeat to fuse several by the mean of their raw logits).")
@click.option("--top-k", type=POSITIVE_INT, default=5, show_default=True, help="Classes to print per video.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per video instead of a table.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=POSITIVE_INT, default=32, show_default=True, help="Clips per forward pass.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict_command(videos: tuple[Path, ...], checkpoints: tuple[Path, ...], as_json: bool, no_progress: bool,
                    **options) -> None:
    """Print the top classes of each video (folders are searched recursively for videos).

    Videos are prepared as each checkpoint's training store was; only a Flow checkpoint computes optical flow.
    A video that cannot be read is reported on one line and skipped; the exit status is then 1.
    """
    from tqdm import tqdm

    from pipelines.stages.predict import PredictConfig, predict

    def show(prediction) -> None:
        if as_json:
            tqdm.write(prediction.to_json(), file=sys.stdout)
            return
        lines = [f"{prediction.video}  ({prediction.clips} clip{'s' if prediction.clips != 1 else ''})"]
        lines += [f"  {rank}. {name:<24} {probability:7.2%}   logit {logit:8.3f}" for rank, (name, probability, logit)
                  in enumerate(zip(prediction.classes, prediction.probabilities, prediction.logits), 1)]
        tqdm.write("\n".join(lines), file=sys.stdout)

    def fail(video: str, reason: str) -> None:
        tqdm.write(f"failed: {video}: {reason}", file=sys.stderr)

    summary = predict(PredictConfig(**options), videos, checkpoints, progress=not no_progress, on_prediction=show,
                      on_failure=fail)
    if not as_json:
        click.echo(f"{summary.model}: {len(summary.predictions)} predicted, {len(summary.failures)} failed "
                   f"in {summary.seconds:.1f} s")
    if summary.failures:
        sys.exit(EXIT_SOME_FAILED)


@click.command("export")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint written by train.")
@click.option("--format", "fmt", required=True, type=click.Choice(EXPORT_FORMATS),
              help="mars: MARS / 3D-ResNets training-script file; torch-export: a torch.export program (.pt2).")
@click.option("--out", required=True, type=WRITABLE_FILE, help="File to write.")
def export_command(checkpoint: Path, fmt: str, out: Path) -> None:
    """Write a checkpoint for use outside mars-sta: MARS's checkpoint format, or a program only torch can run."""
    from pipelines.stages.export import export_checkpoint

    facts = export_checkpoint(checkpoint, fmt, out)
    click.echo(json.dumps(facts))


commands: list[click.Command] = [import_frames_command, predict_command, export_command]
