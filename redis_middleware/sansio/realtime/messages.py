"""The wire form of a room's messages: what a channel payload carries, the envelope a
WebSocket client gets, the gap marker, and how stream ids and sequence numbers compare."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Gap", "Item", "Message", "is_stream_id", "parse_payload", "skipped",
           "stream_order"]


class Message:
    """One message of a room, shared by every local subscriber (decoded at most once).

    ``seq`` numbers a room's messages (1, 2, 3...); ``id`` is the stream id of a durable
    room's message (resume from it: ``subscribe(room, since=id)``), else empty; ``ts``
    is the publisher's clock (epoch seconds).
    """

    __slots__ = ("_at", "_data", "_envelope", "id", "room", "seq", "ts")
    kind = "message"

    def __init__(self, room: str, seq: int, stream_id: str, ts: float, raw: str) -> None:
        self.room, self.seq, self.id, self.ts = room, seq, stream_id, ts
        self._data: Any = _UNSET
        # The envelope is kept instead of the published text (which it contains): one
        # copy of a message's bytes per message, however long slow subscribers hold it.
        head = (f'{{"type":"message","room":{json.dumps(room)},"seq":{seq},'
                f'"id":"{stream_id}","ts":{ts:.3f},"data":')
        self._envelope = head + raw + "}"
        self._at = len(head)

    @property
    def raw(self) -> str:
        """The published JSON text."""
        return self._envelope[self._at:-1]

    @property
    def data(self) -> Any:
        """The published JSON value (decoded on first use)."""
        if self._data is _UNSET:
            self._data = json.loads(self.raw)
        return self._data

    def envelope(self) -> str:
        """The JSON text a WebSocket client gets (built once per message, not per socket):
        ``{"type": "message", "room", "seq", "id", "ts", "data"}``."""
        return self._envelope

    def __repr__(self) -> str:
        return f"Message(room={self.room!r}, seq={self.seq}, id={self.id!r}, data={self.raw})"


_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of ``room`` before this marker may be missing (``missed`` of them, when
    known). ``reason``: ``reconnect`` (the shared subscription was re-established),
    ``overflow`` (this subscriber was too slow), ``sequence`` (a number was skipped),
    ``unavailable`` (a replay could not be read), ``since`` (a subscriber's ``since`` was
    no stream id, so where it was is unknown: nothing was replayed), ``trimmed`` (the
    stream no longer keeps what followed a subscriber's ``since``: what it keeps
    follows), ``future`` (a subscriber's ``since`` is newer than anything the stream
    has: another Redis, or from before a flush)."""

    room: str
    reason: str
    missed: int | None = None
    kind = "gap"

    def envelope(self) -> str:
        missed = "null" if self.missed is None else str(self.missed)
        return (f'{{"type":"gap","room":{json.dumps(self.room)},"reason":"{self.reason}",'
                f'"missed":{missed}}}')


def parse_payload(room: str, payload: bytes | str) -> Message | None:
    """A channel payload as a :class:`Message` (None: not one of ours)."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    head, sep, raw = text.partition("\n")
    parts = head.split(" ")
    if not sep or len(parts) != 3:
        return None
    try:
        return Message(room, int(parts[0]), parts[1], int(parts[2]) / 1000, raw)
    except ValueError:
        return None


def skipped(last_seq: int | None, seq: int) -> int:
    """How many numbers of a room were skipped between ``last_seq`` and ``seq`` (0: none,
    or nothing to compare with)."""
    return seq - last_seq - 1 if last_seq is not None and seq > last_seq + 1 else 0


_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_ID_PART_MAX = 2**64 - 1


def is_stream_id(value: object) -> bool:
    """Whether ``value`` is a stream id a replay can start after: ``"<ms>-<n>"`` or
    ``"<ms>"`` (each part a 64-bit unsigned number, not both the largest), or ``""``
    (from the oldest kept)."""
    if not isinstance(value, str):
        return False
    if not value:
        return True
    found = _STREAM_ID.fullmatch(value)
    if found is None:
        return False
    ms, n = int(found[1]), int(found[2] or 0)
    return ms <= _ID_PART_MAX and n <= _ID_PART_MAX and (ms, n) != (_ID_PART_MAX,) * 2


def stream_order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (``"ms-n"``)."""
    ms, _, n = stream_id.partition("-")
    try:
        return int(ms), int(n or 0)
    except ValueError:
        return (0, 0)


Item = Message | Gap
