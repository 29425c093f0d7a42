"""Presence, decided without I/O: leases, join/leave detection, the sweeper, the queries.

Data layout (``docs/presence.md``), per room ``R`` (``_`` for the site-wide room),
all in one Cluster slot so every script is single-slot:

- ``<prefix>:presence:{R}:online`` ZSET user -> latest lease deadline (ms). A user
  is online while that deadline is in the future; counts are ``ZCOUNT`` (O(log N)).
  A member is the user id, or ``\\x00`` + its ASCII-escaped JSON string for an id
  with no UTF-8 form (a lone surrogate) or one that starts with ``\\x00``.
- ``<prefix>:presence:{R}:conns:<user>`` HASH connection -> lease deadline (one
  ``http`` connection per user, one per WebSocket).
- ``<prefix>:presence:{R}:seen`` ZSET user -> last activity (ms), kept for the
  retention period after going offline.
- ``<prefix>:presence:{R}:seq`` the event sequence number; ``...:sweep`` the
  sweeper's lock.

Every transition is decided inside one script, so it is published exactly once,
however many workers heartbeat or sweep at the same time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._memo import Recent
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..keys import KeySpace, escape
from . import metrics
from .flow import Call, Flow, Script, gather
from .incidents import log_incident
from .ratelimit.identity import credential_of
from .request import RequestInfo

__all__ = ["PresenceCore", "PresenceEvent"]

# Shared Lua: publish one event with the next sequence number.
_EVENT = """
local function event(user_json, status, reason, now)
  local seq = redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
  local ts = string.format('%.3f', now / 1000)
  redis.call('PUBLISH', ARGV[6], '{"user":' .. user_json .. ',"status":"' .. status ..
    '","reason":"' .. reason .. '","seq":' .. seq .. ',"ts":' .. ts ..
    ',"room":' .. ARGV[8] .. '}')
end
"""

# KEYS: online, conns, seen, seq. ARGV: user, user json, conn, now, deadline, channel,
# structure ttl ms, room json, retention ms. Returns 1 when the user came online.
_HEARTBEAT = Script(_EVENT + """
local user, now, deadline = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, retention = tonumber(ARGV[7]), tonumber(ARGV[9])
local previous = tonumber(redis.call('ZSCORE', KEYS[1], user) or '0')
local conns = redis.call('HGETALL', KEYS[2])
local latest = deadline
for i = 1, #conns, 2 do
  local d = tonumber(conns[i + 1])
  if d <= now then redis.call('HDEL', KEYS[2], conns[i])
  elseif conns[i] ~= ARGV[3] and d > latest then latest = d end
end
redis.call('HSET', KEYS[2], ARGV[3], deadline)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], latest, user)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], now, user)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - retention)
redis.call('PEXPIRE', KEYS[3], retention)
if previous > now then return 0 end
if previous > 0 then event(ARGV[2], 'offline', 'timeout', now) end
event(ARGV[2], 'online', 'heartbeat', now)
return 1
""")

# KEYS: online, conns, seen, seq. ARGV: user, user json, conn ('' = all), now, grace ms,
# channel, structure ttl ms, room json. Ends one connection (after a grace period) or
# all of them at once (explicit). Returns 1 when the user went offline now.
_RELEASE = Script(_EVENT + """
local user, now = ARGV[1], tonumber(ARGV[4])
local previous = tonumber(redis.call('ZSCORE', KEYS[1], user) or '0')
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], user)
  if previous > now then
    redis.call('ZADD', KEYS[3], now, user)
    event(ARGV[2], 'offline', 'explicit', now)
    return 1
  end
  return 0
end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then return 0 end
local until_ms = now + tonumber(ARGV[5])
redis.call('HSET', KEYS[2], ARGV[3], until_ms)
local latest = 0
for i, v in ipairs(redis.call('HVALS', KEYS[2])) do
  if tonumber(v) > latest then latest = tonumber(v) end
end
redis.call('ZADD', KEYS[1], latest, user)
return 0
""")

# KEYS: online, lock, _, seq. ARGV: lock token, lock ms, now, batch size, _, channel,
# structure ttl ms, room json. Removes users whose last lease ran out, publishing
# 'offline' for each. Returns the number of users taken offline (-1: another sweeper).
_SWEEP = Script(_EVENT + """
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local now = tonumber(ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, user in ipairs(gone) do
  redis.call('ZREM', KEYS[1], user)
  -- a member starting with \0 is \0 + the user's JSON string (_member)
  if string.byte(user, 1) == 0 then
    event(string.sub(user, 2), 'offline', 'timeout', now)
  else
    event(cjson.encode(user), 'offline', 'timeout', now)
  end
end
return #gone
""")


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """One published transition."""

    user: str
    status: str
    reason: str
    seq: int
    ts: float
    room: str

    @classmethod
    def parse(cls, data: bytes | str) -> PresenceEvent | None:
        try:
            m = json.loads(data)
            return cls(str(m["user"]), str(m["status"]), str(m["reason"]), int(m["seq"]),
                       float(m["ts"]), str(m.get("room", "")))
        except (ValueError, KeyError, TypeError):
            return None


class EventFeed:
    """What a ``Presence.events()`` loop decides, the same on both sides: which Pub/Sub
    messages are events, when an idle feed stops (``timeout`` seconds without an event;
    None: never), and that a broken subscription is logged once per incident and
    subscribed again after ``retry`` seconds."""

    retry = 1.0

    def __init__(self, channel: str, timeout: float | None) -> None:
        self.channel = channel
        self.timeout = timeout
        self._idle_since = time.monotonic()

    def event(self, message: Any) -> PresenceEvent | None:
        if not message or message.get("type") != "message":
            return None
        event = PresenceEvent.parse(message["data"])
        if event is not None:
            self._idle_since = time.monotonic()
        return event

    def done(self) -> bool:
        return self.timeout is not None and time.monotonic() - self._idle_since >= self.timeout

    def wait(self) -> float:
        """Seconds to wait for the next message: short enough to notice the timeout."""
        if self.timeout is None:
            return 1.0
        return max(0.01, min(1.0, self.timeout - (time.monotonic() - self._idle_since)))

    def recoverable(self, exc: BaseException) -> bool:
        """A broken subscription (retried) rather than a bug (raised); logs the incident."""
        if isinstance(exc, (OSError, ConnectionError, RedisMiddlewareError)) or \
                type(exc).__module__.startswith("redis"):
            log_incident("presence-events", "presence events interrupted: %s", exc)
            return True
        return False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_ESCAPED = "\x00"  # the mark before a member that is a user id's JSON string


def _member(user: str) -> str:
    """A user id as its ZSET member: the id itself. One with a lone surrogate (what
    json.loads gives for "\\ud800") has no UTF-8 form: it is stored as the mark and its
    ASCII-escaped JSON string, and so is an id that starts with the mark, so no two ids
    share a member."""
    if user[:1] != _ESCAPED:
        if user.isascii():
            return user
        try:
            user.encode()
            return user
        except UnicodeEncodeError:
            pass
    return _ESCAPED + json.dumps(user)


def _user(member: bytes) -> str:
    """:func:`_member` undone."""
    text = member.decode()
    if text[:1] == _ESCAPED:
        user: str = json.loads(text[1:])
        return user
    return text


_SHORT = 64  # characters of a room and user id remembered as they are


def _throttle_key(room: str, user: str) -> tuple[str, str] | bytes:
    """How the heartbeat throttle remembers a user in a room: as the pair when short
    (ids and room names usually are), else as a 16-byte digest, so that every user
    counts for at most ``_SHORT`` characters of its budget, however long their id."""
    if len(room) + len(user) <= _SHORT:
        return room, user
    text = f"{len(room)}:{room}{user}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


class PresenceCore:
    """Every presence decision; ``Presence`` and the middleware only run its flows."""

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.keys = KeySpace(s.key_prefix)
        self.channel = self.keys.presence_channel()
        self.ttl_ms = s.presence_ttl * 1000
        # Structures outlive every lease long enough for a sweeper to see it expire.
        self.structure_ms = int((s.presence_ttl * 2 + s.presence_sweep_interval + 60) * 1000)
        self.retention_ms = s.presence_retention * 1000
        self.grace_ms = int(s.presence_grace * 1000)
        # (room, user) -> when this process last wrote their heartbeat: 100,000 users,
        # each in at most _SHORT characters (a longer pair is kept as its digest)
        self._throttle: Recent[tuple[str, str] | bytes, float] = Recent(
            100_000, max_chars=100_000 * _SHORT)
        self._last_sweep = float("-inf")
        # Whether a request's credential can make it online (presence_key bearer or
        # header:<Name>): with "user", identity() is the user alone.
        self.by_credential = s.presence_key != "user"

    def _keys(self, room: str, user: str | None = None) -> list[str]:
        conns = self.keys.presence("conns:" + escape(user), room) if user is not None else "-"
        return [self.keys.presence("online", room), conns, self.keys.presence("seen", room),
                self.keys.presence("seq", room)]

    # -- throttling (per process) --------------------------------------------------
    def due(self, user: str, room: str = "", now: float | None = None) -> bool:
        """True when this process should write ``user``'s heartbeat now (and records it)."""
        now = time.monotonic() if now is None else now
        key = _throttle_key(room, user)
        last = self._throttle.get(key)
        if last is not None and now - last < self.settings.presence_heartbeat_interval:
            return False
        self._throttle.put(key, now)
        return True

    def forget(self, user: str, room: str = "") -> None:
        self._throttle.discard(_throttle_key(room, user))

    def sweep_due(self, now: float | None = None) -> bool:
        """True when this process should run the sweep now (and records it)."""
        now = time.monotonic() if now is None else now
        if now - self._last_sweep < self.settings.presence_sweep_interval:
            return False
        self._last_sweep = now
        return True

    def mark_swept(self, now: float | None = None) -> None:
        """A background sweeper ran the sweep: requests need not run it too for a while."""
        self._last_sweep = time.monotonic() if now is None else now

    def identity(self, user: str | None, request: Callable[[], RequestInfo]) -> str | None:
        """Who a request makes online: with ``presence_key`` ``bearer`` or
        ``header:<Name>``, its credential (hashed, as the rate limiter keys it) when it
        carries one; otherwise the user."""
        kind = self.settings.presence_key
        if kind != "user":
            credential = credential_of(request(), kind)
            if credential is not None:
                return credential
        return user

    def request_flow(self, user: str | None) -> Flow[None] | None:
        """What one request owes presence: a due sweep and a due heartbeat, sharing one
        round trip (None: nothing to do). Failures are the caller's to log."""
        flows: list[Flow[Any]] = []
        if self.sweep_due():
            flows.append(self.sweep_flow(secrets.token_hex(8)))
        if user is not None and self.due(user):
            flows.append(self.heartbeat_flow(user))
        if not flows:
            return None
        return self._run_all(flows)

    @staticmethod
    def _run_all(flows: list[Flow[Any]]) -> Flow[None]:
        yield from gather(*flows)

    # -- writes -----------------------------------------------------------------------
    def heartbeat_flow(self, user: str, conn: str = "http", room: str = "",
                       ttl_ms: int | None = None) -> Flow[bool]:
        """One round trip: renew the lease; True when the user came online."""
        now = _now_ms()
        args = [_member(user), json.dumps(user), conn, now, now + (ttl_ms or self.ttl_ms),
                self.channel, self.structure_ms, json.dumps(room), self.retention_ms]
        (came_online,) = yield (_HEARTBEAT(self._keys(room, user), args),)
        if metrics.hook is not None:
            metrics.hook.presence("heartbeat")
            if came_online:
                metrics.hook.presence("online")
        return bool(came_online)

    def release_flow(self, user: str, conn: str = "", room: str = "") -> Flow[bool]:
        """End one connection (after the grace period) or, with no ``conn``, all of them."""
        args = [_member(user), json.dumps(user), conn, _now_ms(), self.grace_ms, self.channel,
                self.structure_ms, json.dumps(room)]
        (went_offline,) = yield (_RELEASE(self._keys(room, user), args),)
        if went_offline and metrics.hook is not None:
            metrics.hook.presence("offline")
        return bool(went_offline)

    def sweep_flow(self, token: str, room: str = "", batch: int = 1000) -> Flow[int]:
        """Take offline users whose leases ran out (-1 when another worker swept just now)."""
        keys = self._keys(room)
        keys[1] = self.keys.presence("sweep", room)
        lock_ms = max(1, int(self.settings.presence_sweep_interval * 1000) - 50)
        args = [token, lock_ms, _now_ms(), batch, "", self.channel, self.structure_ms,
                json.dumps(room)]
        (n,) = yield (_SWEEP(keys, args),)
        if int(n) > 0 and metrics.hook is not None:
            metrics.hook.presence("offline", int(n))
        return int(n)

    # -- queries ------------------------------------------------------------------------
    def is_online_flow(self, user: str, room: str = "") -> Flow[bool]:
        (score,) = yield (Call.of("ZSCORE", self.keys.presence("online", room), _member(user)),)
        return score is not None and float(score) > _now_ms()

    def online_users_flow(self, room: str = "", offset: int = 0,
                          limit: int | None = None) -> Flow[list[str]]:
        args: list[Any] = ["ZRANGEBYSCORE", self.keys.presence("online", room), _now_ms() + 1,
                           "+inf"]
        if limit is not None or offset:
            args += ["LIMIT", offset, -1 if limit is None else limit]
        (members,) = yield (Call(tuple(args)),)
        return [_user(m) for m in members]

    def online_count_flow(self, room: str = "") -> Flow[int]:
        key = self.keys.presence("online", room)
        (n,) = yield (Call.of("ZCOUNT", key, _now_ms() + 1, "+inf"),)
        return int(n)

    def last_seen_flow(self, user: str, room: str = "") -> Flow[float | None]:
        (score,) = yield (Call.of("ZSCORE", self.keys.presence("seen", room), _member(user)),)
        return None if score is None else float(score) / 1000
