"""``DataCache``: cache-aside for function results, sync and async, on the shared Redis.

Each method builds the core's flow for its call (``sansio/cache/datacalls.py``, and
``datafill.py`` for ``get_or_set``) and runs it: the sync method with
``RedisConnections.run``, its ``a`` twin with ``arun``. ``get`` sends its one ``GET``
without a flow, and so does ``get_or_set`` (a plain fresh hit is served at once, one
decode; anything else goes on to its flow). What lives in the process: ``flight.py``
(callers sharing a load), ``refresh.py`` (background refreshes), ``leases.py`` and
``locks.py`` (leases renewed while held).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from .._redis.connections import connections_for
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio import metrics
from ..sansio.cache.data import MISS, DataCore, Seconds, as_seconds
from ..sansio.cache.datacalls import Calls, report
from ..sansio.cache.datafill import Fill, Local, Policy
from ..sansio.flow import Delegate, PausingFlow
from .clearing import per_primary
from .decorator import cached, is_async, no_tags
from .flight import Flights, SharedReads
from .leases import Leases
from .locks import ALock, Lock
from .near import near_reads
from .refresh import Refresher

__all__ = ["DataCache"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


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
        self._calls = Calls(self.core)
        self._near = near_reads(self.core)  # None unless near_cache_size > 0
        self._reads = SharedReads(self.redis, self.core,
                                  None if self._near is None else self._near.view.valid)
        self._refresher = Refresher(self.redis)
        self._fill = Fill(self.core, Local(Flights(self.core.lock_wait),
                                           Leases(self.redis, self.core), self._refresher,
                                           lambda name: self._wrote((name,))))

    def __repr__(self) -> str:
        ns = f", namespace={self.core.namespace!r}" if self.core.namespace else ""
        return f"<DataCache {self.redis.name} prefix={self.settings.key_prefix!r}{ns}>"

    # -- plain reads and writes ----------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` (also when Redis fails)."""
        near, ticket = self._near, None
        if near is not None:
            value, ticket = near.lookup(key)
            if value is not MISS:
                report("hit", "get")
                return value
        try:
            raw: Any = self.redis.call(self.core.read_command(key))
        except RedisMiddlewareError as exc:
            raw = exc
        except BaseException:
            if near is not None:
                near.drop(ticket)
            raise
        return self._calls.got(raw, default, None if near is None else near.keeper(ticket))

    async def aget(self, key: str, default: Any = None) -> Any:
        near, ticket = self._near, None
        if near is not None:
            value, ticket = near.lookup(key)
            if value is not MISS:
                report("hit", "get")
                return value
        try:
            raw: Any = await self._reads.read(key, ticket)
        except RedisMiddlewareError as exc:
            raw = exc
        except BaseException:
            if near is not None:
                near.drop(ticket)
            raise
        return self._calls.got(raw, default, None if near is None else near.keeper(ticket))

    def set(self, key: str, value: Any, ttl: Seconds | None = None, *,
            tags: Iterable[str] | str | None = None, stale: Seconds = 0) -> bool:
        """Store ``value`` for ``ttl`` seconds (default ``Settings.data_ttl``) with
        ``tags``; False when it was not stored (Redis failed, or over the size cap)."""
        return self._write((key,), self._calls.set(key, value, ttl, tags, stale))

    async def aset(self, key: str, value: Any, ttl: Seconds | None = None, *,
                   tags: Iterable[str] | str | None = None, stale: Seconds = 0) -> bool:
        return await self._awrite((key,), self._calls.set(key, value, ttl, tags, stale))

    def add(self, key: str, value: Any, ttl: Seconds | None = None) -> bool:
        """Store ``value`` only if ``key`` holds nothing; whether it did."""
        return self._write((key,), self._calls.add(key, value, ttl))

    async def aadd(self, key: str, value: Any, ttl: Seconds | None = None) -> bool:
        return await self._awrite((key,), self._calls.add(key, value, ttl))

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        return self._write((key,), self._calls.delete(key))

    async def adelete(self, key: str) -> bool:
        return await self._awrite((key,), self._calls.delete(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys`` (those found), in one round trip."""
        return self.redis.run(self._calls.get_many(keys))

    async def aget_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return await self.redis.arun(self._calls.get_many(keys))

    def set_many(self, mapping: Mapping[str, Any], ttl: Seconds | None = None, *,
                 tags: Iterable[str] | str | None = None) -> list[str]:
        """Store every item in one round trip; the keys that were *not* stored (all of
        them when Redis failed; an empty list on success)."""
        return self._write(mapping, self._calls.set_many(mapping, ttl, tags))

    async def aset_many(self, mapping: Mapping[str, Any], ttl: Seconds | None = None, *,
                        tags: Iterable[str] | str | None = None) -> list[str]:
        return await self._awrite(mapping, self._calls.set_many(mapping, ttl, tags))

    def delete_many(self, keys: Iterable[str], *, strict: bool = False) -> int:
        """Remove ``keys`` in one round trip; how many were there. ``strict``: raise
        :class:`RedisMiddlewareError` when Redis failed, rather than answer 0 (for a
        caller that must tell "nothing was there" from "nothing was done")."""
        keys = list(keys)
        return self._write(keys, self._calls.delete_many(keys, strict))

    async def adelete_many(self, keys: Iterable[str], *, strict: bool = False) -> int:
        keys = list(keys)
        return await self._awrite(keys, self._calls.delete_many(keys, strict))

    def has(self, key: str) -> bool:
        return self.redis.run(self._calls.has(key))

    async def ahas(self, key: str) -> bool:
        return await self.redis.arun(self._calls.has(key))

    def touch(self, key: str, ttl: Seconds | None = None) -> bool:
        """Give ``key`` a new TTL; whether it was given. A tagged value's TTL may shorten
        but not lengthen (False, unchanged): its tags are kept only as long as it was
        stored for. A value with a stale window keeps the freshness it was stored with."""
        return self._write((key,), self._calls.touch(key, ttl))

    async def atouch(self, key: str, ttl: Seconds | None = None) -> bool:
        return await self._awrite((key,), self._calls.touch(key, ttl))

    def ttl(self, key: str) -> float | None:
        """Seconds ``key`` stays in Redis, or None when it is missing (or Redis fails)."""
        return self.redis.run(self._calls.ttl(key))

    async def attl(self, key: str) -> float | None:
        return await self.redis.arun(self._calls.ttl(key))

    def incr(self, key: str, delta: int = 1) -> int:
        """Raw mode: add ``delta`` to a stored integer (atomic, TTL kept); the new value.
        ``ValueError`` when the key is missing (or Redis fails), ``TypeError`` when its
        value is no integer."""
        return self._write((key,), self._calls.incr(key, delta))

    async def aincr(self, key: str, delta: int = 1) -> int:
        return await self._awrite((key,), self._calls.incr(key, delta))

    def decr(self, key: str, delta: int = 1) -> int:
        return self.incr(key, -delta)

    async def adecr(self, key: str, delta: int = 1) -> int:
        return await self.aincr(key, -delta)

    def invalidate(self, *, tags: Iterable[str] | str) -> int:
        """Remove every value stored with any of ``tags`` (in every process); how many."""
        try:
            return self.redis.run(self._calls.invalidate(tags, self._dropping))
        finally:
            self._reads.forget()  # which names went is not known here

    async def ainvalidate(self, *, tags: Iterable[str] | str) -> int:
        try:
            return await self.redis.arun(self._calls.invalidate(tags, self._dropping))
        finally:
            self._reads.forget()

    def clear(self, *, strict: bool = False) -> int:
        """Remove every value (and tag) of this cache's namespace, by SCAN on each
        primary: never FLUSHDB, so sessions and other namespaces stay. How many keys.
        ``strict``: as for :meth:`delete_many`."""
        if self._near is not None:
            self._near.view.flush("clear")
        try:
            return self.redis.run(self._calls.clear(per_primary(self.redis, self.core), strict))
        finally:
            self._reads.forget()

    async def aclear(self, *, strict: bool = False) -> int:
        if self._near is not None:
            self._near.view.flush("clear")
        try:
            return await self.redis.arun(
                self._calls.clear(per_primary(self.redis, self.core), strict))
        finally:
            self._reads.forget()

    def _dropping(self, keys: Sequence[str]) -> None:
        """Around an invalidation's deletes (``keys``: Redis keys, the names unknown)."""
        if self._near is not None:
            self._near.view.forget(*keys)

    def _wrote(self, names: Iterable[str]) -> None:
        """Around a write of ``names``: what :meth:`_write` does before it is sent and after
        its reply (or failure); a fill's store of a loaded value does it too (``Local``)."""
        if self._near is not None:
            self._near.forget(names)
        self._reads.forget(names)

    def _write(self, names: Iterable[str], flow: PausingFlow[T]) -> T:
        """Run a write of ``names``: the near cache forgets them before it is sent and
        after its reply (this process reads its own writes, whatever the invalidation's
        way back takes), and so do the reads in flight after it (later readers send a
        ``GET`` of their own)."""
        near = self._near
        if near is not None:
            near.forget(names)
        try:
            return self.redis.run(flow)
        finally:
            self._wrote(names)

    async def _awrite(self, names: Iterable[str], flow: PausingFlow[T]) -> T:
        near = self._near
        if near is not None:
            near.forget(names)
        try:
            return await self.redis.arun(flow)
        finally:
            self._wrote(names)

    # -- get_or_set ------------------------------------------------------------------------
    def get_or_set(self, key: str, loader: Callable[[], Any], ttl: Seconds | None = None, *,
                   tags: Iterable[str] | str | None = None, stale: Seconds = 0,
                   early: float | bool = 0, name: str | None = None) -> Any:
        """The value of ``key``; on a miss, ``loader()``'s, stored for ``ttl`` seconds.

        Concurrent misses of ``key`` (threads, processes) run ``loader`` once; the others
        get its value. ``stale``: seconds a value is still served after its TTL while one
        caller refreshes it in the background. ``early``: XFetch's beta (``True`` = 1):
        refresh a little before expiry, the likelier the closer. ``name``: the metrics
        label (default ``get_or_set``).
        """
        policy = self._fill.policy(ttl, stale, early, name or "get_or_set")
        return self._fetch(key, policy, loader, no_tags if tags is None else self._tags(tags))

    async def aget_or_set(self, key: str, loader: Callable[[], Any], ttl: Seconds | None = None,
                          *, tags: Iterable[str] | str | None = None, stale: Seconds = 0,
                          early: float | bool = 0, name: str | None = None) -> Any:
        """:meth:`get_or_set` for asyncio. ``loader`` may be async (awaited) or sync (run
        in a worker thread, so that it cannot block the event loop)."""
        policy = self._fill.policy(ttl, stale, early, name or "get_or_set")
        tag_keys = no_tags if tags is None else self._tags(tags)
        return await self._afetch(key, policy, lambda: _loader(loader), tag_keys)

    def _policy(self, ttl: Seconds | None, stale: Seconds, early: float | bool, label: str
               ) -> Policy:
        """A call's options, validated once (``cached`` and ``get_or_set``)."""
        return self._fill.policy(ttl, stale, early, label)

    def _fetch(self, key: str, policy: Policy, loader: Callable[[], Any],
               tags: Callable[[], Sequence[str]]) -> Any:
        near, ticket = self._near, None
        if near is not None and not policy.early:
            value, ticket = near.lookup(key)
            if value is not MISS:  # from memory: no round trip
                if metrics.hook is not None:
                    report("hit", policy.label)
                return value
        try:
            raw: Any = self.redis.call(self.core.read_command(key))
        except RedisMiddlewareError as exc:
            raw = exc
        except BaseException:
            if near is not None:
                near.drop(ticket)
            raise
        value = self._hit(raw, policy, ticket)
        if value is not MISS:  # the hot path: a plain fresh hit
            return value
        return self.redis.run(self._fill.flow(key, policy, _loader(loader), tags, raw))

    async def _afetch(self, key: str, policy: Policy, loader: Callable[[], Delegate],
                      tags: Callable[[], Sequence[str]]) -> Any:
        """:meth:`_fetch` for asyncio (tasks reading one key at once share its GET);
        ``loader`` makes the loader's delegate, only on a miss."""
        near, ticket = self._near, None
        if near is not None and not policy.early:
            value, ticket = near.lookup(key)
            if value is not MISS:  # from memory: no round trip
                if metrics.hook is not None:
                    report("hit", policy.label)
                return value
        try:
            raw: Any = await self._reads.read(key, ticket)
        except RedisMiddlewareError as exc:
            raw = exc
        except BaseException:
            if near is not None:
                near.drop(ticket)
            raise
        value = self._hit(raw, policy, ticket)
        if value is not MISS:  # the hot path: a plain fresh hit
            return value
        return await self.redis.arun(self._fill.flow(key, policy, loader(), tags, raw))

    def _hit(self, raw: Any, policy: Policy, ticket: Any) -> Any:
        """The value of a plain fresh hit read from Redis (kept in the near cache under
        ``ticket``), or MISS: the flow decides the rest."""
        value = self.core.hot(raw) if type(raw) is bytes and not policy.early else MISS
        near = self._near
        if near is not None and ticket is not None:
            if value is MISS:
                near.drop(ticket)
            else:
                near.keep(ticket, raw, value)
        if value is not MISS and metrics.hook is not None:  # no call per hit when off
            report("hit", policy.label)
        return value

    def _tags(self, tags: Iterable[str] | str) -> Callable[[], Sequence[str]]:
        tag_keys = self.core.tag_keys(tags)
        return lambda: tag_keys

    # -- the decorator ---------------------------------------------------------------------
    @overload
    def cached(self, ttl: F) -> F: ...

    @overload
    def cached(self, ttl: Seconds | None = None, key: str | None = None,
               tags: Iterable[str] | str | None = None, *, stale: Seconds = 0,
               early: float | bool = 0, name: str | None = None) -> Callable[[F], F]: ...

    def cached(self, ttl: Any = None, key: str | None = None,
               tags: Iterable[str] | str | None = None, *, stale: Seconds = 0,
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
        return cached(self, ttl, key, tags, stale, early, name)

    # -- locks and closing -----------------------------------------------------------------
    def lock(self, name: str, timeout: Seconds = 30, *, blocking: bool = True,
             wait: Seconds | None = None) -> Lock:
        """A lock shared by every process on this Redis: ``with cache.lock("rebuild"):``.

        Held for ``timeout`` seconds at most, renewed every ``timeout / 3`` while the
        holder lives, so a crashed holder frees it within ``timeout``. ``blocking=False``
        tries once; ``wait`` bounds the waiting (None: until free). Not taken:
        :class:`LockNotAcquired`. Redis unavailable: ``RedisUnavailableError`` (who holds
        it cannot be known).
        """
        return Lock(self.redis, self.core, name, timeout, blocking, wait)

    def alock(self, name: str, timeout: Seconds = 30, *, blocking: bool = True,
              wait: Seconds | None = None) -> ALock:
        """:meth:`lock` for asyncio: ``async with cache.alock("rebuild"):``."""
        return ALock(self.redis, self.core, name, timeout, blocking, wait)

    def close(self, timeout: Seconds | None = 5) -> bool:
        """At shutdown, before closing the connections (``cache.redis.close()``): start
        no more background refreshes, and wait up to ``timeout`` seconds (None: as long
        as they take) for those of sync callers to end, each storing its value and
        freeing its lease; True when none runs any more. A refresh left running would
        open a connection again. After it, a stale value is served as it is until its
        stale window ends; then the next caller loads it."""
        return self._refresher.close(None if timeout is None else float(as_seconds(timeout)))

    async def aclose(self) -> None:
        """Stop this event loop's background refreshes (they are cancelled)."""
        await self._refresher.aclose()


def _loader(loader: Callable[[], Any]) -> Delegate:
    """A loader as the flow runs it: called by the sync driver; awaited by the asyncio
    one (an async loader as it is, a sync one in a worker thread)."""
    return Delegate(loader, functools.partial(_awaited, loader))


async def _awaited(loader: Callable[[], Any]) -> Any:
    if is_async(loader):
        return await loader()
    result = await asyncio.to_thread(loader)
    if inspect.isawaitable(result):  # a sync callable returning a coroutine
        result = await result
    return result
