"""The data cache's value envelope: what is stored for a value, and how a hit reads it.

A 15-byte header, the tags' digests, then the payload::

    magic 0xD1 | flags | tag count | fresh until (ms, u64) | loader ms (u32) | 8 B per tag

flags: bit 0 compressed (zlib), bit 1 *soft* (stored with a stale window: readers judge
freshness by the header, Redis keeps the value longer), bits 4-7 the serializer's id.
A hit is one ``GET``; the header carries what decides a refresh (the expiry and the
loader's time, for XFetch) and what lets a tag's invalidation spare a value that was
stored again without that tag. In raw mode a value is the serializer's bytes alone, but
for a 64-bit integer, stored as its decimal digits whatever the serializer, so that
Redis can ``INCRBY`` it (msgpack would write 52 as the byte ``4``).
"""

from __future__ import annotations

import math
import re
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from ..._memo import Memo
from ...config.settings import Settings
from ...keys import digest
from ..incidents import log_incident
from .serializers import Serializer, serializer_named

__all__ = ["FRESH_UNTIL", "HEAD_SIZE", "MAGIC", "MISS", "SOFT", "Entry", "Envelope", "Judgement"]

MAGIC = 0xD1
HEAD = struct.Struct(">BBBQI")
HEAD_SIZE = HEAD.size  # 15
FRESH_UNTIL = struct.Struct(">Q")  # the header's bytes 3-10 alone (TOUCH rewrites them)
COMPRESSED = 0x01
SOFT = 0x02
DIGEST_SIZE = 8
MAX_TAGS = 255
_MAX_COMPUTE_MS = 2**32 - 1
_INT64 = (-(2**63), 2**63 - 1)
_INT_START = frozenset(b"-0123456789")
_INT = re.compile(rb"-?[0-9]+")  # what the INCR script takes for an integer (20 bytes at most)


def _digits(data: bytes) -> bool:
    return len(data) <= 20 and bool(data) and data[0] in _INT_START and (
        _INT.fullmatch(data) is not None)

Judgement = Literal["fresh", "early", "stale"]
MISS: Any = type("Miss", (), {"__repr__": lambda self: "MISS"})()  # not a stored value


class Entry(NamedTuple):
    """A decoded value and what its envelope said about it."""

    value: Any
    fresh_until: int  # ms since the epoch (0 in raw mode: Redis's TTL alone decides)
    compute_ms: int  # how long the loader took (XFetch)
    soft: bool  # stored with a stale window


class Envelope:
    """Encodes values for one data-cache namespace and decodes what Redis holds.

    ``raw``: values are the serializer's bytes alone (no envelope: no tags, no stale
    window, no early refresh), so that a framework backend can store integers Redis
    can ``INCRBY``.
    """

    def __init__(self, settings: Settings, serializer: Any = None, raw: bool = False) -> None:
        self.serializer: Serializer
        self.serializer, self.serializer_id = serializer_named(
            settings.data_serializer if serializer is None else serializer, settings.secret_key)
        self.raw = raw
        self.compress_min = 0 if raw else settings.data_compress_min
        self.max_bytes = settings.data_max_value_bytes
        self._digests: Memo[str, bytes] = Memo(4096)
        # The head of a plain value as encode() writes it (uncompressed, no stale window,
        # no tags): the three bytes a hit compares before decoding the rest (hot()).
        self._plain_head = bytes((MAGIC, self.serializer_id << 4, 0))

    def tag_digest(self, tag_key: str) -> bytes:
        found = self._digests.get(tag_key)
        if found is None:
            found = self._digests.put(tag_key, digest(tag_key).encode()[:DIGEST_SIZE])
        return found

    def encode(self, value: Any, fresh_ms: int, stale_ms: int = 0,
               tag_keys: Sequence[str] = (), compute_ms: int = 0,
               now_ms: int | None = None) -> bytes:
        """The bytes stored for ``value``; TypeError when the serializer refuses it."""
        if self.raw:
            if tag_keys:
                raise ValueError("raw values carry no tags")
            return self._raw_bytes(value)
        payload = self._payload(value)
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

    def _payload(self, value: Any) -> bytes:
        payload = self.serializer.dumps(value)
        if type(payload) is not bytes:
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise TypeError(f"{type(self.serializer).__name__}.dumps returned "
                                f"{type(payload).__name__}, not bytes")
            payload = bytes(payload)
        return payload

    def _raw_bytes(self, value: Any) -> bytes:
        if type(value) is int and _INT64[0] <= value <= _INT64[1]:
            return b"%d" % value
        payload = self._payload(value)
        # Digits read back as the integer they spell: right for a larger int written as
        # its digits (JSON), ambiguous for anything else (a serializer of the user's).
        if _digits(payload) and not (type(value) is int and payload == b"%d" % value):
            raise TypeError(f"{type(self.serializer).__name__} writes this "
                            f"{type(value).__name__} as digits, which this backend reads "
                            "as an integer: it cannot be told apart")
        return payload

    def _raw_value(self, raw: bytes) -> Any:
        return int(raw) if _digits(raw) else self.serializer.loads(raw)

    def decode(self, raw: bytes) -> Entry | None:
        """The stored value, or None (a miss: one WARNING per incident) when unreadable."""
        if self.raw:
            try:
                return Entry(self._raw_value(raw), 0, 0, False)
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
            try:  # _raw_value, inline: a Django or Flask-Caching hit runs this
                if len(raw) <= 20 and _digits(raw):
                    return int(raw)
                return self.serializer.loads(raw)
            except Exception:
                return MISS
        if raw[:3] == self._plain_head and len(raw) >= HEAD_SIZE:  # the usual hit
            try:
                return self.serializer.loads(raw[HEAD_SIZE:])
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

    def usable(self, raw: bytes | None) -> Entry | None:
        """A stored value a plain read may return: readable and inside its TTL."""
        if raw is None:
            return None
        entry = self.decode(raw)
        if entry is None or (entry.soft and time.time() * 1000 >= entry.fresh_until):
            return None
        return entry

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
