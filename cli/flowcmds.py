"""Flow store commands: ``extract-flow``, ``merge-stores``, ``verify-store``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import COUNT, DEVICE_NAME, JPEG_QUALITY, POSITIVE_FLOAT, POSITIVE_INT, SHARD, WRITABLE_FOLDER

# Kept literal so that ``--help`` does not import OpenCV; a test checks them against flow.tvl1 and flow.quantize.
PRESET_NAMES = ("default", "mid", "cheap")
QUANTIZATION_NAMES = ("round", "truncate")
BACKEND_NAMES = ("opencv", "torch")

# Exit status of a run that finished but could not extract some videos (bad input exits with 2).
EXIT_SOME_FAILED = 1


@click.command("extract-flow")
@click.argument("videos", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=WRITABLE_FOLDER, help="Store folder (created or resumed).")
@click.option("--workers", type=COUNT, help="Worker processes, one OpenCV thread each.  "
                                            "[default: all CPUs; 1 with --backend torch]")
@click.option("--short-side", type=COUNT, help="Resize to this short side; never upscale; 0 = native.  [default: 256]")
@click.option("--fps", type=POSITIVE_FLOAT, help="Resample to this frame rate (MARS: 25).  [default: native]")
@click.option("--bound", type=POSITIVE_FLOAT, help="Clip flow to ±bound pixels before uint8 coding.  [default: 20]")
@click.option("--quantization", type=click.Choice(QUANTIZATION_NAMES),
              help="round (TSN, denseflow) or truncate (MARS).  [default: round]")
@click.option("--preset", type=click.Choice(PRESET_NAMES),
              help="TV-L1 parameters: OpenCV's defaults, or cheaper ones for small frames.  [default: default]")
@click.option("--backend", type=click.Choice(BACKEND_NAMES),
              help="TV-L1 implementation: OpenCV's (CPU), or the same algorithm in PyTorch, batched.  "
                   "[default: opencv]")
@click.option("--device", type=DEVICE_NAME, metavar="auto|cpu|cuda[:N]",
              help="Where --backend torch runs; auto = CUDA when torch sees a GPU. OpenCV's backend runs on the CPU "
                   "and refuses cuda.  [default: auto]")
@click.option("--batch-pairs", type=POSITIVE_INT,
              help="Frame pairs per torch call (the flow does not change).  [default: 16]")
@click.option("--jpeg-quality", type=JPEG_QUALITY, help="JPEG quality of the stored RGB frames.  [default: 95]")
@click.option("--shard", type=SHARD, help="I/N: extract every N-th video from the I-th (0-based).  "
                                          "[default: from RANK/WORLD_SIZE or SLURM_ARRAY_TASK_*, else all]")
@click.option("--allow-failures", is_flag=True, default=None,
              help="Exit with 0 even if some videos could not be extracted.")
@click.option("--verify-sources", is_flag=True, default=None,
              help="Also compare finished videos with their sources by content (SHA-256), not by size and time "
                   "only; changed ones are extracted again.")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML file whose [extract] table sets any of these options (options given here win).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def extract_flow_command(videos: Path, out: Path, config_path: Path | None, no_progress: bool, **options) -> None:
    """Extract TV-L1 flow and RGB frames of VIDEOS into the flow store OUT.

    VIDEOS is a folder searched recursively for videos (<class>/<video>.avi, ...) or a text file listing video
    paths. Rerunning the same command resumes: finished videos are skipped, interrupted ones redone, and videos
    whose source changed size or modification time since (content too with --verify-sources) are redone. Videos that
    cannot be read are listed in OUT/failures.json; the exit status is then 1 unless --allow-failures.
    """
    from flow.extract import ExtractConfig, extract_flow, format_summary
    from pipelines.core.config import load_config

    config = load_config(ExtractConfig, config_path, options, table="extract")
    summary = extract_flow(config, videos, out, progress=not no_progress)
    click.echo(format_summary(summary))
    if summary.failures and not config.allow_failures:
        sys.exit(EXIT_SOME_FAILED)


@click.command("merge-stores")
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=WRITABLE_FOLDER, help="Merged store (new or compatible).")
def merge_stores_command(stores: tuple[Path, ...], out: Path) -> None:
    """Join the shard stores STORES into OUT (hard links where possible, else copies).

    All stores must have the same preprocessing, and no video may be in two of them. Feature stores (the shards of
    features --shard) join when computed with the same checkpoint and settings.
    """
    from flow.merge import merge_stores
    from pipelines.inference.features import is_feature_store, merge_features

    if is_feature_store(stores[0]):
        merge_features(list(stores), out, log=click.echo)
        return
    summary = merge_stores(list(stores), out)
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{summary.store}: {summary.linked} videos linked, {summary.copied} copied, "
               f"{summary.already_present} already there; {summary.failures} failures listed")


@click.command("verify-store")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True, help="Check structure only; do not read every frame and flow chunk.")
def verify_store_command(store: Path, quick: bool) -> None:
    """Check every video file of STORE: opens, dtypes, shapes, frame/flow counts, data, no leftovers (a feature
    store: each map readable, finite and of the store's key).

    Exits with 1 when anything is wrong, listing each problem.
    """
    from flow.verify import verify_store
    from pipelines.inference.features import FeatureStore, is_feature_store

    if is_feature_store(store):
        problems = FeatureStore(store).verify()
        for problem in problems:
            click.echo(f"problem: {problem}")
        click.echo(f"{store}: {len(FeatureStore(store).video_ids())} videos of features; "
                   + ("OK" if not problems else f"{len(problems)} problem(s)"))
        if problems:
            sys.exit(EXIT_SOME_FAILED)
        return
    report = verify_store(store, read_data=not quick)
    if report.tvl1:
        click.echo(f"TV-L1: {report.tvl1}")
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    state = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    click.echo(f"{report.store}: {report.videos} videos, {report.frames} frames, {report.failures} listed as "
               f"failed; {state}")
    if not report.ok:
        sys.exit(EXIT_SOME_FAILED)


commands: list[click.Command] = [extract_flow_command, merge_stores_command, verify_store_command]
