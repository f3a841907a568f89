"""Errors caused by a user's input: one line that names the file and the problem."""
from __future__ import annotations

import os


class InputError(Exception):
    """A file or folder given by the user cannot be used; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class StoreLockedError(InputError):
    """Another process is writing to the same store or run folder."""


class VideoError(InputError):
    """One video cannot be extracted (unreadable, empty, too short); the extraction records it and goes on."""
