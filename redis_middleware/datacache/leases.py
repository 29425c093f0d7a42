"""Leases that renew themselves while held, and loads run under one.

A lease is a key set with ``SET NX PX`` to a random token (``DataCore.lock_flow``,
``claim_flow``), extended every third of its timeout while its holder lives and deleted
only with its token. The single-flight lease of a key and the public lock (``locks.py``)
are the same thing: sync holders are renewed by one thread per process
(:class:`_Renewer`), async holders by a task each (``_tasks.Every``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import threading
import time
import weakref
from typing import Any

from .._redis.connections import RedisConnections
from .._tasks import Every
from ..errors import RedisMiddlewareError
from ..sansio.cache.data import DataCore
from ..sansio.cache.datafill import Lease
from ..sansio.flow import Delegate
from ..sansio.incidents import log_incident

__all__ = ["Held", "Leases", "arenew", "renewer"]


class Held:
    """A lease held by this process: renewed while ``held``; ``lost`` once Redis said
    it was no longer ours."""

    __slots__ = ("held", "key", "lost", "px", "token")

    def __init__(self, key: str, token: str, px: int) -> None:
        self.key, self.token, self.px = key, token, px
        self.held = True
        self.lost = False


def _lost(key: str) -> None:
    log_incident("data-lease-lost", "data cache: the lease %r expired or was taken over "
                 "while held (lengthen its timeout)", key)


class _Renewer:
    """One thread per process and Redis target renews every held lease each third of
    its timeout (a heap of due times); it ends after a few idle seconds and starts again
    with the next lease, so an idle process keeps no thread."""

    IDLE = 5.0

    def __init__(self, conns: RedisConnections, core: DataCore) -> None:
        self._conns = conns
        self._core = core
        self._heap: list[tuple[float, int, Held]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._order = itertools.count()

    def hold(self, key: str, token: str, px: int) -> Held:
        lease = Held(key, token, px)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + px / 3000, next(self._order), lease))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="redis-middleware data lease renewal")
                self._thread.start()
            self._cond.notify()
        return lease

    def forked(self) -> None:
        """In a forked child, before any thread runs: the parent's leases are the parent's
        to renew (a child renewing them would keep a crashed parent's locks for as long
        as it lives), its renewal thread is not here, and its lock may have been held by
        that thread at the fork."""
        self._heap = []
        self._cond = threading.Condition()
        self._thread = None

    def _next(self) -> Held | None:
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
                _lost(lease.key)
                continue
            with self._cond:
                if lease.held:
                    heapq.heappush(self._heap, (time.monotonic() + lease.px / 3000,
                                                next(self._order), lease))


_renewers: weakref.WeakKeyDictionary[RedisConnections, _Renewer] = weakref.WeakKeyDictionary()
_renewers_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _renewers_lock
    _renewers_lock = threading.Lock()
    for found in list(_renewers.values()):
        found.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
        _lost(key)


class Leases:
    """Runs a get_or_set flow's loader, renewing the key's lease (when it holds one)
    until the loader returns or raises."""

    def __init__(self, conns: RedisConnections, core: DataCore) -> None:
        self._conns = conns
        self._core = core

    def load(self, loader: Delegate, lease: Lease | None) -> Any:
        held = None if lease is None else renewer(self._conns, self._core).hold(*lease)
        try:
            return loader.call()
        finally:
            if held is not None:
                held.held = False

    async def aload(self, loader: Delegate, lease: Lease | None) -> Any:
        if lease is None:
            return await loader.acall()
        renewal = Every(lease[2] / 3000, functools.partial(arenew, self._conns, self._core,
                                                           *lease), "data cache lease renewal")
        try:
            return await loader.acall()
        finally:
            await renewal.stop()
