"""Real-time fan-out decisions: room names to channels and keys, the publish script, and
the flows that publish, replay and read a durable room's history. No I/O: the asyncio hub
(``asgi/realtime.py``) and the sync publisher (``wsgi/realtime.py``) run these flows; the
wire form is in ``messages.py``, a subscriber's queue in ``inbox.py``, what one process
does with its rooms' subscriptions (replays, read-backs, gaps) in ``rooms.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ...config.settings import Settings
from ...keys import KeySpace
from ..flow import Call, Flow, Script
from .messages import Gap, Message, is_stream_id, stream_order

__all__ = ["MAX_ROOM", "CatchUp", "Published", "RealtimeCore", "lost_after"]

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


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What a new subscriber's ``since`` found: the messages after it that the stream
    keeps, oldest first, and the gap to tell before them (None: nothing was lost)."""

    messages: list[Message]
    gap: Gap | None = None


def lost_after(since: str, first: str | None, oldest: str | None, window_start_ms: int
               ) -> str | None:
    """Whether messages after ``since`` (a stream id) may be missing from a replay, and
    why: ``trimmed`` (the stream no longer keeps what followed it) or ``future`` (it is
    newer than anything the stream has); None: the replay misses nothing.

    ``first`` is the first id of the stream at or after ``since``, ``oldest`` the oldest
    id the stream keeps (None: none); ``window_start_ms`` where the replay window starts
    now. A stream is only ever trimmed from its oldest end, so a ``since`` still kept,
    or not older than the oldest kept, lost nothing after it. (One trimmed right before
    the oldest kept lost nothing either, but nothing read tells it from one trimmed
    further back: that one is a gap too.)
    """
    at = stream_order(since)
    if first is not None and stream_order(first) == at:
        return None  # still kept: so is everything after it
    if oldest is None:
        # The stream is gone. It expires a replay window after its last message, so a
        # since older than the window lost what followed it with it; one inside the
        # window would still be there: it comes from no history this Redis has (a
        # flush, a restart without persistence, another server).
        return "trimmed" if at[0] < window_start_ms else "future"
    if first is None:
        return "future"  # newer than the newest message kept
    return "trimmed" if at < stream_order(oldest) else None


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

    def replay_after(self, room: str, since: str | None) -> str | Gap | None:
        """Where a new subscriber's replay starts (``since``, in a durable room), or None:
        no replay (none asked, or a plain room, which keeps nothing to replay). A
        ``since`` that is no stream id (it comes from clients) is never sent to Redis:
        the subscriber starts with this :class:`Gap` (``since``) instead, and nothing is
        logged, as it is no incident of Redis."""
        if since is None or not self.durable(room):
            return None
        return since if is_stream_id(since) else Gap(room, "since")

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

    def since_flow(self, room: str, since: str, count: int | None = None,
                   now: float | None = None) -> Flow[CatchUp]:
        """What a new subscriber's ``since`` (a stream id, :meth:`replay_after`) finds:
        the messages after it, and a gap before them when the stream cannot answer for
        all of them (:func:`lost_after`). One round trip: the read starts *at* ``since``
        (still kept: nothing was lost, decided from the read alone), and the stream's
        oldest id rides along for when it is not."""
        if stream_order(since) == (0, 0):  # "", "0", "0-0", "00"...: everything kept
            return CatchUp((yield from self.replay_flow(room, "0", count)))
        limit = count or self.settings.realtime_queue_size
        key = self.keys.realtime(room, "stream")
        # The read first: a trim between the two can then only make the oldest id newer
        # (a gap told that was not needed), never hide one.
        entries, oldest = yield (Call.of("XRANGE", key, since, "+", "COUNT", limit + 1),
                                 Call.of("XRANGE", key, "-", "+", "COUNT", 1))
        entries, oldest = list(entries or []), list(oldest or [])
        first = _text(entries[0][0]) if entries else None
        now_ms = int((time.time() if now is None else now) * 1000)
        reason = lost_after(since, first, _text(oldest[0][0]) if oldest else None,
                            now_ms - self.settings.realtime_stream_max_age * 1000)
        if first is not None and stream_order(first) == stream_order(since):
            entries = entries[1:]  # since itself: the client has it
        return CatchUp(self.entries(room, entries[:limit]),
                       None if reason is None else Gap(room, reason))

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
