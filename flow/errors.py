"""Errors caused by a user's input: one line that names the file and the problem."""
from __future__ import annotations

import errno
import os


class InputError(Exception):
    """A file or folder given by the user cannot be used; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else one_line(os.fspath(path))
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


# Characters that end a line for str.splitlines() and for terminals: written escaped, never raw.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``\\n``): a name or value from a user's file may hold any of them."""
    return text.translate(_LINE_BREAKS)


class StoreLockedError(InputError):
    """Another process is writing to the same store or run folder."""


class VideoError(InputError):
    """One video cannot be extracted (unreadable, empty, too short); the extraction records it and goes on."""


# Errors of a write that no retry of the same write can fix: a full disk or quota, a file over ``ulimit -f``.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_error(path: str | os.PathLike, exc: OSError) -> OSError:
    """A failed write as an OSError naming the file the user asked for, so the CLI prints one line.

    Libraries report such failures against a temporary name, over several lines (HDF5), or without any file name.
    """
    reason = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
    if exc.errno in NO_SPACE:
        reason += ": the file was not written; free some space or raise the file-size limit (ulimit -f), then rerun"
    return OSError(exc.errno, reason, os.fspath(path))
