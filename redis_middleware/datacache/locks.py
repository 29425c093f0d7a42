"""The lock of ``DataCache.lock`` and ``DataCache.alock``: a lease (``leases.py``) held
for a block of code, renewed while held, released only with its token."""

from __future__ import annotations

import functools
from types import TracebackType
from typing import cast

from .._redis.connections import RedisConnections
from .._tasks import Every
from ..errors import LockNotAcquired, RedisMiddlewareError
from ..sansio.cache.data import DataCore, Seconds, as_seconds
from ..sansio.incidents import log_failure
from .leases import Held, arenew, renewer

__all__ = ["ALock", "Lock", "LockNotAcquired"]

_MISSING = object()


class _LockBase:
    def __init__(self, conns: RedisConnections, core: DataCore, name: str, timeout: Seconds,
                 blocking: bool, wait: Seconds | None) -> None:
        seconds, wait_s = as_seconds(timeout), as_seconds(wait)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
                0 < seconds <= 86400):
            raise ValueError(f"a lock's timeout is seconds in (0, 86400], not {timeout!r}")
        if wait_s is not None and not wait_s >= 0:
            raise ValueError(f"wait is seconds >= 0 or None, not {wait!r}")
        self.redis = conns
        self.core = core
        self.name = name
        self.key = core.keys.data_lock(name)
        self.px = max(1, round(seconds * 1000))
        self.blocking = blocking
        self.wait: float | None = wait_s
        self.token: str | None = None

    def _wait(self, blocking: bool | None, wait: Seconds | object | None) -> float | None:
        if not (self.blocking if blocking is None else blocking):
            return 0.0
        return self.wait if wait is _MISSING else cast("float | None", as_seconds(wait))

    def _taking(self) -> str:
        if self.token is not None:
            raise RuntimeError(f"lock {self.name!r} is held by this object already")
        return self.core.token()

    def _not_released(self, exc: RedisMiddlewareError) -> bool:
        log_failure("data", "data cache: a lock was not released (%s)", exc)
        return False  # it expires by itself

    def locked(self) -> bool:
        """Whether this object holds the lock now."""
        return self.token is not None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {'held' if self.token else 'free'}>"


class Lock(_LockBase):
    """A cross-process lock (``DataCache.lock``): a context manager, or ``acquire()`` /
    ``release()``. Only the holder's token releases it (compare-and-delete)."""

    _lease: Held | None = None

    def acquire(self, blocking: bool | None = None, wait: Seconds | object | None = _MISSING
                ) -> bool:
        """Take the lock; whether it was taken. ``RedisUnavailableError`` when Redis is."""
        token = self._taking()
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
        except RedisMiddlewareError as exc:
            return self._not_released(exc)

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
                      wait: Seconds | object | None = _MISSING) -> bool:
        token = self._taking()
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
            return self._not_released(exc)

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
