"""Stream names (``rgb``, ``flow``, ``mars``, ``sta-`` in front when STA is inserted) and fusion names."""
from __future__ import annotations

from typing import Iterable

# Order in which streams appear inside a fusion name: "sta-mars+rgb+flow".
FUSION_ORDER = ("sta-mars", "mars", "sta-rgb", "rgb", "sta-flow", "flow")


def stream_name(stream: str, sta: str | None) -> str:
    """``mars`` with an STA spec is ``sta-mars``, the paper's STA-MARS."""
    return f"sta-{stream}" if sta else stream


def fusion_name(streams: Iterable[str]) -> str:
    """Join stream names with ``+`` in the canonical order; unknown names go last, alphabetically."""
    streams = list(streams)
    rank = {name: i for i, name in enumerate(FUSION_ORDER)}
    return "+".join(sorted(streams, key=lambda s: (rank.get(s, len(rank)), s)))
