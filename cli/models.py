"""models commands."""
import click

commands: list[click.Command] = []
