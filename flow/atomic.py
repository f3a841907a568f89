"""Write a file so that readers see the old content or the new, never half: temp name, fsync, rename."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from flow.errors import write_error


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a handle on a temporary file beside ``path``; on success it is fsynced and renamed onto ``path``,
    on any error (a kill, a full disk) it is removed and ``path`` keeps what it had. A failed write is an OSError
    naming ``path`` (the raw one names no file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual permissions
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise write_error(path, exc) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what writers killed mid-write left in ``folder`` (a checkpoint's can be as large as the checkpoint).

    Only call while holding the folder's lock: a running writer's temporary file would go too.
    """
    stale = [path for path in Path(folder).glob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
