"""What each kind of stream is: the input its network takes, the clips it reads, its teacher and its defaults.

One table replaces the rules that were spelled out where they were needed (``in_channels == 2`` means flow, MARS
reads RGB and flow together, MARS trains with batches of 16). A stream name with ``sta-`` in front (``sta-mars``)
is the same kind of stream with STA inserted.
"""
from __future__ import annotations

from dataclasses import dataclass

from flow.errors import InputError

STA_PREFIX = "sta-"


@dataclass(frozen=True)
class StreamSpec:
    """One kind of stream.

    Args:
        name: the stream without ``sta-`` (``flow``, ``rgb``, ``mars``).
        in_channels: channels of the network's input (2 for flow x/y, 3 for RGB).
        train_clips: what a training clip holds: ``flow``, ``rgb`` or ``rgb+flow`` (the student's RGB and the
            teacher's flow from the same frames).
        test_clips: what the network sees at test time (a MARS student sees RGB only).
        teacher: the kind of stream whose checkpoint teaches this one (MARS: a flow stream), or None.
        batch_size: MARS's batch size for the stream, used when the config leaves it unset.
    """

    name: str
    in_channels: int
    train_clips: str
    test_clips: str
    teacher: str | None
    batch_size: int

    @property
    def needs_flow(self) -> bool:
        """Whether the network reads optical flow at test time (only then must flow be computed)."""
        return self.test_clips == "flow"


STREAM_SPECS: dict[str, StreamSpec] = {
    "flow": StreamSpec("flow", in_channels=2, train_clips="flow", test_clips="flow", teacher=None, batch_size=32),
    "rgb": StreamSpec("rgb", in_channels=3, train_clips="rgb", test_clips="rgb", teacher=None, batch_size=32),
    "mars": StreamSpec("mars", in_channels=3, train_clips="rgb+flow", test_clips="rgb", teacher="flow",
                       batch_size=16),
}


@dataclass(frozen=True)
class StreamName:
    """A stream's name as a value: its kind (``base``) and whether STA is inserted. ``str()`` gives the name used
    in file names, score files, report keys and checkpoints (``mars``, ``sta-mars``); ``parse`` reads it back.

    Args:
        base: the kind of stream, a key of ``STREAM_SPECS`` (``flow``, ``rgb``, ``mars``).
        sta: whether STA is inserted (the name then starts with ``sta-``).
    """

    base: str
    sta: bool = False

    def __post_init__(self) -> None:
        if self.base not in STREAM_SPECS:
            raise InputError(None, f"stream {str(self)!r}: expected one of {', '.join(STREAM_SPECS)} (with "
                                   f"{STA_PREFIX!r} in front when STA is inserted)")

    @classmethod
    def parse(cls, text: str) -> StreamName:
        """``sta-mars`` -> StreamName("mars", sta=True); an unknown name is an InputError."""
        base = text.removeprefix(STA_PREFIX)
        return cls(base, sta=base != text)

    @classmethod
    def every(cls) -> list[StreamName]:
        """Every registered stream, without then with STA."""
        return [cls(base, sta) for base in STREAM_SPECS for sta in (False, True)]

    def __str__(self) -> str:
        return f"{STA_PREFIX}{self.base}" if self.sta else self.base

    @property
    def spec(self) -> StreamSpec:
        return STREAM_SPECS[self.base]

    @property
    def has_teacher(self) -> bool:
        """Whether this stream distils from a teacher stream (MARS and STA-MARS)."""
        return self.spec.teacher is not None

    @property
    def teacher(self) -> StreamName | None:
        """The kind of stream that teaches this one, without STA (a run may pick its STA variant), or None."""
        return None if self.spec.teacher is None else StreamName(self.spec.teacher)


def stream_spec(stream: str) -> StreamSpec:
    """The spec of ``stream`` (``sta-mars`` is a ``mars`` stream); an unknown name is an InputError."""
    return StreamName.parse(stream).spec
