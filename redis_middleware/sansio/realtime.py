"""Real-time fan-out decisions: room names to channels and keys, the publish and replay
scripts, the wire form of a message, and each subscriber's bounded inbox (gaps,
duplicates, overflow). No I/O: the asyncio hub and the sync publisher run these."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..config.settings import Settings
from ..errors import SubscriberOverflow
from ..keys import KeySpace
from .flow import Call, Flow, Script

__all__ = ["Cursor", "Gap", "Inbox", "Message", "Published", "RealtimeCore", "parse_payload",
           "skipped", "stream_order"]

MAX_ROOM = 256  # characters: a longer room name is refused (names are not content)
SEQUENCE_TTL_MS = 86_400_000  # a plain room's sequence restarts after a day of silence

# Every payload on a room's channel is ``<seq> <id> <ts ms>\n<JSON>``: the header is
# parsed without touching the JSON, which is forwarded to WebSockets as it is.
# KEYS: seq, stream. ARGV: channel, JSON, seq ttl ms, publish command, durable (0/1),
# maxlen, min id (ms; 0: no age bound), now ms.
_PUBLISH = Script("""
local seq = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local id = ''
if ARGV[5] == '1' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 's', seq, 't', ARGV[8],
                  'd', ARGV[2])
  if ARGV[7] ~= '0' then redis.call('XTRIM', KEYS[2], 'MINID', '~', ARGV[7]) end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call(ARGV[4], ARGV[1], seq .. ' ' .. id .. ' ' .. ARGV[8] .. '\\n' .. ARGV[2])
return {seq, id}
""")


@dataclass(frozen=True, slots=True)
class Published:
    """What ``publish`` returns: the room's sequence number and, in a durable room,
    the stream id a client can resume from."""

    seq: int
    id: str


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
    ``unavailable`` (a replay could not be read)."""

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


def stream_order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (``"ms-n"``)."""
    ms, _, n = stream_id.partition("-")
    try:
        return int(ms), int(n or 0)
    except ValueError:
        return (0, 0)


class RealtimeCore:
    """Rooms, channels, keys and scripts of the real-time component, for both sides."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.sharded = settings.target.kind == "cluster"  # SPUBLISH/SSUBSCRIBE (Redis 7)
        self._durable = settings.realtime_durable_rooms
        self._channels: dict[str, str] = {}

    def check_room(self, room: str) -> str:
        if not isinstance(room, str) or not room or len(room) > MAX_ROOM:
            raise ValueError(f"a room name is 1-{MAX_ROOM} characters of text")
        return room

    def channel(self, room: str) -> str:
        """The room's Pub/Sub channel (hash-tagged by room: one shard on a Cluster)."""
        found = self._channels.get(room)
        if found is None:
            found = self.keys.realtime(self.check_room(room))
            if len(self._channels) < 10_000:
                self._channels[room] = found
        return found

    def durable(self, room: str) -> bool:
        return any(fnmatchcase(room, pattern) for pattern in self._durable)

    def encode(self, message: Any) -> str:
        """The JSON text of ``message`` (ValueError: not JSON, or too large)."""
        try:
            raw = json.dumps(message, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a message must be JSON-serialisable: {exc}") from None
        if len(raw.encode()) > self.settings.realtime_max_message_bytes:
            raise ValueError(f"message larger than realtime_max_message_bytes "
                             f"({self.settings.realtime_max_message_bytes})")
        return raw

    # -- flows ------------------------------------------------------------------
    def publish_flow(self, room: str, message: Any, now: float | None = None
                     ) -> Flow[Published]:
        """One round trip: the room's next number, the stream entry of a durable room
        (trimmed by length and age), and the publication."""
        raw = self.encode(message)
        channel = self.channel(room)
        now_ms = int((time.time() if now is None else now) * 1000)
        durable = self.durable(room)
        s = self.settings
        age_ms = s.realtime_stream_max_age * 1000
        ttl = age_ms if durable else SEQUENCE_TTL_MS
        (reply,) = yield (_PUBLISH(
            [self.keys.realtime(room, "seq"), self.keys.realtime(room, "stream")],
            [channel, raw, ttl, "SPUBLISH" if self.sharded else "PUBLISH",
             1 if durable else 0, s.realtime_stream_maxlen, max(0, now_ms - age_ms),
             now_ms]),)
        seq, stream_id = reply
        return Published(int(seq), _text(stream_id))

    def replay_flow(self, room: str, after: str, count: int | None = None
                    ) -> Flow[list[Message]]:
        """A durable room's messages after stream id ``after`` ("" or "0": from the
        oldest kept), oldest first; at most ``count`` (default: the queue size)."""
        start = "-" if after in ("", "0", "0-0") else "(" + after
        limit = count or self.settings.realtime_queue_size
        (entries,) = yield (Call.of("XRANGE", self.keys.realtime(room, "stream"), start, "+",
                                    "COUNT", limit),)
        return self.entries(room, entries or [])

    def history_flow(self, room: str, count: int) -> Flow[list[Message]]:
        """A durable room's latest ``count`` messages, oldest first."""
        (entries,) = yield (Call.of("XREVRANGE", self.keys.realtime(room, "stream"), "+",
                                    "-", "COUNT", count),)
        return self.entries(room, list(reversed(entries or [])))

    def entries(self, room: str, entries: Iterable[Any]) -> list[Message]:
        out: list[Message] = []
        for stream_id, fields in entries:
            values = _fields(fields)
            try:
                out.append(Message(room, int(values["s"]), _text(stream_id),
                                   int(values["t"]) / 1000, values["d"]))
            except (KeyError, ValueError):
                continue  # not an entry of ours
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _fields(fields: Any) -> dict[str, str]:
    if isinstance(fields, dict):
        return {_text(k): _text(v) for k, v in fields.items()}
    items = list(fields)
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


Item = Message | Gap


class Cursor:
    """The newest message of a durable room that one process's subscription carried:
    where a replay starts after a reconnect, and whether a live message skipped numbers
    (Pub/Sub lost some on the way: they are in the stream, to be read back)."""

    __slots__ = ("_order", "last_id", "last_seq")

    def __init__(self) -> None:
        self.last_id = ""
        self.last_seq: int | None = None
        self._order = (0, 0)

    def advance(self, message: Message) -> str | None:
        """Note ``message``; the id to read back after when numbers were skipped."""
        after, order = self.last_id, stream_order(message.id)
        if after and order <= self._order:
            return None  # an older one (a replay overlapping live messages)
        missed = skipped(self.last_seq, message.seq) if after else 0
        self.last_id, self.last_seq, self._order = message.id, message.seq, order
        return after if missed else None


class Inbox:
    """One subscriber's bounded queue: what it has not read yet, in order.

    It drops what it already has (a durable room's replay overlapping live messages),
    marks a gap when a room's numbering skips, and applies the overflow policy when the
    subscriber falls ``size`` messages behind: ``drop-oldest`` (a gap marker takes
    their place) or ``disconnect`` (the next read raises :class:`SubscriberOverflow`).
    ``wake`` is called when an item arrives for a reader that may be waiting.
    """

    def __init__(self, room: str, size: int, policy: str, wake: Callable[[], None]) -> None:
        self.room, self.size, self.policy, self.wake = room, size, policy, wake
        self.queue: deque[Item] = deque()
        self.last_seq: int | None = None
        self.last_id = (0, 0)
        self.dropped = 0
        self.overflowed = False
        self.closed = False
        self._held: list[Message] | None = None  # live messages kept during replays
        self._replays: list[Message] = []  # what the replays read, until the last ends
        self._holds = 0  # replays being read

    # -- arrivals -------------------------------------------------------------
    def push(self, message: Message) -> None:
        if self.closed:
            return
        if self._held is not None:
            self._held.append(message)
            return
        self._accept(message)

    def gap(self, reason: str, missed: int | None = None) -> None:
        if self.closed:
            return
        self.last_seq = None  # numbering starts again after a marker
        self._put(Gap(self.room, reason, missed))

    def hold(self) -> None:
        """Keep live messages aside until :meth:`replayed` (a replay is being read).
        Replays can overlap: each ``hold`` is ended by one ``replayed``."""
        self._holds += 1
        if self._held is None:
            self._held = []

    def replayed(self, messages: Sequence[Message]) -> None:
        """A replay's messages; once the last replay ended, they and the live messages
        that arrived meanwhile are delivered in stream order, without doubles."""
        self._replays.extend(messages)
        self._holds = max(0, self._holds - 1)
        if self._holds:
            return
        items = [*self._replays, *(self._held or ())]
        self._held, self._replays = None, []
        if self.closed:
            return
        if all(m.id for m in items):  # a durable room's: stream ids order them
            items.sort(key=lambda m: stream_order(m.id))
        for message in items:
            self._accept(message)

    def _accept(self, message: Message) -> None:
        if message.id:
            order = stream_order(message.id)
            if order <= self.last_id:
                return  # replayed and live: delivered once
            self.last_id = order
        missed = skipped(self.last_seq, message.seq)
        if missed:
            self._put(Gap(self.room, "sequence", missed))
        self.last_seq = message.seq
        self._put(message)

    def _put(self, item: Item) -> None:
        if len(self.queue) >= self.size:
            if self.policy == "disconnect":
                self.overflowed = True
                self.closed = True
                self.queue.clear()
                self.wake()
                return
            dropped = self.queue.popleft()
            if isinstance(dropped, Message):
                self.dropped += 1
        was_empty = not self.queue
        self.queue.append(item)
        if was_empty:
            self.wake()

    # -- reading ----------------------------------------------------------------
    def pop(self) -> Item | None:
        """The next item (None: nothing yet). Raises SubscriberOverflow once it overflowed."""
        if self.overflowed:
            raise SubscriberOverflow(f"subscriber of room {self.room!r} fell more than "
                                     f"{self.size} messages behind")
        if self.dropped:
            missed, self.dropped = self.dropped, 0
            return Gap(self.room, "overflow", missed)
        return self.queue.popleft() if self.queue else None

    def close(self) -> None:
        self.closed = True
        self.wake()
