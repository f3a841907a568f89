"""Report commands: ``report`` (one HTML page per pipeline run) and ``attention`` (STA weights of one video)."""
from __future__ import annotations

from pathlib import Path

import click

from cli.options import WRITABLE_FILE, WRITABLE_FOLDER, require_writable

ANY_PATH = click.Path(path_type=Path)


@click.command("report")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=WRITABLE_FILE,
              help="HTML file to write (default RUN_DIR/report.html); its PNGs go to <name>_files/ beside it.")
@click.option("--videos", default=3, show_default=True, type=click.IntRange(min=0),
              help="Test videos whose STA weights are shown.")
@click.option("--device", default="auto", show_default=True, help="Where the attention pass runs: auto, cpu, cuda.")
def report(run_dir: Path, out: Path | None, videos: int, device: str) -> None:
    """One self-contained HTML page for a finished `run`: results, curves, attention, flow, profile, manifest,
    and the detection section when the run (or a detection demo) detected actions.

    Needs matplotlib (pip install 'mars-sta[report]').
    """
    from pipelines.report.figures import require_matplotlib

    require_matplotlib()
    if out is None:
        require_writable(run_dir, False, "RUN_DIR")
    from pipelines.report.run_report import write_run_report

    path = write_run_report(run_dir, out, videos=videos, device=device, log=click.echo)
    click.echo(f"report: {path}")


def _parse_window(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """``4:10`` -> (4, 10), frames START < STOP, both >= 0."""
    if value is None:
        return None
    start, colon, stop = value.partition(":")
    if not (colon and start.strip().isdigit() and stop.strip().isdigit() and int(start) < int(stop)):
        raise click.BadParameter(f"{value!r} is not START:STOP with 0 <= START < STOP (frames, e.g. 4:10)")
    return int(start), int(stop)


@click.command("attention")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A checkpoint trained with --sta (e.g. RUN/split1/train-sta-mars/best.pth).")
@click.option("--store", required=True, type=ANY_PATH, help="Flow store holding the video.")
@click.option("--video", "video_id", required=True, help="Video id, e.g. Biking/v_Biking_g01_c01.")
@click.option("--out", required=True, type=WRITABLE_FOLDER,
              help="Folder for the PNGs and attention.json.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--window", callback=_parse_window, default=None, metavar="START:STOP",
              help="Flow-grid frames [START, STOP) of the action (a synthetic video's motion window, say): report "
                   "how far each channel's gate selects them, not only the channel mean.")
def attention(checkpoint: Path, store: Path, video_id: str, out: Path, device: str,
              window: tuple[int, int] | None) -> None:
    """STA weights of one video under the test protocol: per-frame curves, channel × frame maps, frames overlaid.

    Needs matplotlib (pip install 'mars-sta[report]').
    """
    from pipelines.report.figures import require_matplotlib

    require_matplotlib()
    from pipelines.inference.attention import collect_attention
    from pipelines.report.attention_figures import write_attention

    result = collect_attention(checkpoint, store, video_id, device=device)
    paths = write_attention(result, out, window=window)
    click.echo(result.describe())
    if window is not None:
        from pipelines.inference.attention import describe_selection, window_selection

        click.echo(describe_selection(window_selection(result, *window), *window))
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


commands: list[click.Command] = [report, attention]
