"""Join shard stores into one: same preprocessing required, every video in exactly one shard.

Per-video files are hard-linked when the stores share a file system (instant, no extra space) and copied under a
temporary name otherwise. Nothing is written before every conflict has been ruled out and every input file has
been read through, as verify-store reads it (a damaged file would otherwise be linked in without a word).
"""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from flow import store as layout
from flow.errors import InputError
from flow.verify import verify_video


@dataclass
class MergeSummary:
    store: str
    linked: int
    copied: int
    already_present: int
    failures: int
    notes: list[str] = field(default_factory=list)


def merge_stores(sources: list[str | os.PathLike], out: str | os.PathLike) -> MergeSummary:
    """Put every video of ``sources`` into ``out`` (new, or a store with the same preprocessing)."""
    stores = [Path(s) for s in sources]
    out = Path(out)
    if not stores:
        raise InputError(None, "no stores to merge")
    manifests = [layout.read_manifest(s) for s in stores]
    if any(s.resolve() == out.resolve() for s in stores):
        raise InputError(out, "is also one of the stores to merge")
    reference = manifests[0]
    for path, manifest in zip(stores[1:], manifests[1:]):
        differences = layout.preprocessing_differences(manifest["preprocessing"], reference["preprocessing"])
        if differences:
            raise InputError(path, f"was extracted with other preprocessing than {stores[0]}: "
                                   + "; ".join(d.replace("(store)", "").replace("(now)", f"({stores[0]})")
                                               for d in differences))
    layout.refuse_foreign_folder(out)
    notes = [f"{path} was extracted from {m['source_root']}; the merged store records {reference['source_root']}"
             for path, m in zip(stores, manifests) if m["source_root"] != reference["source_root"]]

    with ExitStack() as locks:
        for path in stores:
            locks.enter_context(layout.StoreLock(path, shared=True))
        owners = _owners(stores)
        _refuse_damaged(owners, dict(zip(stores, manifests)))
        locks.enter_context(layout.StoreLock(out))  # creates OUT: only once the inputs are known to be sound
        _prepare_output(out, stores, reference)
        layout.remove_temporaries(out)
        present = set(layout.finished_ids(out))
        same = {vid for vid in owners if vid in present
                and os.path.samefile(layout.video_path(out, vid), layout.video_path(owners[vid], vid))}
        clashes = sorted((set(owners) & present) - same)
        if clashes:
            raise InputError(out, f"already holds {len(clashes)} of the videos to merge from other files "
                                  f"(e.g. {clashes[0]!r}); merge into a new folder")
        linked = copied = 0
        for video_id in sorted(set(owners) - same):
            if link_or_copy(layout.video_path(owners[video_id], video_id), layout.video_path(out, video_id)):
                linked += 1
            else:
                copied += 1
        failures = _merged_failures(stores, out)
    return MergeSummary(str(out), linked, copied, len(same), len(failures), notes)


def _owners(stores: list[Path]) -> dict[str, Path]:
    """Which store holds each video; two stores holding one video is a conflict."""
    owners: dict[str, Path] = {}
    for path in stores:
        for video_id in layout.finished_ids(path):
            if video_id in owners:
                raise InputError(path, f"holds {video_id!r}, which {owners[video_id]} holds too; "
                                       "shards of one extraction never overlap")
            owners[video_id] = path
    return owners


def _refuse_damaged(owners: dict[str, Path], manifests: dict[Path, dict]) -> None:
    """Read every input file as verify-store does; damaged ones stop the merge before anything is linked."""
    problems = []
    for video_id, store in sorted(owners.items()):
        file = layout.video_path(store, video_id)
        try:
            verify_video(file, manifests[store])
        except InputError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{file}: cannot be read ({exc})")
    if problems:
        raise InputError(None, f"{len(problems)} damaged video file(s), nothing merged (re-extract them, "
                               f"see verify-store): " + "; ".join(problems))


def _prepare_output(out: Path, stores: list[Path], reference: dict) -> None:
    if (out / layout.MANIFEST).exists():
        differences = layout.preprocessing_differences(layout.read_manifest(out)["preprocessing"],
                                                       reference["preprocessing"])
        if differences:
            raise InputError(out, "was extracted with other preprocessing: " + "; ".join(differences))
        return
    layout.write_json_atomic(out / layout.MANIFEST, {
        **reference,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "merged_from": [str(p.resolve()) for p in stores],
    })


def link_or_copy(source: Path, final: Path) -> bool:
    """Hard-link ``source`` to ``final`` (True), or copy it there through a temporary name (False)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, final)
        return True
    except OSError:
        temp = final.with_name(f"{final.name}{layout.TEMP_MARK}{os.getpid()}")
        try:
            shutil.copyfile(source, temp)
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        return False


def _merged_failures(stores: list[Path], out: Path) -> dict[str, dict[str, str]]:
    done = set(layout.finished_ids(out))
    failures = {}
    for path in [out, *stores]:
        failures.update(layout.read_failures(path))
    failures = {vid: failure for vid, failure in failures.items() if vid not in done}
    layout.write_failures(out, failures)
    return failures
