"""Progress bars that suit where stderr goes: a live bar on a terminal, plain timed lines in a log.

A tqdm bar redraws itself with carriage returns many times a second; written to a file (``> log``, Slurm, CI) that
is hundreds of ``\\r`` updates on one endless line. Off a terminal the bar instead prints one whole line every
``LOG_INTERVAL`` seconds, plus its first and last state.
"""
from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log


class _Lines:
    """A stream for tqdm that turns each redraw (``\\r<state>``) into one line and drops the erasing ones."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def progress_bar(iterable: Any = None, log_delay: float = 0.0, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr; plain lines every ``LOG_INTERVAL`` s when stderr is not a terminal.

    ``log_delay``: in a log, print nothing until the bar has run this long. For a bar per epoch, whose command
    writes a line per epoch already: a short epoch adds nothing to the log, and an error it meets stays the only
    line on stderr.
    """
    stream = kwargs.pop("file", None) or sys.stderr
    if not _is_terminal(stream):
        kwargs.update(file=_Lines(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, dynamic_ncols=False,
                      delay=log_delay)
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)
