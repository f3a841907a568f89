"""stages commands."""
import click

commands: list[click.Command] = []
