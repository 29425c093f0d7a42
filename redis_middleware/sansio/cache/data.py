"""The data cache (cache-aside for function results), decided without I/O.

Layout (``docs/data-cache.md``), for a rendered key ``K`` in namespace ``N`` (empty for
``DataCache`` itself; ``django``, ``flask`` for the framework backends):

- ``<prefix>:data:[N:]{K}``: the value, in an envelope (``dataenvelope.py``) or, in raw
  mode, the serializer's bytes alone; its Redis TTL is the value's TTL plus its stale
  window;
- ``<prefix>:data:fill:[N:]{K}``: the single-flight lease of ``K`` (``SET NX PX``
  with a random token), in ``K``'s slot, so that one script takes it while reading the
  value and another stores the value and frees it;
- ``<prefix>:data:tag:[N:]{T}``: a ZSET of the value keys stored with tag ``T``, scored
  by their expiry (pruned as it is written, so it stays as small as the live values);
- ``<prefix>:data:lock:{name}``: a lock of ``DataCache.lock``.

The room: ``data`` (this: keys, a call's options, the Redis flows), ``dataenvelope``
(values as bytes), ``datascripts`` (Lua), ``datacalls`` (what each plain ``DataCache``
method decides), ``datafill`` (``get_or_set`` as one flow), ``datakeys`` (keys of a
decorated function's calls), ``serializers``.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeAlias

from ...config.settings import Settings
from ...errors import RedisCommandError
from ...keys import KeySpace
from ..flow import Call, Flow, Pause, PausingFlow
from . import datascripts as lua
from .dataenvelope import FRESH_UNTIL, HEAD_SIZE, MAGIC, MISS, SOFT, Entry, Envelope, Judgement

__all__ = ["HEAD_SIZE", "MAX_TTL", "MISS", "DataCore", "Entry", "Judgement", "Seconds",
           "as_seconds", "hash_slot_tag", "tag_list"]

_NAMESPACE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED = frozenset({"fill", "lock", "tag"})  # the bookkeeping words after data:
_CHUNK = 500  # keys per script call or DEL when deleting many
MAX_TTL = 100 * 365 * 86400  # seconds: far inside what Redis and the envelope can count
Seconds: TypeAlias = "float | timedelta"  # a TTL, a stale window, a lock's timeout


def as_seconds(value: Any) -> Any:
    """A ``timedelta`` as its seconds (as cashews and dogpile.cache take them); anything
    else unchanged, for the caller's own check."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def hash_slot_tag(key: str) -> str:
    """What Redis Cluster hashes of ``key``: its first non-empty ``{...}``, else all of it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def _bad_name(name: object) -> Exception:
    if type(name) is not str:
        return TypeError(f"a data cache key is a str, not {type(name).__name__}")
    # "{}..." would make Redis Cluster hash the whole key, so the value and its lease
    # would fall in different slots.
    return ValueError(f"a data cache key is a non-empty str not starting with '}}', "
                      f"not {name[:40]!r}")


def tag_list(tags: Iterable[str] | str | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    return list(tags)


class DataCore(Envelope):
    """Keys, envelope and flows of one data-cache namespace (``raw``: see
    :class:`Envelope`)."""

    def __init__(self, settings: Settings, namespace: str = "", serializer: Any = None,
                 raw: bool = False) -> None:
        if namespace and (not _NAMESPACE.fullmatch(namespace) or namespace in RESERVED):
            raise ValueError(f"namespace {namespace!r}: lowercase letters, digits, '_' and "
                             f"'-', starting with a letter; not {', '.join(sorted(RESERVED))}")
        super().__init__(settings, serializer, raw)
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.namespace = namespace
        self.cluster = settings.target.kind == "cluster"
        self.lease_ms = max(1, int(settings.data_lock_timeout * 1000))
        self.lock_wait = settings.data_lock_wait
        self._envelope_flag = "0" if raw else "1"
        self._token_prefix = secrets.token_hex(8) + ":"
        self._tokens = itertools.count()
        # KeySpace.data(name, namespace) is this head, the name and "}": every hit builds
        # its key, so it is joined here without the call.
        self._head = self.keys.data("", namespace)[:-1]

    # -- keys -------------------------------------------------------------------
    def key(self, name: str) -> str:
        if type(name) is not str or not name or name[0] == "}":
            raise _bad_name(name)
        return self._head + name + "}"

    def fill_key(self, name: str) -> str:
        return self.keys.data_fill(name, self.namespace)

    def tag_key(self, tag: str) -> str:
        if type(tag) is not str or not tag:
            raise TypeError(f"a tag is a non-empty str, not {tag!r}")
        return self.keys.data_tag(tag, self.namespace)

    def tag_keys(self, tags: Iterable[str] | str | None) -> list[str]:
        names = tag_list(tags)
        if names and self.raw:
            raise ValueError("raw values carry no tags")
        return [self.tag_key(t) for t in names]

    def token(self) -> str:
        """A token no other lease holder (in any process) has."""
        return self._token_prefix + str(next(self._tokens))

    # -- options ---------------------------------------------------------------------
    def px(self, ttl: Seconds | None) -> int:
        """A TTL in seconds or a ``timedelta`` (None: ``Settings.data_ttl``) as
        milliseconds, or ValueError."""
        ttl = self.settings.data_ttl if ttl is None else as_seconds(ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (
                0 < ttl <= MAX_TTL):
            raise ValueError(f"a TTL is a positive number of seconds or a timedelta (100 "
                             f"years at most), not {ttl!r}")
        return max(1, round(ttl * 1000))

    def stale_ms(self, stale: Seconds) -> int:
        stale = as_seconds(stale)
        if isinstance(stale, bool) or not isinstance(stale, int | float) or not (
                0 <= stale <= MAX_TTL):
            raise ValueError(f"stale is a number of seconds >= 0 (100 years at most), "
                             f"not {stale!r}")
        if stale and self.raw:
            raise ValueError("raw values have no stale window")
        return round(stale * 1000)

    # -- flows: reading -----------------------------------------------------------
    def read_command(self, name: str) -> tuple[str, str]:
        """The hot path: one GET (the backends send it alone, without a flow); ``key``
        inline."""
        if type(name) is not str or not name or name[0] == "}":
            raise _bad_name(name)
        return ("GET", self._head + name + "}")

    def read_flow(self, name: str) -> Flow[bytes | None]:
        """:meth:`read_command` as a flow."""
        (raw,) = yield (Call(self.read_command(name)),)
        return raw  # type: ignore[no-any-return]

    def claim_flow(self, name: str, token: str, now_ms: int | None = None
                   ) -> Flow[tuple[bytes | None, bool]]:
        """The value if fresh, else the fill lease if free: ``(value or None, ours)``."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        (reply,) = yield (lua.CLAIM([self.key(name), self.fill_key(name)],
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
        """Whether a plain read would find ``name``: a value past its TTL, inside its stale
        window, is not there (the header alone is read, whatever the value's size)."""
        if self.raw:
            (found,) = yield (Call(("EXISTS", self.key(name))),)
            return bool(found)
        (head,) = yield (Call(("GETRANGE", self.key(name), 0, HEAD_SIZE - 1)),)
        if not head:
            return False
        if len(head) < HEAD_SIZE or head[0] != MAGIC or not head[1] & SOFT:
            return True
        return bool(FRESH_UNTIL.unpack_from(head, 3)[0] > time.time() * 1000)

    def ttl_flow(self, name: str) -> Flow[float | None]:
        """Seconds left, or None when the key is missing."""
        (ms,) = yield (Call(("PTTL", self.key(name))),)
        return None if ms < 0 else ms / 1000

    # -- flows: writing -----------------------------------------------------------
    def _tag_ops(self, key: str, tag_keys: Iterable[str], px: int, now_ms: int
                 ) -> list[Call]:
        return [lua.TAG_ADD([t], [key, now_ms + px, now_ms, px]) for t in tag_keys]

    def store_flow(self, name: str, data: bytes, px: int, token: str | None = None,
                   tag_keys: Sequence[str] = (), *, nx: bool = False) -> Flow[bool]:
        """One round trip: the value (``px`` = TTL + stale window), its tags, and the
        release of the caller's lease (``token``). ``nx``: only if absent (``add``)."""
        key = self.key(name)
        if token is not None:
            ops = [lua.STORE([key, self.fill_key(name)], [data, px, token])]
        elif nx and self.raw:
            ops = [Call(("SET", key, data, "PX", px, "NX"))]
        elif nx:  # a value in its stale window counts as absent
            ops = [lua.ADD([key], [data, px, int(time.time() * 1000)])]
        else:
            ops = [Call(("SET", key, data, "PX", px))]
        if not tag_keys:
            replies = yield tuple(ops)
            return bool(replies[0])
        ops += self._tag_ops(key, tag_keys, px, int(time.time() * 1000))
        try:
            replies = yield tuple(ops)
        except RedisCommandError as exc:
            yield from self._untag_failed(exc, [(key, 0, len(ops))])
            raise
        return bool(replies[0])

    def _untag_failed(self, exc: RedisCommandError, spans: Sequence[tuple[str, int, int]]
                      ) -> Flow[None]:
        """A round trip that stored values with their tags failed in part (a refused
        script, OOM): a value stored without all its tags goes, for an invalidation of a
        missing tag could not reach it. ``spans``: each value's key, and where its SET and
        its tag ops sit among the replies."""
        replies = exc.replies or []
        gone = [key for key, start, end in spans
                if start < len(replies) and not isinstance(replies[start], BaseException)
                and any(isinstance(r, BaseException) for r in replies[start + 1:end])]
        if gone:
            yield tuple(Call(("DEL", k)) for k in gone)

    def store_many_flow(self, items: Sequence[tuple[str, bytes]], px: int,
                        tag_keys: Sequence[str] = ()) -> Flow[bool]:
        if not items:
            return True
        now = int(time.time() * 1000)
        ops: list[Call] = []
        spans: list[tuple[str, int, int]] = []
        for name, data in items:
            key = self.key(name)
            start = len(ops)
            ops.append(Call(("SET", key, data, "PX", px)))
            ops += self._tag_ops(key, tag_keys, px, now)
            spans.append((key, start, len(ops)))
        try:
            yield tuple(ops)
        except RedisCommandError as exc:
            if tag_keys:
                yield from self._untag_failed(exc, spans)
            raise
        return True

    def refuse_flow(self, names: Sequence[str], token: str | None = None) -> Flow[None]:
        """A write refused (over the size cap): what an older write left under its keys
        goes too, so that no reader gets the value it meant to replace (memcached drops
        it the same way). One round trip, with the caller's lease of ``names[0]`` freed."""
        ops = [Call(("DEL", self.key(n))) for n in names]
        if token is not None:
            ops.append(lua.RELEASE([self.fill_key(names[0])], [token]))
        if ops:
            yield tuple(ops)

    def release_flow(self, lease_key: str, token: str) -> Flow[bool]:
        (freed,) = yield (lua.RELEASE([lease_key], [token]),)
        return bool(freed)

    def acquire_flow(self, lease_key: str, token: str, px: int) -> Flow[bool]:
        (taken,) = yield (Call(("SET", lease_key, token, "NX", "PX", px)),)
        return bool(taken)

    def renew_flow(self, lease_key: str, token: str, px: int) -> Flow[bool]:
        (renewed,) = yield (lua.RENEW([lease_key], [token, px]),)
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
        """A new TTL; False when missing, or when it would lengthen a tagged value past
        what its tags were kept for (raw values carry no tags: a plain PEXPIRE)."""
        command = Call(("PEXPIRE", self.key(name), px)) if self.raw else lua.TOUCH(
            [self.key(name)], [px, FRESH_UNTIL.pack(int(time.time() * 1000) + px)])
        (done,) = yield (command,)
        return bool(done)

    def incr_flow(self, name: str, delta: int) -> Flow[int]:
        """Raw mode: add ``delta`` to a stored integer, keeping its TTL. KeyError when
        missing, TypeError when not an integer, OverflowError out of 64-bit range."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta is an int, not {type(delta).__name__}")
        (reply,) = yield (lua.INCR([self.key(name)], [delta]),)
        status = int(reply[0])
        if status == 1:
            return int(reply[1])
        if status == 0:
            raise KeyError(name)
        if status == 2:
            raise TypeError(f"the value of {name!r} is not an integer")
        raise OverflowError(f"{name!r} would leave the 64-bit integer range")

    # -- tags and clearing ----------------------------------------------------------
    def invalidate_flow(self, tags: Iterable[str],
                        dropping: Callable[[Sequence[str]], None] | None = None) -> Flow[int]:
        """Two round trips: take each tag's members (and drop the tag), then delete the
        members whose envelope still names one of the tags (per slot on a Cluster).
        ``dropping(keys)`` is told the members before they are deleted and after (the
        near cache forgets them, as around this process's other writes)."""
        tag_keys = sorted({self.tag_key(t) for t in tags})
        if not tag_keys:
            return 0
        replies = yield tuple(lua.TAG_POP([k]) for k in tag_keys)
        members = sorted({m.decode() if isinstance(m, bytes) else str(m)
                          for reply in replies for m in reply})
        if not members:
            return 0
        digests = [self.tag_digest(k) for k in tag_keys]
        if dropping is not None:
            dropping(members)
        try:
            counts = yield tuple(lua.DROP_TAGGED(group, digests)
                                 for group in self._groups(members))
        finally:
            if dropping is not None:
                dropping(members)
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
