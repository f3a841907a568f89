"""One writer per output folder: a second training or run on the same folder is refused, not interleaved."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from flow.errors import StoreLockedError
from flow.store import StoreLock


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (fcntl, released by the kernel if the holder dies) for the duration of a stage."""
    try:
        lock = StoreLock(folder).__enter__()
    except StoreLockedError:
        raise StoreLockedError(folder, "another mars-sta process is writing to this folder; wait for it to "
                                       "finish or use another --out") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
