"""Video in, store out: decoding, TV-L1 optical flow and the per-video HDF5 flow store.

This package never imports torch at import time, so extraction workers start fast; only ``flow.tvl1_torch`` (the
``--backend torch`` TV-L1) does, and it is imported when that backend is chosen. ``FlowStore`` and the jobs are imported on first
use, so ``from flow.errors import InputError`` stays cheap for code that needs only the error type.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from flow.errors import InputError, StoreLockedError, VideoError

_LAZY = {
    "FlowStore": "flow.store",
    "ExtractConfig": "flow.extract",
    "ExtractSummary": "flow.extract",
    "extract_flow": "flow.extract",
    "merge_stores": "flow.merge",
    "verify_store": "flow.verify",
}

__all__ = ["InputError", "StoreLockedError", "VideoError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flow' has no attribute {name!r}")
