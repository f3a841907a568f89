"""The one check before a trained network sees frames: the clips about to be fed are those it was trained on.

Every path that feeds a checkpoint's network (``evaluate``, ``predict``, ``attention``, ``features``, ``detect`` for
S-CNN and R-C3D, and a MARS teacher in ``train`` and ``train-detector``) describes what it is about to feed as an
``InputConfig`` and calls ``check_input`` with the one the checkpoint recorded, so a store of other TV-L1 settings,
or clips of another size or normalisation (S-CNN's two networks of different runs, a teacher trained on other
clips), is refused in one line naming what differs, rather than scored quietly worse.
"""
from __future__ import annotations

from pathlib import Path

from flow.errors import InputError
from flow.store import preprocessing_differences
from mars_sta.inputs import InputConfig

CLIP_FIELDS = ("stream", "frames", "size", "normalization")


def check_input(trained: InputConfig, feeding: InputConfig, checkpoint: str | Path,
                store: str | Path | None = None) -> None:
    """Refuse to feed ``feeding`` to a network trained on ``trained``.

    Args:
        trained: what the checkpoint recorded.
        feeding: what this path is about to feed: its clip settings and, in ``flow``, the store's preprocessing.
        checkpoint: named in the message when the clips differ.
        store: named in the message when the preprocessing differs.
    """
    clips = [f"{name} {getattr(trained, name)!r} (checkpoint) vs {getattr(feeding, name)!r} (here)"
             for name in CLIP_FIELDS if getattr(trained, name) != getattr(feeding, name)]
    if clips:
        raise InputError(checkpoint, f"was trained on other clips than these: {'; '.join(clips)}")
    if trained.flow is None or feeding.flow is None:
        return  # not recorded (a file from before, weights from elsewhere): nothing to compare
    changes = [change.replace("(store)", "(checkpoint)").replace("(now)", "(store)")
               for change in preprocessing_differences(trained.flow, feeding.flow)]
    if changes:
        raise InputError(store if store is not None else checkpoint,
                         f"was extracted with other preprocessing than the checkpoint was trained on: "
                         f"{'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}")
