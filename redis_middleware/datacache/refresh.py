"""Background refreshes of stale values: a thread pool for sync callers, a task for
async ones. The flow that refreshes (load, store, free the lease) is the core's
(``Fill._refresh``); this only runs it on its own, one per key in this process."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from .._redis.connections import RedisConnections
from .._tasks import detach, stop_tasks
from ..sansio.flow import PausingFlow

__all__ = ["Refresher"]

_WORKERS = 4
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    """The threads that refresh stale values for sync callers (one pool per process: a
    forked child starts without one, below)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(_WORKERS,
                                           thread_name_prefix="redis-middleware-data-refresh")
    return _pool


class Refresher:
    """The refreshes one ``DataCache`` runs in the background, by key."""

    def __init__(self, conns: RedisConnections) -> None:
        self._conns = conns
        self.forked()
        _live.add(self)

    def forked(self) -> None:
        """Nothing refreshing (and in a forked child: the parent's refreshes, its threads
        and tasks, did not come along; a key they held is refreshed again here)."""
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._threads: set[Future[None]] = set()
        self._closed = False

    def refreshing(self, name: str) -> bool:
        """Whether a refresh of ``name`` would start nothing new: one runs in this
        process already, or this cache was closed (then none is started at all)."""
        return self._closed or name in self._refreshing

    def refresh(self, name: str, flow: PausingFlow[None]) -> bool:
        """Run ``flow`` in a worker thread; False when none can start (closed, or the
        interpreter shutting down)."""
        if self._closed:
            return False
        self._refreshing.add(name)
        try:
            future = _threads().submit(contextvars.copy_context().run, self._run, name, flow)
        except RuntimeError:  # the interpreter is shutting down
            self._refreshing.discard(name)
            return False
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return True

    def _run(self, name: str, flow: PausingFlow[None]) -> None:
        try:
            self._conns.run(flow)  # it logs what failed itself
        finally:
            self._refreshing.discard(name)

    async def arefresh(self, name: str, flow: PausingFlow[None]) -> bool:
        """Run ``flow`` in a task of its own (a cancelled caller does not stop it)."""
        self._refreshing.add(name)
        task = detach(self._arun(name, flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _arun(self, name: str, flow: PausingFlow[None]) -> None:
        try:
            await self._conns.arun(flow)
        finally:
            self._refreshing.discard(name)

    def close(self, timeout: float | None) -> bool:
        """Start no more refreshes, and wait up to ``timeout`` seconds (None: as long as
        they take) for those running in threads; True when none runs any more."""
        self._closed = True
        _, running = wait(list(self._threads), timeout)
        return not running

    async def aclose(self) -> None:
        """Stop the running loop's refreshes (they are cancelled)."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._tasks if t.get_loop() is loop]
        await stop_tasks(*mine, what="data cache refresh")


_live: weakref.WeakSet[Refresher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's pool threads did not come along, and one of them may have held the
    # lock at the fork.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    for refresher in list(_live):
        refresher.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
