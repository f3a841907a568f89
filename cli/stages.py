"""Stage commands: train, evaluate, run, demo. Each builds a config (TOML file, then options) and calls one function."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import (ARCH, COUNT, FRACTION_BELOW_ONE, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT,
                         PROTOCOL, STA_SPEC, WRITABLE_FILE, WRITABLE_FOLDER, check_model_choice,
                         require_writable)
from pipelines.core.stream_specs import STREAM_SPECS

EXISTING_FILE = click.Path(exists=False, dir_okay=False, path_type=Path)
ANY_PATH = click.Path(path_type=Path)


@click.command()
@click.option("--stream", type=click.Choice(list(STREAM_SPECS)), help="Stream to train (default rgb).")
@click.option("--sta", "sta", default=None, type=STA_SPEC,
              help="Insert STA, e.g. 'layer4', 'layer3,layer4' or 'layer4:ta'.")
@click.option("--store", required=True, type=ANY_PATH, help="Flow store written by extract-flow.")
@click.option("--split", type=POSITIVE_INT, help="Split number (1-3).")
@click.option("--splits", type=ANY_PATH, help="Split files (folder) or CSV; default: splits/ beside the videos.")
@click.option("--out", required=True, type=WRITABLE_FOLDER,
              help="Output folder: last.pth, best.pth, metrics.jsonl (and tensorboard/ when installed).")
@click.option("--config", "config_path", type=EXISTING_FILE, help="TOML file with [train] options.")
@click.option("--pretrained", type=EXISTING_FILE, help="Fine-tune from this checkpoint (MARS/3D-ResNets or ours).")
@click.option("--teacher", type=EXISTING_FILE, help="Frozen flow-stream checkpoint (required by --stream mars).")
@click.option("--arch", type=ARCH, help="Registry name (see `mars-sta models`), default resnext101.")
@click.option("--epochs", type=POSITIVE_INT)
@click.option("--batch-size", type=POSITIVE_INT, help="Default: 32 for flow/rgb, 16 for mars (as MARS).")
@click.option("--lr", type=POSITIVE_FLOAT, help="Default: 0.1 from scratch, 0.001 when fine-tuning (as MARS).")
@click.option("--frames", type=POSITIVE_INT, help="Clip length (sample_duration), default 16.")
@click.option("--size", type=POSITIVE_INT, help="Crop size (sample_size), default 112.")
@click.option("--alpha", type=NON_NEGATIVE_FLOAT, help="MARS feature-matching weight, default 50.")
@click.option("--attention-lr-mult", type=POSITIVE_FLOAT, help="Attention parameters train at lr × this "
                                                                "(default 10, as the STA-MARS authors).")
@click.option("--finetune-from", help="With --pretrained: first stage to train ('all', or default: the last "
                                      "stage, layer4 for the ResNets). Attention modules always train.")
@click.option("--val-fraction", type=FRACTION_BELOW_ONE,
              help="Share of each class held out for validation (default 0.1; 0 selects on the test split, as MARS).")
@click.option("--workers", type=COUNT,
              help="DataLoader workers per process; more than the CPUs is allowed, with a warning.  "
                   "[default: up to 4, one fewer than the CPUs this process may use]")
@click.option("--cache-mb", type=COUNT, help="MB of decoded frames each process keeps (LRU; helps with --workers 0 "
                                             "and a dataset that fits).  [default: 0, none]")
@click.option("--device", help="auto (default), cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "fp16", "bf16"]), help="Mixed precision (opt-in).")
@click.option("--seed", type=COUNT)
@click.option("--accumulate", type=POSITIVE_INT, help="Micro-batches per optimizer step (gradient accumulation).")
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across processes (CUDA).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from OUT/last.pth when it exists.")
@click.option("--nproc", type=POSITIVE_INT, default=1, show_default=True,
              help="Processes on this machine: relaunches itself under torchrun (DistributedDataParallel).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(config_path, store, out, splits, pretrained, teacher, resume, nproc, no_progress, **options) -> None:
    """Train the Flow, RGB or MARS stream (STA-MARS with --sta); checkpoints every epoch, resumes automatically.

    \b
    Several GPUs or machines: MARS_STA_TORCHRUN_ARGS='["train", "--store", ...]' torchrun
      --nproc_per_node N [--nnodes M ...] -m cli  (the command line as a JSON list: torchrun's parser
      would read options such as --sta or --mode as abbreviations of its own)
    One machine, shorter:    mars-sta train --nproc N ...
    """
    if nproc > 1:
        from cli.launch import relaunch_under_torchrun

        relaunch_under_torchrun(nproc)
    from pipelines.stages.train import TrainPaths, load_train_config
    from pipelines.stages.train import train as run_training

    config, file_pretrained = load_train_config(config_path, options)
    check_model_choice(config.arch, config.sta, "--arch" if options["arch"] or not config_path else config_path,
                       "--sta" if options["sta"] or not config_path else config_path)
    summary = run_training(config, TrainPaths(store=store, out=out, splits=splits,
                                              pretrained=pretrained or file_pretrained,
                                              teacher=teacher), progress=click.echo, resume=resume,
                           bar=not no_progress)
    click.echo(f"best validation top-1 {summary['best_val_acc']:.1f}% -> {summary['best']}")


@click.command()
@click.option("--checkpoint", required=True, type=EXISTING_FILE, help="Checkpoint written by train.")
@click.option("--store", required=True, type=ANY_PATH)
@click.option("--split", type=POSITIVE_INT)
@click.option("--splits", type=ANY_PATH, help="Split files (folder) or CSV; default: splits/ beside the videos.")
@click.option("--out", required=True, type=WRITABLE_FILE, help="Score file to write (.npz).")
@click.option("--subset", type=click.Choice(["test", "val", "train"]), help="Videos to score (default test).")
@click.option("--protocol", type=PROTOCOL, help="'mars' (all non-overlapping clips, centre crop) or 'views:KxM'.")
@click.option("--batch-size", type=POSITIVE_INT, help="Clips per forward pass.")
@click.option("--features", is_flag=True, default=None, help="Also store pooled features.")
@click.option("--device")
@click.option("--amp", type=click.Choice(["off", "fp16", "bf16"]))
@click.option("--config", "config_path", type=EXISTING_FILE, help="TOML file with [evaluate] options.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def evaluate(checkpoint, store, splits, out, config_path, as_json, **options) -> None:
    """Score every video of a split with one checkpoint; prints top-1, top-5 and mean class accuracy."""
    from pipelines.core.config import load_config
    from pipelines.stages.evaluate import EvaluateConfig
    from pipelines.stages.evaluate import evaluate as run_evaluation

    config = load_config(EvaluateConfig, config_path, options, table="evaluate")
    summary = run_evaluation(config, checkpoint, store, out, splits, log=None if as_json else click.echo)
    if as_json and summary:  # under torchrun only rank 0 has the summary
        click.echo(json.dumps({k: summary[k] for k in ("stream", "split", "subset", "protocol", "top1", "top5",
                                                       "mean_class", "videos", "scores")}))


@click.command()
@click.argument("config_path", metavar="CONFIG.toml", type=EXISTING_FILE)
@click.option("--out", type=WRITABLE_FOLDER, help="Run folder (default: run/ beside the config).")
@click.option("--from", "from_stage", help="Rerun this stage and every later one.")
@click.option("--force", multiple=True, help="Rerun this stage even if unchanged (repeatable).")
@click.option("--split", "splits_to_run", type=POSITIVE_INT, multiple=True,
              help="Splits to run (repeatable; default [data]).")
def run(config_path, out, from_stage, force, splits_to_run) -> None:
    """Run every stage from a TOML config: extract, train flow/rgb/mars/sta-mars, evaluate, fuse, and with a
    [detection] table train-detector, detect and eval-detection.

    A rerun skips each stage whose inputs and config are unchanged; a killed run resumes where it stopped.
    Stages: synth, extract, train-flow, train-sta-flow, train-rgb, train-sta-rgb, train-mars, train-sta-mars,
    evaluate, fuse, detection-synth, detection-extract, train-detector, detect, eval-detection.
    """
    from pipelines.stages.run import load_plan
    from pipelines.stages.run import run as run_pipeline

    plan = load_plan(config_path, out, {"splits_to_run": list(splits_to_run) or None})
    require_writable(plan.out, False, "--out")
    result = run_pipeline(plan, from_stage, tuple(force), log=click.echo)
    click.echo(f"ran {len(result['ran'])} stage(s), skipped {len(result['skipped'])}; outputs in {result['out']}")


@click.command()
@click.option("--out", type=WRITABLE_FOLDER, default=Path("demo-out"), show_default=True, help="Where everything goes.")
@click.option("--seed", "seeds", type=COUNT, multiple=True, default=[0], show_default=True,
              help="Seed of the synthetic data and training. Detection: repeat it for Table VI as mean ± sd over "
                   "seeds (each seed in OUT/seed-S).")
@click.option("--config", "config_path", type=EXISTING_FILE, help="Another demo config (default configs/demo.toml).")
@click.option("--task", type=click.Choice(["recognition", "detection"]), default="recognition", show_default=True,
              help="detection: untrimmed videos, S-CNN, STA-S-CNN, R-C3D, STA-R-C3D (configs/detection-demo.toml).")
def demo(out, seeds, config_path, task) -> None:
    """The whole pipeline on the embedded synthetic dataset, ending with the fused top-1 table."""
    from pipelines.stages.demo import run_demo

    if len(set(seeds)) < len(seeds):
        raise click.BadParameter(f"{', '.join(map(str, seeds))}: give each seed once", param_hint="--seed")
    if task == "detection":
        from cli.detection import detection_demo
        return detection_demo(out, seeds, config_path)
    if len(seeds) > 1:
        raise click.BadParameter("the recognition demo takes one seed (benchmarks/demo_table.py runs several)",
                                 param_hint="--seed")
    run_demo(out, seed=seeds[0], config_path=config_path, log=click.echo)


commands: list[click.Command] = [train, evaluate, run, demo]
