"""The flow stores a ``run`` made itself, recorded in its run folder: the only stores it ever deletes.

A run deletes a store when ``[synth]`` or ``[detection.synth]`` writes its videos anew, since the store's flow is of
the old ones. So that it never deletes a store it did not make (a user's, one another run or ``extract-flow``
made), it records the SHA-256 of the manifest of each store it creates in ``OUT/stages/stores.json`` the moment
the manifest is written, before any video is extracted; a store whose manifest is not the recorded one is refused
in one line before the run's first stage.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from flow.atomic import write_json_atomic
from flow.errors import InputError
from flow.extract import ExtractConfig, ExtractSummary, extract_flow, open_store
from flow.store import LOCK, MANIFEST
from pipelines.core.manifest import file_sha256

RECORD = Path("stages") / "stores.json"


def extract_recorded(config: ExtractConfig, videos: Path, store: Path, run_folder: Path,
                     progress: bool = True) -> ExtractSummary:
    """``extract_flow``, recording the store in ``run_folder`` when this call creates it."""
    if open_store(config, videos, store):
        made = _made(run_folder)
        made[str(store.resolve())] = file_sha256(store / MANIFEST)
        write_json_atomic(run_folder / RECORD, made)
    return extract_flow(config, videos, store, progress=progress)


def check_deletable(store: Path, run_folder: Path, regenerated_by: str) -> None:
    """Refuse, before any work, a store that holds files and that this run did not make."""
    if _holds_files(store) and not _made_here(store, run_folder):
        raise InputError(store, f"{regenerated_by} writes new videos, so this store's flow would be stale, but "
                                f"this run did not make the store (not in {run_folder / RECORD}) and will not "
                                "delete it: name a new store, or delete it yourself")


def delete_made_store(store: Path, run_folder: Path, regenerated_by: str, log: Callable[[str], None]) -> None:
    """Delete a store this run made (and refuse any other), as its videos were just generated anew."""
    check_deletable(store, run_folder, regenerated_by)
    if not _holds_files(store):
        return
    shutil.rmtree(store)
    made = _made(run_folder)
    made.pop(str(store.resolve()), None)
    write_json_atomic(run_folder / RECORD, made)
    log(f"[del]  flow store {store}, made by this run: {regenerated_by} wrote new videos")


def _made_here(store: Path, run_folder: Path) -> bool:
    manifest = store / MANIFEST
    return manifest.is_file() and _made(run_folder).get(str(store.resolve())) == file_sha256(manifest)


def _holds_files(store: Path) -> bool:
    """Anything but the lock file an extraction leaves even before it writes the manifest."""
    return store.is_dir() and any(path.name != LOCK for path in store.iterdir())


def _made(run_folder: Path) -> dict[str, str]:
    try:
        made = json.loads((run_folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return made if isinstance(made, dict) else {}
