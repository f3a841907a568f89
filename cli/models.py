"""Model commands: ``profile`` (parameters and compute with and without STA) and ``models`` (the registry)."""
from __future__ import annotations

import json

import click

from cli.options import ARCH, STA_SPEC


@click.command("profile")
@click.option("--arch", default="resnext101", show_default=True, type=ARCH,
              help="Registered architecture (see `models`).")
@click.option("--sta", default="default", show_default=True, type=STA_SPEC,
              help="Where attention goes, e.g. layer4, 'layer3,layer4', layer4:ta, layer4:se; 'none': base only.")
@click.option("--frames", default=16, show_default=True, type=click.IntRange(min=1), help="Clip length.")
@click.option("--size", default=112, show_default=True, type=click.IntRange(min=1), help="Clip height and width.")
@click.option("--classes", default=51, show_default=True, type=click.IntRange(min=1), help="Number of classes.")
@click.option("--in-channels", default=3, show_default=True, type=click.IntRange(min=1),
              help="Input channels: 3 for RGB, 2 for flow.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def profile(arch: str, sta: str, frames: int, size: int, classes: int, in_channels: int, as_json: bool) -> None:
    """Parameters and multiply-accumulates of a network with and without attention (the paper's Tables III, IV).

    GMACs are multiply-accumulates, the paper's "GFLOPs"; GFLOPs (2/MAC) is torch's FlopCounterMode convention.
    """
    from mars_sta.profile import profile_model

    try:
        result = profile_model(arch, sta=sta, frames=frames, size=size, num_classes=classes, in_channels=in_channels)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())


@click.command("models")
def models() -> None:
    """List the registered architectures with their default shortcut and STA stage."""
    from mars_sta import list_models, model_entry

    for name in list_models():
        entry = model_entry(name)
        shortcut = entry.default_shortcut or "-"
        click.echo(f"{name:<13} shortcut {shortcut}  stages {','.join(entry.stages):<30} "
                   f"default sta {entry.default_sta_stage:<7} {entry.description}")


commands: list[click.Command] = [profile, models]
