"""Video in, store out: decoding, TV-L1 optical flow and the per-video HDF5 flow store.

This package never imports torch, so extraction workers start fast.
"""
from flow.errors import InputError, StoreLockedError

__all__ = ["InputError", "StoreLockedError"]
