"""flowcmds commands."""
import click

commands: list[click.Command] = []
