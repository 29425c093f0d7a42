"""Leases that renew themselves while held, and the lock of ``DataCache.lock``.

A lease is a key set with ``SET NX PX`` to a random token (``DataCore.lock_flow``),
extended every third of its timeout while its holder lives and deleted only with its
token. The data cache's single-flight lease and the public lock are the same thing:
sync holders are renewed by one thread per process (:class:`_Renewer`), async holders
by a task each (``_tasks.Every``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import threading
import time
import weakref
from types import TracebackType
from typing import cast

from ._redis.connections import RedisConnections
from ._tasks import Every
from .errors import RedisMiddlewareError
from .sansio.cache.data import DataCore
from .sansio.incidents import log_failure, log_incident

__all__ = ["ALock", "Lease", "Lock", "LockNotAcquired", "arenew", "renewer"]

_MISSING = object()


class LockNotAcquired(RedisMiddlewareError, TimeoutError):
    """``with cache.lock(...)`` could not take the lock (``blocking=False``, or ``wait``
    seconds passed while another holder kept it)."""


class Lease:
    """A lease held by this process: renewed while ``held``; ``lost`` once Redis said
    it was no longer ours."""

    __slots__ = ("held", "key", "lost", "px", "token")

    def __init__(self, key: str, token: str, px: int) -> None:
        self.key, self.token, self.px = key, token, px
        self.held = True
        self.lost = False


class _Renewer:
    """One thread per process and Redis target renews every held lease each third of
    its timeout (a heap of due times); it ends after a few idle seconds and starts again
    with the next lease, so an idle process keeps no thread."""

    IDLE = 5.0

    def __init__(self, conns: RedisConnections, core: DataCore) -> None:
        self._conns = conns
        self._core = core
        self._heap: list[tuple[float, int, Lease]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._order = itertools.count()
        self._pid = os.getpid()

    def hold(self, key: str, token: str, px: int) -> Lease:
        lease = Lease(key, token, px)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + px / 3000, next(self._order), lease))
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="redis-middleware data lease renewal")
                self._thread.start()
            self._cond.notify()
        return lease

    def _next(self) -> Lease | None:
        with self._cond:
            idle_since = None
            while True:
                while self._heap and not self._heap[0][2].held:
                    heapq.heappop(self._heap)
                if not self._heap:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since >= self.IDLE:
                        self._thread = None
                        return None
                    self._cond.wait(self.IDLE)
                    continue
                idle_since = None
                due, _, lease = self._heap[0]
                left = due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                return lease

    def _loop(self) -> None:
        while (lease := self._next()) is not None:
            try:
                renewed = self._conns.run(self._core.renew_flow(lease.key, lease.token, lease.px))
            except RedisMiddlewareError:
                renewed = True  # unknown: try again next time (the breaker logged it)
            if not renewed and lease.held:
                lease.lost = True
                log_incident("data-lease-lost", "data cache: the lease %r expired or was "
                             "taken over while held (lengthen its timeout)", lease.key)
                continue
            with self._cond:
                if lease.held:
                    heapq.heappush(self._heap, (time.monotonic() + lease.px / 3000,
                                                next(self._order), lease))


_renewers: weakref.WeakKeyDictionary[RedisConnections, _Renewer] = weakref.WeakKeyDictionary()
_renewers_lock = threading.Lock()


def renewer(conns: RedisConnections, core: DataCore) -> _Renewer:
    """The lease renewer of this process for ``conns``' Redis."""
    found = _renewers.get(conns)
    if found is None:
        with _renewers_lock:
            found = _renewers.get(conns)
            if found is None:
                found = _renewers[conns] = _Renewer(conns, core)
    return found


async def arenew(conns: RedisConnections, core: DataCore, key: str, token: str, px: int
                 ) -> None:
    """Extend an async holder's lease (``Every`` calls it each third of the timeout)."""
    try:
        renewed = await conns.arun(core.renew_flow(key, token, px))
    except RedisMiddlewareError:
        return  # unknown: tried again next time (the breaker logged the outage)
    if not renewed:
        log_incident("data-lease-lost", "data cache: the lease %r expired or was taken "
                     "over while held (lengthen its timeout)", key)


class _LockBase:
    def __init__(self, conns: RedisConnections, core: DataCore, name: str, timeout: float,
                 blocking: bool, wait: float | None) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
                0 < timeout <= 86400):
            raise ValueError(f"a lock's timeout is seconds in (0, 86400], not {timeout!r}")
        if wait is not None and not wait >= 0:
            raise ValueError(f"wait is seconds >= 0 or None, not {wait!r}")
        self.redis = conns
        self.core = core
        self.name = name
        self.key = core.keys.data_lock(name)
        self.px = max(1, round(timeout * 1000))
        self.blocking = blocking
        self.wait = wait
        self.token: str | None = None

    def _wait(self, blocking: bool | None, wait: float | object | None) -> float | None:
        if not (self.blocking if blocking is None else blocking):
            return 0.0
        return self.wait if wait is _MISSING else cast("float | None", wait)

    def locked(self) -> bool:
        """Whether this object holds the lock now."""
        return self.token is not None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {'held' if self.token else 'free'}>"


class Lock(_LockBase):
    """A cross-process lock (``DataCache.lock``): a context manager, or ``acquire()`` /
    ``release()``. Only the holder's token releases it (compare-and-delete)."""

    _lease: Lease | None = None

    def acquire(self, blocking: bool | None = None, wait: float | object | None = _MISSING
                ) -> bool:
        """Take the lock; whether it was taken. ``RedisUnavailableError`` when Redis is."""
        if self.token is not None:
            raise RuntimeError(f"lock {self.name!r} is held by this object already")
        token = self.core.token()
        if not self.redis.run(self.core.lock_flow(self.key, token, self.px,
                                                  self._wait(blocking, wait))):
            return False
        self.token = token
        self._lease = renewer(self.redis, self.core).hold(self.key, token, self.px)
        return True

    def release(self) -> bool:
        """Free the lock if this object holds it; whether Redis had it still ours."""
        token, self.token = self.token, None
        if self._lease is not None:
            self._lease.held = False
            self._lease = None
        if token is None:
            return False
        try:
            return self.redis.run(self.core.release_flow(self.key, token))
        except RedisMiddlewareError as exc:  # it expires by itself
            log_failure("data", "data cache: a lock was not released (%s)", exc)
            return False

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise LockNotAcquired(f"lock {self.name!r} is held by another owner")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        # Dropped while held: no more renewal, so the lock expires by itself (instead of
        # being renewed, unreleasable, for as long as the process lives).
        if self._lease is not None:
            self._lease.held = False


class ALock(_LockBase):
    """The asyncio twin of :class:`Lock` (``DataCache.alock``); renewed by a task."""

    _renewal: Every | None = None

    async def acquire(self, blocking: bool | None = None,
                      wait: float | object | None = _MISSING) -> bool:
        if self.token is not None:
            raise RuntimeError(f"lock {self.name!r} is held by this object already")
        token = self.core.token()
        if not await self.redis.arun(self.core.lock_flow(self.key, token, self.px,
                                                         self._wait(blocking, wait))):
            return False
        self.token = token
        self._renewal = Every(self.px / 3000, functools.partial(
            arenew, self.redis, self.core, self.key, token, self.px), "data cache lock renewal")
        return True

    async def release(self) -> bool:
        token, self.token = self.token, None
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            await renewal.stop()
        if token is None:
            return False
        try:
            return await self.redis.arun(self.core.release_flow(self.key, token))
        except RedisMiddlewareError as exc:
            log_failure("data", "data cache: a lock was not released (%s)", exc)
            return False

    async def __aenter__(self) -> ALock:
        if not await self.acquire():
            raise LockNotAcquired(f"lock {self.name!r} is held by another owner")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()

    def __del__(self) -> None:
        if self._renewal is not None:  # dropped while held: it expires by itself
            self._renewal.halt()
