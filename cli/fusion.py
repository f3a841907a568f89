"""fusion commands: ``fuse`` combines saved score files into the fused report."""
from __future__ import annotations

from pathlib import Path

import click

from cli.options import WRITABLE_FOLDER, StreamWeights


@click.command("fuse")
@click.argument("scores", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=WRITABLE_FOLDER,
              help="Folder for report.json, report.md and the per-split confusion / per-class CSVs.")
@click.option("--weights", type=StreamWeights(), metavar="STREAM=W,...",
              help="Fixed weights per stream instead of the equal average, e.g. mars=1,rgb=1,flow=1.5.")
@click.option("--learn-weights", is_flag=True,
              help="Fit weights per split and combination on val scores (train if no val); never on test.")
@click.option("--softmax", is_flag=True, help="Average softmax probabilities instead of raw logits.")
@click.option("--dataset", default=None, metavar="NAME", help="Dataset name written into the report.")
def fuse_command(scores: tuple[Path, ...], out_dir: Path, weights: dict[str, float] | None, learn_weights: bool,
                 softmax: bool, dataset: str | None) -> None:
    """Late fusion of score files (from `evaluate`): every combination of streams, per split and mean.

    SCORES are .npz score files or folders of them. Test scores are reported; val/train scores are read only
    to learn weights. Default: the equal average of raw logits, as MARS's two-stream test.
    """
    from pipelines.stages.fuse import FuseConfig, fuse
    from pipelines.report.tables import format_top1_table

    config = FuseConfig(weights=weights, learn_weights=learn_weights, softmax=softmax, dataset=dataset)
    report = fuse(scores, out_dir, config)
    click.echo(format_top1_table(report))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"report: {out_dir / 'report.md'} (and report.json, per-split confusion and per-class CSVs)")


commands: list[click.Command] = [fuse_command]
