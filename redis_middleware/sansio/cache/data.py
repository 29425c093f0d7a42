"""The data cache (cache-aside for function results), decided without I/O.

Layout (``docs/data-cache.md``), for a rendered key ``K`` in namespace ``N`` (empty for
``DataCache`` itself; ``django``, ``flask`` for the framework backends):

- ``<prefix>:data:[N:]{K}``: the value, in an *envelope* (below) or, in raw mode, the
  serializer's bytes alone; its Redis TTL is the value's TTL plus its stale window;
- ``<prefix>:data:fill:[N:]{K}``: the single-flight lease of ``K`` (``SET NX PX``
  with a random token), in ``K``'s slot, so that one script takes it while reading the
  value and another stores the value and frees it;
- ``<prefix>:data:tag:[N:]{T}``: a ZSET of the value keys stored with tag ``T``, scored
  by their expiry (pruned as it is written, so it stays as small as the live values);
- ``<prefix>:data:lock:{name}``: a lock of ``DataCache.lock``.

The envelope is a 15-byte header, the tags' digests, then the payload::

    magic 0xD1 | flags | tag count | fresh until (ms, u64) | loader ms (u32) | 8 B per tag

flags: bit 0 compressed (zlib), bit 1 *soft* (stored with a stale window: readers judge
freshness by the header, Redis keeps the value longer), bits 4-7 the serializer's id.
A hit is one ``GET``; the header carries what decides a refresh (the expiry and the
loader's time, for XFetch) and what lets a tag's invalidation spare a value that was
stored again without that tag.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

from ..._memo import Memo
from ...config.settings import Settings
from ...keys import KeySpace, digest
from ..flow import Call, Flow, Pause, PausingFlow, Script
from ..incidents import log_incident
from .serializers import Serializer, serializer_named

__all__ = ["MISS", "DataCore", "Entry", "Judgement", "hash_slot_tag"]

MAGIC = 0xD1
HEAD = struct.Struct(">BBBQI")
HEAD_SIZE = HEAD.size  # 15
COMPRESSED = 0x01
SOFT = 0x02
DIGEST_SIZE = 8
MAX_TAGS = 255
_MAX_COMPUTE_MS = 2**32 - 1
_NAMESPACE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED = frozenset({"fill", "lock", "tag"})  # the bookkeeping words after data:
_CHUNK = 500  # keys per script call or DEL when deleting many

Judgement = Literal["fresh", "early", "stale"]
MISS: Any = type("Miss", (), {"__repr__": lambda self: "MISS"})()  # not a stored value


class Entry(NamedTuple):
    """A decoded value and what its envelope said about it."""

    value: Any
    fresh_until: int  # ms since the epoch (0 in raw mode: Redis's TTL alone decides)
    compute_ms: int  # how long the loader took (XFetch)
    soft: bool  # stored with a stale window


# KEYS: value, fill lease. ARGV: token, lease ms, now ms, "1" when values have an envelope.
# The value when it is fresh (an unreadable one counts as fresh: the caller overwrites
# it); else the lease if free. Returns {fresh value or false, 1 if the lease is ours}.
_CLAIM = Script("""
local v = redis.call('GET', KEYS[1])
if v then
  if ARGV[4] ~= '1' or string.byte(v, 1) ~= 209 or string.byte(v, 2) % 4 < 2 then
    return {v, 0}
  end
  local fresh_until = 0
  for i = 4, 11 do fresh_until = fresh_until * 256 + string.byte(v, i) end
  if fresh_until > tonumber(ARGV[3]) then return {v, 0} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {false, 1} end
return {false, 0}
""")

# KEYS: value, fill lease. ARGV: value, px, token. Stores and frees the caller's lease.
_STORE = Script("""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
""")

_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS: lease. ARGV: token, px. Extends the lease only while the caller still holds it.
_RENEW = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")

# KEYS: tag ZSET. ARGV: value key, its expiry (ms), now (ms), its px. The tag lives as
# long as its longest-lived member and forgets expired ones as it is written.
_TAG_ADD = Script("""
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
""")

# KEYS: tag ZSET. Its members, and the tag gone, atomically: a value tagged after this
# read lands in a new tag set, for the next invalidation.
_TAG_POP = Script("""
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return members
""")

# KEYS: values (one slot). ARGV: the digests of the tags being invalidated. Deletes the
# values whose envelope still names one of them (read from the header alone).
_DROP_TAGGED = Script("""
local n = 0
for _, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 2054)
  if string.byte(head, 1) == 209 then
    local found = false
    for i = 0, string.byte(head, 3) - 1 do
      local d = string.sub(head, 16 + 8 * i, 23 + 8 * i)
      for j = 1, #ARGV do
        if d == ARGV[j] then found = true break end
      end
      if found then break end
    end
    if found then n = n + redis.call('DEL', key) end
  end
end
return n
""")

# KEYS: value. ARGV: delta. {0}: missing; {1, new value}; {2}: not an integer;
# {3}: out of 64-bit range. INCRBY keeps the key's TTL.
_INCR = Script("""
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
if #v > 20 or not string.match(v, '^%-?%d+$') then return {2} end
local ok, r = pcall(redis.call, 'INCRBY', KEYS[1], ARGV[1])
if not ok then return {3} end
return {1, r}
""")


def hash_slot_tag(key: str) -> str:
    """What Redis Cluster hashes of ``key``: its first non-empty ``{...}``, else all of it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


class DataCore:
    """Keys, envelope and flows of one data-cache namespace.

    ``raw``: values are the serializer's bytes alone (no envelope: no tags, no stale
    window, no early refresh), so that a framework backend can store integers Redis
    can ``INCRBY``.
    """

    def __init__(self, settings: Settings, namespace: str = "", serializer: Any = None,
                 raw: bool = False) -> None:
        if namespace and (not _NAMESPACE.fullmatch(namespace) or namespace in RESERVED):
            raise ValueError(f"namespace {namespace!r}: lowercase letters, digits, '_' and "
                             f"'-', starting with a letter; not {', '.join(sorted(RESERVED))}")
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.namespace = namespace
        self.serializer: Serializer
        self.serializer, self.serializer_id = serializer_named(
            settings.data_serializer if serializer is None else serializer, settings.secret_key)
        self.raw = raw
        self.cluster = settings.target.kind == "cluster"
        self.lease_ms = max(1, int(settings.data_lock_timeout * 1000))
        self.lock_wait = settings.data_lock_wait
        self.compress_min = 0 if raw else settings.data_compress_min
        self.max_bytes = settings.data_max_value_bytes
        self._envelope_flag = "0" if raw else "1"
        self._digests: Memo[str, bytes] = Memo(4096)
        self._token_prefix = secrets.token_hex(8) + ":"
        self._tokens = itertools.count()

    # -- keys -------------------------------------------------------------------
    def key(self, name: str) -> str:
        if type(name) is not str:
            raise TypeError(f"a data cache key is a str, not {type(name).__name__}")
        if not name or name[0] == "}":
            # "{}..." would make Redis Cluster hash the whole key, so the value and its
            # lease would fall in different slots.
            raise ValueError(f"a data cache key is a non-empty str not starting with '}}', "
                             f"not {name[:40]!r}")
        return self.keys.data(name, self.namespace)

    def fill_key(self, name: str) -> str:
        return self.keys.data_fill(name, self.namespace)

    def tag_key(self, tag: str) -> str:
        if type(tag) is not str or not tag:
            raise TypeError(f"a tag is a non-empty str, not {tag!r}")
        return self.keys.data_tag(tag, self.namespace)

    def tag_digest(self, tag_key: str) -> bytes:
        found = self._digests.get(tag_key)
        if found is None:
            found = self._digests.put(tag_key, digest(tag_key).encode()[:DIGEST_SIZE])
        return found

    def token(self) -> str:
        """A token no other lease holder (in any process) has."""
        return self._token_prefix + str(next(self._tokens))

    def px(self, ttl: float | None) -> int:
        """A TTL in seconds (None: ``Settings.data_ttl``) as milliseconds, or ValueError."""
        if ttl is None:
            ttl = self.settings.data_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0 or (
                math.isinf(ttl)):
            raise ValueError(f"a TTL is a positive number of seconds, not {ttl!r}")
        return max(1, round(ttl * 1000))

    def stale_ms(self, stale: float) -> int:
        if isinstance(stale, bool) or not isinstance(stale, int | float) or not stale >= 0 or (
                math.isinf(stale)):
            raise ValueError(f"stale is a number of seconds >= 0, not {stale!r}")
        if stale and self.raw:
            raise ValueError("raw values have no stale window")
        return round(stale * 1000)

    # -- the envelope -----------------------------------------------------------
    def encode(self, value: Any, fresh_ms: int, stale_ms: int = 0,
               tag_keys: Sequence[str] = (), compute_ms: int = 0,
               now_ms: int | None = None) -> bytes:
        """The bytes stored for ``value``; TypeError when the serializer refuses it."""
        payload = self.serializer.dumps(value)
        if type(payload) is not bytes:
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise TypeError(f"{type(self.serializer).__name__}.dumps returned "
                                f"{type(payload).__name__}, not bytes")
            payload = bytes(payload)
        if self.raw:
            if tag_keys:
                raise ValueError("raw values carry no tags")
            return payload
        if len(tag_keys) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags per value")
        flags = self.serializer_id << 4
        if self.compress_min and len(payload) >= self.compress_min:
            packed = zlib.compress(payload)
            if len(packed) < len(payload):
                payload, flags = packed, flags | COMPRESSED
        if stale_ms:
            flags |= SOFT
        now = int(time.time() * 1000) if now_ms is None else now_ms
        head = HEAD.pack(MAGIC, flags, len(tag_keys), now + fresh_ms,
                         min(max(compute_ms, 0), _MAX_COMPUTE_MS))
        if tag_keys:
            head += b"".join(self.tag_digest(k) for k in tag_keys)
        return head + payload

    def decode(self, raw: bytes) -> Entry | None:
        """The stored value, or None (a miss: one WARNING per incident) when unreadable."""
        if self.raw:
            try:
                return Entry(self.serializer.loads(raw), 0, 0, False)
            except Exception as exc:
                self._unreadable(exc)
                return None
        if len(raw) < HEAD_SIZE or raw[0] != MAGIC:
            self._unreadable("not a value of this data cache")
            return None
        _, flags, count, fresh_until, compute = HEAD.unpack_from(raw)
        if flags >> 4 != self.serializer_id:
            self._unreadable("stored with another serializer")
            return None
        body = raw[HEAD_SIZE + DIGEST_SIZE * count:]
        try:
            if flags & COMPRESSED:
                body = zlib.decompress(body)
            value = self.serializer.loads(body)
        except Exception as exc:
            self._unreadable(exc)
            return None
        return Entry(value, fresh_until, compute, bool(flags & SOFT))

    def hot(self, raw: bytes) -> Any:
        """The hot path of a hit: the value of a plain fresh entry (no stale window), or
        :data:`MISS` for anything else (missing, soft, unreadable), which :meth:`decode`
        and :meth:`judge` then decide. No header tuple or Entry: this runs on every hit."""
        if self.raw:
            try:
                return self.serializer.loads(raw)
            except Exception:
                return MISS
        if len(raw) < HEAD_SIZE or raw[0] != MAGIC:
            return MISS
        flags = raw[1]
        if flags & SOFT or flags >> 4 != self.serializer_id:
            return MISS
        body = raw[HEAD_SIZE + DIGEST_SIZE * raw[2]:]
        try:
            if flags & COMPRESSED:
                body = zlib.decompress(body)
            return self.serializer.loads(body)
        except Exception:
            return MISS

    def _unreadable(self, why: object) -> None:
        log_incident("data-unreadable", "data cache: a stored value could not be read (%s); "
                     "treated as a miss and computed again", why)

    def too_large(self, data: bytes, name: str) -> bool:
        """Whether ``data`` is over ``data_max_value_bytes`` (logged once per incident)."""
        if len(data) <= self.max_bytes:
            return False
        log_incident("data-too-large", "data cache: a value of %d bytes for %r is over "
                     "REDIS_MIDDLEWARE_DATA_MAX_VALUE_BYTES (%d): returned, not stored",
                     len(data), name, self.max_bytes)
        return True

    @staticmethod
    def judge(entry: Entry, now_ms: float, early: float = 0.0, rand: float = 1.0
              ) -> Judgement:
        """``fresh``; ``stale`` (past its TTL, inside its stale window); or ``early``: fresh,
        but XFetch says refresh now (``early`` is its beta; ``rand`` uniform in (0, 1]).

        XFetch (Vattani et al., "Optimal Probabilistic Cache Stampede Prevention"): refresh
        when ``now - compute * beta * ln(rand) >= expiry``, so that callers refresh a hot
        value a little before it expires, the more likely the closer and the slower its
        loader, and hot keys never all expire at once.
        """
        if entry.soft and now_ms >= entry.fresh_until:
            return "stale"
        if early and entry.compute_ms and entry.fresh_until and (
                now_ms - entry.compute_ms * early * math.log(rand) >= entry.fresh_until):
            return "early"
        return "fresh"

    # -- flows: reading -----------------------------------------------------------
    def read_flow(self, name: str) -> Flow[bytes | None]:
        """The hot path: one GET."""
        (raw,) = yield (Call(("GET", self.key(name))),)
        return raw  # type: ignore[no-any-return]

    def claim_flow(self, name: str, token: str, now_ms: int | None = None
                   ) -> Flow[tuple[bytes | None, bool]]:
        """The value if fresh, else the fill lease if free: ``(value or None, ours)``."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        (reply,) = yield (_CLAIM([self.key(name), self.fill_key(name)],
                                 [token, self.lease_ms, now, self._envelope_flag]),)
        return reply[0] or None, bool(reply[1])

    def wait_flow(self, name: str, token: str, wait: float | None = None
                  ) -> PausingFlow[tuple[bytes | None, bool]]:
        """Another caller holds the lease: poll (5 ms, growing to 100 ms) until the value
        is there, the lease is free (then it is ours), or ``wait`` seconds passed
        (``(None, False)``: the caller loads it itself)."""
        deadline = time.monotonic() + (self.lock_wait if wait is None else wait)
        delay = 0.005
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, False
            yield Pause(min(delay, left))
            delay = min(delay * 1.5, 0.1)
            raw, ours = yield from self.claim_flow(name, token)
            if raw is not None or ours:
                return raw, ours

    def get_many_flow(self, names: Sequence[str]) -> Flow[list[bytes | None]]:
        """One round trip: MGET (GETs on a Cluster: the keys live in many slots)."""
        if not names:
            return []
        keys = [self.key(n) for n in names]
        if self.cluster:
            return list((yield tuple(Call(("GET", k)) for k in keys)))
        (values,) = yield (Call(("MGET", *keys)),)
        return list(values)

    def has_flow(self, name: str) -> Flow[bool]:
        (found,) = yield (Call(("EXISTS", self.key(name))),)
        return bool(found)

    def ttl_flow(self, name: str) -> Flow[float | None]:
        """Seconds left, or None when the key is missing."""
        (ms,) = yield (Call(("PTTL", self.key(name))),)
        return None if ms < 0 else ms / 1000

    # -- flows: writing -----------------------------------------------------------
    def _tag_ops(self, key: str, tag_keys: Iterable[str], px: int, now_ms: int
                 ) -> list[Call]:
        return [_TAG_ADD([t], [key, now_ms + px, now_ms, px]) for t in tag_keys]

    def store_flow(self, name: str, data: bytes, px: int, token: str | None = None,
                   tag_keys: Sequence[str] = (), *, nx: bool = False) -> Flow[bool]:
        """One round trip: the value (``px`` = TTL + stale window), its tags, and the
        release of the caller's lease (``token``). ``nx``: only if absent (``add``)."""
        key = self.key(name)
        if token is not None:
            ops = [_STORE([key, self.fill_key(name)], [data, px, token])]
        elif nx:
            ops = [Call(("SET", key, data, "PX", px, "NX"))]
        else:
            ops = [Call(("SET", key, data, "PX", px))]
        if tag_keys:
            ops += self._tag_ops(key, tag_keys, px, int(time.time() * 1000))
        replies = yield tuple(ops)
        return bool(replies[0])

    def store_many_flow(self, items: Sequence[tuple[str, bytes]], px: int,
                        tag_keys: Sequence[str] = ()) -> Flow[bool]:
        if not items:
            return True
        now = int(time.time() * 1000)
        ops: list[Call] = []
        for name, data in items:
            key = self.key(name)
            ops.append(Call(("SET", key, data, "PX", px)))
            ops += self._tag_ops(key, tag_keys, px, now)
        yield tuple(ops)
        return True

    def release_flow(self, lease_key: str, token: str) -> Flow[bool]:
        (freed,) = yield (_RELEASE([lease_key], [token]),)
        return bool(freed)

    def acquire_flow(self, lease_key: str, token: str, px: int) -> Flow[bool]:
        (taken,) = yield (Call(("SET", lease_key, token, "NX", "PX", px)),)
        return bool(taken)

    def renew_flow(self, lease_key: str, token: str, px: int) -> Flow[bool]:
        (renewed,) = yield (_RENEW([lease_key], [token, px]),)
        return bool(renewed)

    def lock_flow(self, lease_key: str, token: str, px: int, wait: float | None
                  ) -> PausingFlow[bool]:
        """Take a lock, polling (10 ms growing to 200 ms) for at most ``wait`` seconds
        (None: until it is free; 0: one try)."""
        deadline = None if wait is None else time.monotonic() + wait
        delay = 0.01
        while True:
            if (yield from self.acquire_flow(lease_key, token, px)):
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            yield Pause(delay if left is None else min(delay, left))
            delay = min(delay * 1.5, 0.2)

    def delete_flow(self, names: Sequence[str]) -> Flow[int]:
        """How many of ``names`` existed (one DEL; one per key on a Cluster)."""
        keys = [self.key(n) for n in names]
        if not keys:
            return 0
        if self.cluster:
            return sum(int(n) for n in (yield tuple(Call(("DEL", k)) for k in keys)))
        (count,) = yield (Call(("DEL", *keys)),)
        return int(count)

    def touch_flow(self, name: str, px: int) -> Flow[bool]:
        (done,) = yield (Call(("PEXPIRE", self.key(name), px)),)
        return bool(done)

    def incr_flow(self, name: str, delta: int) -> Flow[int]:
        """Raw mode: add ``delta`` to a stored integer, keeping its TTL. KeyError when
        missing, TypeError when not an integer, OverflowError out of 64-bit range."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta is an int, not {type(delta).__name__}")
        (reply,) = yield (_INCR([self.key(name)], [delta]),)
        status = int(reply[0])
        if status == 1:
            return int(reply[1])
        if status == 0:
            raise KeyError(name)
        if status == 2:
            raise TypeError(f"the value of {name!r} is not an integer")
        raise OverflowError(f"{name!r} would leave the 64-bit integer range")

    # -- tags and clearing ----------------------------------------------------------
    def invalidate_flow(self, tags: Iterable[str]) -> Flow[int]:
        """Two round trips: take each tag's members (and drop the tag), then delete the
        members whose envelope still names one of the tags (per slot on a Cluster)."""
        tag_keys = sorted({self.tag_key(t) for t in tags})
        if not tag_keys:
            return 0
        replies = yield tuple(_TAG_POP([k]) for k in tag_keys)
        members = sorted({m.decode() if isinstance(m, bytes) else str(m)
                          for reply in replies for m in reply})
        if not members:
            return 0
        digests = [self.tag_digest(k) for k in tag_keys]
        counts = yield tuple(_DROP_TAGGED(group, digests) for group in self._groups(members))
        return sum(int(n) for n in counts)

    def _groups(self, keys: Sequence[str]) -> list[list[str]]:
        """Keys a script may touch together: any on one server, one slot on a Cluster."""
        if not self.cluster:
            return [list(keys[i:i + _CHUNK]) for i in range(0, len(keys), _CHUNK)]
        slots: dict[str, list[str]] = {}
        for key in keys:
            slots.setdefault(hash_slot_tag(key), []).append(key)
        return [group[i:i + _CHUNK] for group in slots.values()
                for i in range(0, len(group), _CHUNK)]

    def clear_flow(self) -> Flow[int]:
        """SCAN + UNLINK of this namespace's values, leases and tags on one server (a
        Cluster scans each primary: ``DataCache.clear``). Never FLUSHDB: sessions, rate
        limits and other namespaces stay."""
        removed = 0
        for pattern in self.keys.data_patterns(self.namespace):
            cursor = 0
            while True:
                (reply,) = yield (Call(("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)),)
                cursor, found = int(reply[0]), list(reply[1])
                if found:
                    (count,) = yield (Call(("UNLINK", *found)),)
                    removed += int(count)
                if cursor == 0:
                    break
        return removed
