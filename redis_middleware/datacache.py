"""``DataCache``: cache-aside for function results, sync and async, on the shared Redis.

Example::

    from redis_middleware import DataCache

    cache = DataCache(settings)

    @cache.cached(ttl=3600, key="user:{user_id}:profile", tags=["user:{user_id}"])
    def load_profile(user_id: int) -> dict: ...

    cache.invalidate(tags=["user:42"])

The decisions (keys, the value envelope, the scripts, when to refresh) are in
``sansio/datacache.py``; this module runs them on the process's Redis connections and
keeps what lives in the process: who is already loading a key (threads share one
event, tasks one future per event loop) and background refreshes. Leases and locks
that renew themselves while held: ``_datalock.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar, cast, overload

from ._datalock import ALock, Lock, LockNotAcquired, arenew, renewer
from ._memo import Memo
from ._redis.connections import connections_for
from ._tasks import Every, detach, finish, stop_tasks
from .config.settings import Settings
from .errors import RedisMiddlewareError, RedisUnavailableError
from .sansio import metrics
from .sansio.cache.data import MISS, DataCore, Entry
from .sansio.cache.datakeys import Binder, DefaultKey, KeyTemplate
from .sansio.flow import Delegate, PausingFlow
from .sansio.incidents import log_failure, log_incident

__all__ = ["ALock", "DataCache", "Lock", "LockNotAcquired"]

logger = logging.getLogger("redis_middleware")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_RETRY = object()  # a leader gave up without a result (cancelled): followers try again
_REFRESH_WORKERS = 4


class _Policy(NamedTuple):
    fresh_ms: int
    stale_ms: int
    early: float
    label: str


def _tag_list(tags: Iterable[str] | str | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    return list(tags)


_NUMBERS = (int, float, type(None))
_EARLY = (int, float, bool)


def _no_tags() -> Sequence[str]:
    return ()


def _report(event: str, label: str, seconds: float = 0.0) -> None:
    if metrics.hook is not None:
        metrics.hook.data(event, label, seconds)


def _early(early: float | bool) -> float:
    value = 1.0 if early is True else float(early)
    if not value >= 0 or value > 100:
        raise ValueError(f"early is XFetch's beta, a number in [0, 100] (1 is usual), "
                         f"not {early!r}")
    return value


def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None))  # noqa: B004 (an object with async __call__)


_refresher: tuple[int, ThreadPoolExecutor] | None = None
_refresher_lock = threading.Lock()


def _refresh_pool() -> ThreadPoolExecutor:
    """The threads that refresh stale values for sync callers (one pool per process)."""
    global _refresher
    pid = os.getpid()
    if _refresher is None or _refresher[0] != pid:  # a forked child needs its own threads
        with _refresher_lock:
            if _refresher is None or _refresher[0] != pid:
                _refresher = (pid, ThreadPoolExecutor(
                    _REFRESH_WORKERS, thread_name_prefix="redis-middleware-data-refresh"))
    return _refresher[1]


class _Flight:
    """One key being loaded by a thread of this process; the others wait on ``done``."""

    __slots__ = ("done", "error", "stored")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stored: Any = _RETRY  # the encoded value (followers decode their own copy)
        self.error: BaseException | None = None


class DataCache:
    """Cache-aside for function results: sync methods, and ``a``-prefixed async twins.

    ``settings`` (default ``Settings.from_env()``) gives Redis, the key prefix and the
    ``data_*`` settings. Keys live under ``<prefix>:data:``; every key carries a TTL.

    - ``namespace``: a word of lowercase letters (``django``, ``flask``) giving these
      values keys of their own (``<prefix>:data:<namespace>:{key}``), cleared apart.
    - ``serializer``: overrides ``Settings.data_serializer`` (``"json"``, ``"msgpack"``,
      ``"pickle"`` or an object with ``dumps``/``loads``).
    - ``raw``: store the serializer's bytes alone, without the envelope (no tags, stale
      window or early refresh): what a framework backend needs for ``incr``.

    When Redis is down or failing, nothing is raised: loaders run and their values are
    returned, reads miss, writes return False; one WARNING per incident. Errors of your
    loaders, and ``TypeError`` for values the serializer cannot store, do propagate.
    """

    def __init__(self, settings: Settings | None = None, *, namespace: str = "",
                 serializer: Any = None, raw: bool = False) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.core = DataCore(self.settings, namespace, serializer, raw)
        self.redis = connections_for(self.settings)
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._aflights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = (
            weakref.WeakKeyDictionary())
        self._reads: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, list[asyncio.Future[Any]]]] = (
            weakref.WeakKeyDictionary())
        self._last_reads: tuple[weakref.ref[asyncio.AbstractEventLoop],
                                dict[str, list[asyncio.Future[Any]]]] | None = None
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._policies: Memo[tuple[Any, ...], _Policy] = Memo(256)

    def __repr__(self) -> str:
        ns = f", namespace={self.core.namespace!r}" if self.core.namespace else ""
        return f"<DataCache {self.redis.name} prefix={self.settings.key_prefix!r}{ns}>"

    # -- helpers ----------------------------------------------------------------------
    def _failed(self, exc: RedisMiddlewareError) -> None:
        log_failure("data", "data cache bypassed: Redis refused a command (%s)", exc)

    def _quietly(self, flow: PausingFlow[T], default: T) -> T:
        try:
            return self.redis.run(flow)
        except RedisMiddlewareError as exc:
            self._failed(exc)
            return default

    async def _aquietly(self, flow: PausingFlow[T], default: T) -> T:
        try:
            return await self.redis.arun(flow)
        except RedisMiddlewareError as exc:
            self._failed(exc)
            return default

    def _policy(self, ttl: float | None, stale: float, early: float | bool, label: str
                ) -> _Policy:
        """The validated options of a call (remembered: get_or_set pays this per hit)."""
        memo = (ttl, stale, early, label)
        plain = type(ttl) in _NUMBERS and type(stale) in _NUMBERS and type(early) in _EARLY
        found = self._policies.get(memo) if plain else None  # (True == 1: bools not here)
        if found is None:
            found = _Policy(self.core.px(ttl), self.core.stale_ms(stale), _early(early), label)
            if plain:
                self._policies.put(memo, found)
        return found

    def _tag_keys(self, tags: Iterable[str] | str | None) -> list[str]:
        names = _tag_list(tags)
        if names and self.core.raw:
            raise ValueError("raw values carry no tags")
        return [self.core.tag_key(t) for t in names]

    def _encode_many(self, mapping: Mapping[str, Any], px: int, tag_keys: list[str]
                     ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        items: list[tuple[str, bytes]] = []
        refused: list[tuple[str, bytes]] = []
        for key, value in mapping.items():
            data = self.core.encode(value, px, 0, tag_keys)
            (refused if self.core.too_large(data, key) else items).append((key, data))
        return items, refused

    def _usable(self, raw: bytes | None) -> Entry | None:
        """A stored value a plain read may return: readable and inside its TTL."""
        if raw is None:
            return None
        entry = self.core.decode(raw)
        if entry is None or (entry.soft and time.time() * 1000 >= entry.fresh_until):
            return None
        return entry

    def _verdict(self, raw: bytes | None, policy: _Policy) -> tuple[Entry, str] | None:
        """A stored value and ``fresh``, ``stale`` or ``early`` (both: serve it and refresh
        in the background); None for a miss."""
        entry = None if raw is None else self.core.decode(raw)
        if entry is None:
            return None
        verdict = self.core.judge(entry, time.time() * 1000, policy.early,
                                  1.0 - random.random())
        if verdict == "stale" and not policy.stale_ms:
            return None  # stored with a stale window this caller does not accept
        return entry, verdict

    # -- plain reads and writes: sync ----------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` (also when Redis fails)."""
        try:
            raw = self.redis.run(self.core.read_flow(key))
        except RedisMiddlewareError as exc:
            self._failed(exc)
            _report("bypass", "get")
            return default
        entry = self._usable(raw)
        _report("miss" if entry is None else "hit", "get")
        return default if entry is None else entry.value

    def set(self, key: str, value: Any, ttl: float | None = None, *,
            tags: Iterable[str] | str | None = None, stale: float = 0) -> bool:
        """Store ``value`` for ``ttl`` seconds (default ``Settings.data_ttl``) with
        ``tags``; False when it was not stored (Redis failed, or over the size cap)."""
        px, stale_ms = self.core.px(ttl), self.core.stale_ms(stale)
        tag_keys = self._tag_keys(tags)
        data = self.core.encode(value, px, stale_ms, tag_keys)
        if self.core.too_large(data, key):
            return False
        return self._quietly(self.core.store_flow(key, data, px + stale_ms, None, tag_keys),
                             False)

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds nothing; whether it did."""
        px = self.core.px(ttl)
        data = self.core.encode(value, px)
        if self.core.too_large(data, key):
            return False
        return self._quietly(self.core.store_flow(key, data, px, nx=True), False)

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        return bool(self._quietly(self.core.delete_flow([key]), 0))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys`` (those found), in one round trip."""
        names = list(keys)
        raws = self._quietly(self.core.get_many_flow(names), [])
        found = {}
        for name, raw in zip(names, raws, strict=False):
            entry = self._usable(raw)
            if entry is not None:
                found[name] = entry.value
        return found

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None, *,
                 tags: Iterable[str] | str | None = None) -> list[str]:
        """Store every item in one round trip; the keys that were *not* stored (all of
        them when Redis failed; an empty list on success)."""
        px = self.core.px(ttl)
        tag_keys = self._tag_keys(tags)
        items, refused = self._encode_many(mapping, px, tag_keys)
        if not self._quietly(self.core.store_many_flow(items, px, tag_keys), False):
            return list(mapping)
        return [key for key, _ in refused]

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one round trip; how many were there."""
        return self._quietly(self.core.delete_flow(list(keys)), 0)

    def has(self, key: str) -> bool:
        return self._quietly(self.core.has_flow(key), False)

    def touch(self, key: str, ttl: float | None = None) -> bool:
        """Give ``key`` a new TTL; whether it exists. (A value with a stale window keeps
        the freshness it was stored with.)"""
        return self._quietly(self.core.touch_flow(key, self.core.px(ttl)), False)

    def ttl(self, key: str) -> float | None:
        """Seconds ``key`` stays in Redis, or None when it is missing (or Redis fails)."""
        return self._quietly(self.core.ttl_flow(key), None)

    def incr(self, key: str, delta: int = 1) -> int:
        """Raw mode: add ``delta`` to a stored integer (atomic, TTL kept); the new value.
        ``ValueError`` when the key is missing (or Redis fails), ``TypeError`` when its
        value is no integer."""
        try:
            return self.redis.run(self.core.incr_flow(key, delta))
        except KeyError:
            raise ValueError(f"Key {key!r} not found") from None
        except RedisMiddlewareError as exc:
            self._failed(exc)
            raise ValueError(f"Key {key!r} not found: Redis is unavailable") from exc

    def decr(self, key: str, delta: int = 1) -> int:
        return self.incr(key, -delta)

    def invalidate(self, *, tags: Iterable[str] | str) -> int:
        """Remove every value stored with any of ``tags`` (in every process); how many."""
        return self._quietly(self.core.invalidate_flow(_tag_list(tags)), 0)

    def clear(self) -> int:
        """Remove every value (and tag) of this cache's namespace, by SCAN on each
        primary: never FLUSHDB, so sessions and other namespaces stay. How many keys."""
        return self._quietly(self._clear_flow(), 0)

    def _clear_flow(self) -> PausingFlow[int]:
        if not self.core.cluster:
            return (yield from self.core.clear_flow())
        patterns = self.core.keys.data_patterns(self.core.namespace)
        conns = self.redis

        def call() -> int:
            return _cluster_clear(conns.sync_client(), patterns)

        async def acall() -> int:
            return await _acluster_clear(conns.async_client(), patterns)

        return cast(int, (yield Delegate(call, acall)))

    # -- plain reads and writes: async ---------------------------------------------------
    async def aget(self, key: str, default: Any = None) -> Any:
        try:
            raw = await self.redis.arun(self.core.read_flow(key))
        except RedisMiddlewareError as exc:
            self._failed(exc)
            _report("bypass", "get")
            return default
        entry = self._usable(raw)
        _report("miss" if entry is None else "hit", "get")
        return default if entry is None else entry.value

    async def aset(self, key: str, value: Any, ttl: float | None = None, *,
                   tags: Iterable[str] | str | None = None, stale: float = 0) -> bool:
        px, stale_ms = self.core.px(ttl), self.core.stale_ms(stale)
        tag_keys = self._tag_keys(tags)
        data = self.core.encode(value, px, stale_ms, tag_keys)
        if self.core.too_large(data, key):
            return False
        return await self._aquietly(
            self.core.store_flow(key, data, px + stale_ms, None, tag_keys), False)

    async def aadd(self, key: str, value: Any, ttl: float | None = None) -> bool:
        px = self.core.px(ttl)
        data = self.core.encode(value, px)
        if self.core.too_large(data, key):
            return False
        return await self._aquietly(self.core.store_flow(key, data, px, nx=True), False)

    async def adelete(self, key: str) -> bool:
        return bool(await self._aquietly(self.core.delete_flow([key]), 0))

    async def aget_many(self, keys: Iterable[str]) -> dict[str, Any]:
        names = list(keys)
        raws = await self._aquietly(self.core.get_many_flow(names), [])
        found = {}
        for name, raw in zip(names, raws, strict=False):
            entry = self._usable(raw)
            if entry is not None:
                found[name] = entry.value
        return found

    async def aset_many(self, mapping: Mapping[str, Any], ttl: float | None = None, *,
                        tags: Iterable[str] | str | None = None) -> list[str]:
        px = self.core.px(ttl)
        tag_keys = self._tag_keys(tags)
        items, refused = self._encode_many(mapping, px, tag_keys)
        if not await self._aquietly(self.core.store_many_flow(items, px, tag_keys), False):
            return list(mapping)
        return [key for key, _ in refused]

    async def adelete_many(self, keys: Iterable[str]) -> int:
        return await self._aquietly(self.core.delete_flow(list(keys)), 0)

    async def ahas(self, key: str) -> bool:
        return await self._aquietly(self.core.has_flow(key), False)

    async def atouch(self, key: str, ttl: float | None = None) -> bool:
        return await self._aquietly(self.core.touch_flow(key, self.core.px(ttl)), False)

    async def attl(self, key: str) -> float | None:
        return await self._aquietly(self.core.ttl_flow(key), None)

    async def aincr(self, key: str, delta: int = 1) -> int:
        try:
            return await self.redis.arun(self.core.incr_flow(key, delta))
        except KeyError:
            raise ValueError(f"Key {key!r} not found") from None
        except RedisMiddlewareError as exc:
            self._failed(exc)
            raise ValueError(f"Key {key!r} not found: Redis is unavailable") from exc

    async def adecr(self, key: str, delta: int = 1) -> int:
        return await self.aincr(key, -delta)

    async def ainvalidate(self, *, tags: Iterable[str] | str) -> int:
        return await self._aquietly(self.core.invalidate_flow(_tag_list(tags)), 0)

    async def aclear(self) -> int:
        return await self._aquietly(self._clear_flow(), 0)

    # -- get_or_set and the decorator: sync ----------------------------------------------
    def get_or_set(self, key: str, loader: Callable[[], Any], ttl: float | None = None, *,
                   tags: Iterable[str] | str | None = None, stale: float = 0,
                   early: float | bool = 0, name: str | None = None) -> Any:
        """The value of ``key``; on a miss, ``loader()``'s, stored for ``ttl`` seconds.

        Concurrent misses of ``key`` (threads, processes) run ``loader`` once; the others
        get its value. ``stale``: seconds a value is still served after its TTL while one
        caller refreshes it in the background. ``early``: XFetch's beta (``True`` = 1):
        refresh a little before expiry, the likelier the closer. ``name``: the metrics
        label (default ``get_or_set``).
        """
        policy = self._policy(ttl, stale, early, name or "get_or_set")
        if tags is None:
            return self._fetch(key, loader, policy, _no_tags)
        tag_keys = self._tag_keys(tags)
        return self._fetch(key, loader, policy, lambda: tag_keys)

    def _fetch(self, name: str, loader: Callable[[], Any], policy: _Policy,
               tags: Callable[[], Sequence[str]]) -> Any:
        try:
            raw = self.redis.run(self.core.read_flow(name))
        except RedisMiddlewareError as exc:
            self._failed(exc)
            _report("bypass", policy.label)
            return self._single_flight(name, loader, policy, tags, bypass=True)
        if raw is not None and not policy.early:
            value = self.core.hot(raw)
            if value is not MISS:  # the hot path: a plain fresh hit
                if metrics.hook is not None:
                    metrics.hook.data("hit", policy.label)
                return value
        return self._fetched(name, raw, loader, policy, tags)

    def _fetched(self, name: str, raw: bytes | None, loader: Callable[[], Any],
                 policy: _Policy, tags: Callable[[], Sequence[str]]) -> Any:
        """After the GET, anything but a plain hit: judge, serve stale, or load."""
        verdict = self._verdict(raw, policy)
        if verdict is not None:
            entry, judged = verdict
            if judged == "fresh":
                _report("hit", policy.label)
                return entry.value
            _report("stale", policy.label)
            self._refresh_later(name, loader, policy, tags)
            return entry.value
        _report("miss", policy.label)
        return self._single_flight(name, loader, policy, tags)

    def _single_flight(self, name: str, loader: Callable[[], Any], policy: _Policy,
                       tags: Callable[[], Sequence[str]], bypass: bool = False) -> Any:
        while True:
            with self._flights_lock:
                flight = self._flights.get(name)
                if flight is None:
                    flight = self._flights[name] = _Flight()
                    break
            started = time.perf_counter()
            if not flight.done.wait(self.core.lock_wait):  # past the wait: our own load
                return self._load_and_store(name, loader, policy, tags, None, bypass)[0]
            _report("wait", policy.label, time.perf_counter() - started)
            if flight.error is not None:
                raise flight.error
            if flight.stored is not _RETRY:
                entry = self.core.decode(flight.stored)
                if entry is not None:
                    return entry.value
        try:
            value, flight.stored = (self._load_and_store(name, loader, policy, tags, None, True)
                                    if bypass else self._lead(name, loader, policy, tags))
            return value
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            with self._flights_lock:
                if self._flights.get(name) is flight:
                    del self._flights[name]
            flight.done.set()

    def _lead(self, name: str, loader: Callable[[], Any], policy: _Policy,
              tags: Callable[[], Sequence[str]]) -> tuple[Any, bytes]:
        core = self.core
        token = core.token()
        try:
            raw, ours = self.redis.run(core.claim_flow(name, token))
            if raw is None and not ours:  # another process is loading it
                started = time.perf_counter()
                raw, ours = self.redis.run(core.wait_flow(name, token))
                _report("wait", policy.label, time.perf_counter() - started)
        except RedisMiddlewareError as exc:
            self._failed(exc)
            return self._load_and_store(name, loader, policy, tags, None, True)
        if raw is not None:
            entry = core.decode(raw)
            if entry is not None:
                return entry.value, raw
        return self._load_and_store(name, loader, policy, tags, token if ours else None)

    def _load_and_store(self, name: str, loader: Callable[[], Any], policy: _Policy,
                        tags: Callable[[], Sequence[str]], token: str | None,
                        bypass: bool = False) -> tuple[Any, bytes]:
        """Run the loader (renewing the lease ``token`` meanwhile) and store its value,
        releasing the lease; the value and its encoded form."""
        core = self.core
        fill = core.fill_key(name)
        lease = renewer(self.redis, core).hold(fill, token, core.lease_ms) if token else None
        try:
            started = time.perf_counter()
            value = loader()
            seconds = time.perf_counter() - started
            _report("load", policy.label, seconds)
            tag_keys = tags()
            data = core.encode(value, policy.fresh_ms, policy.stale_ms, tag_keys,
                               int(seconds * 1000))
        except BaseException:
            if lease is not None:
                lease.held = False
                self._quietly(core.release_flow(fill, lease.token), False)
            raise
        if lease is not None:
            lease.held = False
        if bypass:
            return value, data
        if core.too_large(data, name):
            if token is not None:
                self._quietly(core.release_flow(fill, token), False)
        else:
            self._quietly(core.store_flow(name, data, policy.fresh_ms + policy.stale_ms,
                                          token, tag_keys), False)
        return value, data

    def _refresh_later(self, name: str, loader: Callable[[], Any], policy: _Policy,
                       tags: Callable[[], Sequence[str]]) -> None:
        """Stale or early: if this process is not refreshing ``name`` already and the
        fill lease is free, refresh in a worker thread (the caller is served meanwhile)."""
        if name in self._refreshing:
            return
        token = self.core.token()
        if not self._quietly(self.core.acquire_flow(self.core.fill_key(name), token,
                                                    self.core.lease_ms), False):
            return
        self._refreshing.add(name)
        context = contextvars.copy_context()
        try:
            _refresh_pool().submit(context.run, self._refresh, name, loader, policy, tags,
                                   token)
        except RuntimeError:  # the interpreter is shutting down
            self._refreshing.discard(name)
            self._quietly(self.core.release_flow(self.core.fill_key(name), token), False)

    def _refresh(self, name: str, loader: Callable[[], Any], policy: _Policy,
                 tags: Callable[[], Sequence[str]], token: str) -> None:
        try:
            self._load_and_store(name, loader, policy, tags, token)
        except Exception as exc:
            log_incident("data-refresh", "data cache: refreshing %r failed (%s: %s); its "
                         "stale value is served meanwhile", name, type(exc).__name__, exc)
        finally:
            self._refreshing.discard(name)

    # -- get_or_set and the decorator: async ---------------------------------------------
    async def aget_or_set(self, key: str, loader: Callable[[], Any], ttl: float | None = None,
                          *, tags: Iterable[str] | str | None = None, stale: float = 0,
                          early: float | bool = 0, name: str | None = None) -> Any:
        """:meth:`get_or_set` for asyncio. ``loader`` may be async (awaited) or sync (run
        in a worker thread, so that it cannot block the event loop)."""
        policy = self._policy(ttl, stale, early, name or "get_or_set")
        tag_keys = _no_tags if tags is None else functools.partial(list, self._tag_keys(tags))
        # Wrapped on a miss only: telling an async loader from a sync one costs a hit time.
        return await self._afetch(key, lambda: _async_loader(loader)(), policy, tag_keys)

    async def _aread(self, name: str) -> bytes | None:
        """One GET, shared by the tasks of this event loop that read ``name`` while it is
        in flight (a hot key read by many requests at once costs one command; each
        caller still decodes its own copy)."""
        loop = asyncio.get_running_loop()
        last = self._last_reads
        if last is not None and last[0]() is loop:
            reads = last[1]
        else:
            found = self._reads.get(loop)
            reads = self._reads[loop] = {} if found is None else found
            self._last_reads = (weakref.ref(loop), reads)
        while (waiters := reads.get(name)) is not None:
            mine = loop.create_future()  # its own: a cancelled reader cancels only itself
            waiters.append(mine)
            raw = await mine
            if raw is not _RETRY:
                return cast("bytes | None", raw)
        waiters = reads[name] = []
        outcome: Any = _RETRY  # cancelled: the others read for themselves
        try:
            stored: bytes | None = await self.redis.arun(self.core.read_flow(name))
            outcome = stored
            return stored
        except RedisMiddlewareError as exc:
            outcome = exc
            raise
        finally:
            if reads.get(name) is waiters:
                del reads[name]
            for waiter in waiters:
                if not waiter.done():
                    if isinstance(outcome, BaseException):
                        waiter.set_exception(outcome)
                    else:
                        waiter.set_result(outcome)

    async def _afetch(self, name: str, loader: Callable[[], Awaitable[Any]], policy: _Policy,
                      tags: Callable[[], Sequence[str]]) -> Any:
        try:
            raw = await self._aread(name)
        except RedisMiddlewareError as exc:
            return await self._abypass(exc, name, loader, policy, tags)
        if raw is not None and not policy.early:
            value = self.core.hot(raw)
            if value is not MISS:
                if metrics.hook is not None:
                    metrics.hook.data("hit", policy.label)
                return value
        return await self._afetched(name, raw, loader, policy, tags)

    async def _abypass(self, exc: RedisMiddlewareError, name: str,
                       loader: Callable[[], Awaitable[Any]], policy: _Policy,
                       tags: Callable[[], Sequence[str]]) -> Any:
        self._failed(exc)
        _report("bypass", policy.label)
        return await self._asingle_flight(name, loader, policy, tags, bypass=True)

    async def _afetched(self, name: str, raw: bytes | None,
                        loader: Callable[[], Awaitable[Any]], policy: _Policy,
                        tags: Callable[[], Sequence[str]]) -> Any:
        verdict = self._verdict(raw, policy)
        if verdict is not None:
            entry, judged = verdict
            if judged == "fresh":
                _report("hit", policy.label)
                return entry.value
            _report("stale", policy.label)
            await self._arefresh_later(name, loader, policy, tags)
            return entry.value
        _report("miss", policy.label)
        return await self._asingle_flight(name, loader, policy, tags)

    async def _asingle_flight(self, name: str, loader: Callable[[], Awaitable[Any]],
                              policy: _Policy, tags: Callable[[], Sequence[str]],
                              bypass: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        flights = self._aflights.get(loop)
        if flights is None:
            flights = self._aflights[loop] = {}
        while (flight := flights.get(name)) is not None:
            started = time.perf_counter()
            try:
                stored = await asyncio.wait_for(asyncio.shield(flight), self.core.lock_wait)
            except TimeoutError:  # past the wait: our own load
                return (await self._aload_and_store(name, loader, policy, tags, None,
                                                    bypass))[0]
            _report("wait", policy.label, time.perf_counter() - started)
            if stored is not _RETRY:
                entry = self.core.decode(stored)
                if entry is not None:
                    return entry.value
        flight = flights[name] = loop.create_future()
        try:
            value, stored = await (self._aload_and_store(name, loader, policy, tags, None, True)
                                   if bypass else self._alead(name, loader, policy, tags))
            flight.set_result(stored)
            return value
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" log when nobody waited
            raise
        finally:
            if not flight.done():  # cancelled (or another BaseException): followers retry
                flight.set_result(_RETRY)
            if flights.get(name) is flight:
                del flights[name]

    async def _alead(self, name: str, loader: Callable[[], Awaitable[Any]], policy: _Policy,
                     tags: Callable[[], Sequence[str]]) -> tuple[Any, bytes]:
        core = self.core
        token = core.token()
        try:
            raw, ours = await self.redis.arun(core.claim_flow(name, token))
            if raw is None and not ours:
                started = time.perf_counter()
                raw, ours = await self.redis.arun(core.wait_flow(name, token))
                _report("wait", policy.label, time.perf_counter() - started)
        except RedisMiddlewareError as exc:
            self._failed(exc)
            return await self._aload_and_store(name, loader, policy, tags, None, True)
        if raw is not None:
            entry = core.decode(raw)
            if entry is not None:
                return entry.value, raw
        return await self._aload_and_store(name, loader, policy, tags, token if ours else None)

    async def _aload_and_store(self, name: str, loader: Callable[[], Awaitable[Any]],
                               policy: _Policy, tags: Callable[[], Sequence[str]],
                               token: str | None, bypass: bool = False) -> tuple[Any, bytes]:
        core = self.core
        fill = core.fill_key(name)
        renewal = None
        if token is not None:
            renewal = Every(core.lease_ms / 3000, functools.partial(
                arenew, self.redis, core, fill, token, core.lease_ms), "data cache lease renewal")
        try:
            started = time.perf_counter()
            value = await loader()
            seconds = time.perf_counter() - started
            _report("load", policy.label, seconds)
            tag_keys = tags()
            data = core.encode(value, policy.fresh_ms, policy.stale_ms, tag_keys,
                               int(seconds * 1000))
        except BaseException:
            if renewal is not None:
                await renewal.stop()
                await self._arelease(fill, cast(str, token))
            raise
        if renewal is not None:
            await renewal.stop()
        if bypass:
            return value, data
        if core.too_large(data, name):
            if token is not None:
                await self._aquietly(core.release_flow(fill, token), False)
        else:
            await self._aquietly(core.store_flow(name, data, policy.fresh_ms + policy.stale_ms,
                                                 token, tag_keys), False)
        return value, data

    async def _arelease(self, key: str, token: str) -> None:
        """Free a lease after a failed or cancelled load: run to its end even if this
        task is cancelled meanwhile (the exception being raised stays the one raised)."""
        async def release() -> None:
            await self._aquietly(self.core.release_flow(key, token), False)

        with contextlib.suppress(asyncio.CancelledError):
            await finish(release())

    async def _arefresh_later(self, name: str, loader: Callable[[], Awaitable[Any]],
                              policy: _Policy, tags: Callable[[], Sequence[str]]) -> None:
        if name in self._refreshing:
            return
        token = self.core.token()
        if not await self._aquietly(self.core.acquire_flow(self.core.fill_key(name), token,
                                                           self.core.lease_ms), False):
            return
        self._refreshing.add(name)
        task = detach(self._arefresh(name, loader, policy, tags, token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _arefresh(self, name: str, loader: Callable[[], Awaitable[Any]], policy: _Policy,
                        tags: Callable[[], Sequence[str]], token: str) -> None:
        try:
            await self._aload_and_store(name, loader, policy, tags, token)
        except Exception as exc:
            log_incident("data-refresh", "data cache: refreshing %r failed (%s: %s); its "
                         "stale value is served meanwhile", name, type(exc).__name__, exc)
        finally:
            self._refreshing.discard(name)

    # -- the decorator ----------------------------------------------------------------------
    @overload
    def cached(self, ttl: F) -> F: ...

    @overload
    def cached(self, ttl: float | None = None, key: str | None = None,
               tags: Iterable[str] | str | None = None, *, stale: float = 0,
               early: float | bool = 0, name: str | None = None) -> Callable[[F], F]: ...

    def cached(self, ttl: Any = None, key: str | None = None,
               tags: Iterable[str] | str | None = None, *, stale: float = 0,
               early: float | bool = 0, name: str | None = None) -> Any:
        """Cache a function's results: ``@cache.cached(ttl=60, key="user:{user_id}")``.

        ``key`` is a ``str.format`` template of the function's parameters (defaults
        applied; each argument's text escaped); without it, the function's module,
        qualified name and arguments make the key. ``tags`` are templates too. Works on
        ``def`` (a sync wrapper) and ``async def`` (an async one), and on methods: a
        first parameter ``self``/``cls`` is left out of the default key unless the
        object defines ``__cache_key__()``. The wrapper keeps the signature and adds
        ``invalidate(*args, **kwargs)`` (sync or awaitable, like the function) and
        ``key_for(*args, **kwargs)``. ``stale``, ``early``: as :meth:`get_or_set`;
        ``name``: the metrics label (default: the qualified name). ``@cache.cached``
        without parentheses uses the defaults.
        """
        if callable(ttl):  # @cache.cached, bare
            return self.cached()(ttl)
        tag_texts = _tag_list(tags)
        if tag_texts and self.core.raw:
            raise ValueError("raw values carry no tags")

        def decorate(function: F) -> F:
            if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
                raise TypeError("cached() wraps functions that return a value, not generators")
            binder = Binder(function)
            keyer = KeyTemplate(key, binder.names) if key is not None else DefaultKey(
                function, binder)
            templates = [KeyTemplate(t, binder.names, escaped=False) for t in tag_texts]
            label = name or f"{function.__module__}.{function.__qualname__}"
            policy = self._policy(ttl, stale, early, label)
            core = self.core
            hot = not policy.early  # early refresh judges every hit
            memo: Memo[tuple[Any, ...], str] = Memo(4096)

            def render(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                if not kwargs:
                    for arg in args:
                        if type(arg) is not int and type(arg) is not str:
                            break
                    else:  # ints and strs alone: equal arguments render equal keys
                        found = memo.get(args)
                        if found is None:
                            found = memo.put(args, keyer.render(binder.bind(args, kwargs)))
                        return found
                return keyer.render(binder.bind(args, kwargs))

            def tags_of(args: tuple[Any, ...], kwargs: dict[str, Any]
                        ) -> Callable[[], Sequence[str]]:
                if not templates:
                    return _no_tags
                return lambda: [core.tag_key(t.render(binder.bind(args, kwargs)))
                                for t in templates]

            def key_for(*args: Any, **kwargs: Any) -> str:
                """The rendered key of a call with these arguments."""
                return render(args, kwargs)

            wrapper: Any
            invalidate: Callable[..., Any]
            if _is_async(function):
                @functools.wraps(function)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    name = render(args, kwargs)
                    # _afetch, inlined: one coroutine less per hit
                    try:
                        raw = await self._aread(name)
                    except RedisMiddlewareError as exc:
                        return await self._abypass(exc, name, lambda: function(*args, **kwargs),
                                                   policy, tags_of(args, kwargs))
                    if raw is not None and hot:
                        value = core.hot(raw)
                        if value is not MISS:
                            if metrics.hook is not None:
                                metrics.hook.data("hit", label)
                            return value
                    return await self._afetched(name, raw, lambda: function(*args, **kwargs),
                                                policy, tags_of(args, kwargs))

                async def ainvalidate(*args: Any, **kwargs: Any) -> bool:
                    return await self.adelete(render(args, kwargs))

                wrapper, invalidate = awrapper, ainvalidate
            else:
                @functools.wraps(function)
                def swrapper(*args: Any, **kwargs: Any) -> Any:
                    return self._fetch(render(args, kwargs), lambda: function(*args, **kwargs),
                                       policy, tags_of(args, kwargs))

                def sinvalidate(*args: Any, **kwargs: Any) -> bool:
                    return self.delete(render(args, kwargs))

                wrapper, invalidate = swrapper, sinvalidate
            invalidate.__doc__ = "Remove the cached result of a call with these arguments."
            wrapper.invalidate = invalidate
            wrapper.key_for = key_for
            wrapper.cache = self
            return cast(F, wrapper)

        return decorate

    # -- locks -------------------------------------------------------------------------------
    def lock(self, name: str, timeout: float = 30, *, blocking: bool = True,
             wait: float | None = None) -> Lock:
        """A lock shared by every process on this Redis: ``with cache.lock("rebuild"):``.

        Held for ``timeout`` seconds at most, renewed every ``timeout / 3`` while the
        holder lives, so a crashed holder frees it within ``timeout``. ``blocking=False``
        tries once; ``wait`` bounds the waiting (None: until free). Not taken:
        :class:`LockNotAcquired`. Redis unavailable: ``RedisUnavailableError`` (who holds
        it cannot be known).
        """
        return Lock(self.redis, self.core, name, timeout, blocking, wait)

    def alock(self, name: str, timeout: float = 30, *, blocking: bool = True,
              wait: float | None = None) -> ALock:
        """:meth:`lock` for asyncio: ``async with cache.alock("rebuild"):``."""
        return ALock(self.redis, self.core, name, timeout, blocking, wait)

    # -- closing -----------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop this event loop's background refreshes (they are cancelled)."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._tasks if t.get_loop() is loop]
        await stop_tasks(*mine, what="data cache refresh")


def _async_loader(loader: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """An awaitable-returning loader: async loaders as they are, sync ones in a thread."""
    if _is_async(loader):
        return cast(Callable[[], Awaitable[Any]], loader)

    async def threaded() -> Any:
        result = await asyncio.to_thread(loader)
        if inspect.isawaitable(result):  # a sync callable returning a coroutine
            result = await result
        return result

    return threaded


def _cluster_clear(client: Any, patterns: Sequence[str]) -> int:
    """SCAN every primary of a Cluster (redis-py's scan_iter does) and UNLINK in batches."""
    removed = 0
    try:
        for pattern in patterns:
            batch: list[Any] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += client.unlink(*batch)
                    batch = []
            if batch:
                removed += client.unlink(*batch)
    except Exception as exc:  # any client failure is an outage here, as in the drivers
        raise RedisUnavailableError(f"clearing the data cache failed: {exc}") from exc
    return removed


async def _acluster_clear(client: Any, patterns: Sequence[str]) -> int:
    removed = 0
    try:
        for pattern in patterns:
            batch: list[Any] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += await client.unlink(*batch)
                    batch = []
            if batch:
                removed += await client.unlink(*batch)
    except Exception as exc:
        raise RedisUnavailableError(f"clearing the data cache failed: {exc}") from exc
    return removed
