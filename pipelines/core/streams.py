"""Fusion names: stream names (``pipelines.core.stream_specs.StreamName``) joined in a canonical order."""
from __future__ import annotations

from typing import Iterable

# Order in which streams appear inside a fusion name: "sta-mars+rgb+flow".
FUSION_ORDER = ("sta-mars", "mars", "sta-rgb", "rgb", "sta-flow", "flow")


def fusion_name(streams: Iterable[str]) -> str:
    """Join stream names with ``+`` in the canonical order; unknown names go last, alphabetically."""
    streams = list(streams)
    rank = {name: i for i, name in enumerate(FUSION_ORDER)}
    return "+".join(sorted(streams, key=lambda s: (rank.get(s, len(rank)), s)))
