"""In-process single-flight: the callers of one process that miss a key share one load.

Threads share a per-key event, the tasks of one event loop a per-key future; the first
caller leads (the get_or_set flow, ``sansio/cache/datafill.py``, goes on to Redis for
it), the others wait at most ``data_lock_wait`` seconds for its outcome. The tasks of one
loop that read a key at the same moment also share one ``GET`` (:class:`SharedReads`).

A load that asks for its own key (two layers of caching on one key, a loader reading
the key it fills; also from a task it spawned, or a worker thread running its sync
loader) would wait for itself: the keys a caller is loading are in a context variable
(copied into child tasks and ``asyncio.to_thread``), and such a call loads at once
while that load is open (a task that outlives it is no longer inside it).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .._redis.connections import RedisConnections
from ..errors import RedisMiddlewareError
from ..sansio.cache.data import DataCore
from ..sansio.cache.datafill import Followed, Ticket
from ..sansio.cache.near import Ticket as NearTicket

__all__ = ["Flights", "SharedReads"]

_RETRY = object()  # a reader gave up without a reply (cancelled): the others read again
_REENTERED = Followed(None, None, None)  # "load it yourself", as after data_lock_wait

# The loads this context leads (usually none). A task or thread it starts copies the
# set; a load is counted only while it is open (``closed``), so a task that outlives the
# load its parent led is no longer inside it.
_loading: contextvars.ContextVar[frozenset[_Flight | _TaskFlight]] = contextvars.ContextVar(
    "redis_middleware_data_loading", default=frozenset())


def _inside(owner: Flights, name: str) -> bool:
    """Whether this context is inside its own open load of ``name``."""
    return any(f.owner is owner and f.name == name and not f.closed for f in _loading.get())


def _leave(flight: _Flight | _TaskFlight) -> None:
    # Not ContextVar.reset: a ticket may be closed from another context (a generator
    # closed late); removing only this flight is right in any context.
    flight.closed = True
    loading = _loading.get()
    if flight in loading:
        _loading.set(loading - {flight})


class _Flight:
    """One key being loaded by a thread of this process; the others wait on ``done``."""

    __slots__ = ("closed", "done", "error", "flights", "lock", "name", "owner", "stored")

    def __init__(self, owner: Flights, flights: dict[str, _Flight], lock: threading.Lock,
                 name: str) -> None:
        self.owner, self.flights, self.lock, self.name = owner, flights, lock, name
        self.done = threading.Event()
        self.stored: bytes | None = None  # the encoded value (followers decode their own)
        self.error: BaseException | None = None
        self.closed = False
        _loading.set(_loading.get() | {self})

    def settle(self, stored: bytes) -> None:
        self.stored = stored

    def fail(self, error: BaseException) -> None:
        self.error = error

    def close(self) -> None:
        _leave(self)
        with self.lock:
            if self.flights.get(self.name) is self:
                del self.flights[self.name]
        self.done.set()


class _TaskFlight:
    """One key being loaded by a task of this event loop; the others await ``future``."""

    __slots__ = ("closed", "flights", "future", "name", "owner")

    def __init__(self, owner: Flights, flights: dict[str, asyncio.Future[Any]], name: str
                 ) -> None:
        self.owner, self.flights, self.name = owner, flights, name
        self.future = flights[name] = asyncio.get_running_loop().create_future()
        self.closed = False
        _loading.set(_loading.get() | {self})

    def settle(self, stored: bytes) -> None:
        self.future.set_result(stored)

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)
        self.future.exception()  # retrieved: no "never retrieved" log when nobody waited

    def close(self) -> None:
        _leave(self)
        if not self.future.done():  # cancelled (or another BaseException): followers retry
            self.future.set_result(None)
        if self.flights.get(self.name) is self.future:
            del self.flights[self.name]


class Flights:
    """The loads in flight in this process, by key: ``join`` for threads, ``ajoin`` for
    the tasks of the running loop."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._threads: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = (
            weakref.WeakKeyDictionary())
        _forgotten_at_fork.add(self)

    def forked(self) -> None:
        """In a forked child: the loads in flight are the parent's threads' and tasks',
        none of which is here, and the lock may have been held by one of them."""
        self._threads = {}
        self._lock = threading.Lock()
        self._loops = weakref.WeakKeyDictionary()

    def join(self, name: str) -> Ticket | Followed:
        if _inside(self, name):  # this caller's own load: it would wait for itself
            return _REENTERED
        with self._lock:
            flight = self._threads.get(name)
            if flight is None:
                flight = self._threads[name] = _Flight(self, self._threads, self._lock, name)
                return flight
        started = time.perf_counter()
        if not flight.done.wait(self.wait):
            return Followed(None, None, None)
        return Followed(flight.stored, flight.error, time.perf_counter() - started)

    async def ajoin(self, name: str) -> Ticket | Followed:
        if _inside(self, name):  # this caller's own load: it would wait for itself
            return _REENTERED
        loop = asyncio.get_running_loop()
        flights = self._loops.get(loop)
        if flights is None:
            flights = self._loops[loop] = {}
        future = flights.get(name)
        if future is None:
            return _TaskFlight(self, flights, name)
        started = time.perf_counter()
        try:
            stored = await asyncio.wait_for(asyncio.shield(future), self.wait)
        except TimeoutError:
            return Followed(None, None, None)
        except Exception as exc:  # the leader's loader failed
            return Followed(None, exc, time.perf_counter() - started)
        return Followed(stored, None, time.perf_counter() - started)


def _void(ticket: NearTicket) -> bool:
    return False


# What a forked child starts afresh (os.register_at_fork, below the classes).
_forgotten_at_fork: weakref.WeakSet[Flights | SharedReads] = weakref.WeakSet()


# One GET in flight: the near-cache ticket it was sent under, and the futures of the
# readers that joined it (a tuple: its identity marks the read; no __init__ call per hit).
_InFlight = tuple[NearTicket | None, list[asyncio.Future[Any]]]


class SharedReads:
    """One ``GET`` per key in flight, shared by the tasks of an event loop that read it
    meanwhile (a hot key read by many requests at once costs one command; each caller
    still decodes its own copy).

    A reader that joins gets what Redis held when that ``GET`` was sent, at most one
    round trip before it asked, except after a change it could know of. Once this process
    wrote the key (:meth:`forget`, after the write's reply), later readers send a ``GET``
    of their own; and a reader that will keep its value in the near cache joins only a
    read whose ticket is still valid: the near cache has heard of no change of the key
    since it was sent.
    """

    def __init__(self, conns: RedisConnections, core: DataCore,
                 valid: Callable[[NearTicket], bool] | None = None) -> None:
        self._conns = conns
        self._core = core
        # The near cache's ticket check (only asked when a reader holds a ticket).
        self._valid = valid if valid is not None else _void
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, _InFlight]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # a loop's first read, and forget() from any thread
        # The dictionary of the loop that read last: a weak-dict lookup per hit showed.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop],
                          dict[str, _InFlight]] | None = None
        _forgotten_at_fork.add(self)

    def forked(self) -> None:
        """In a forked child: no read of the parent's loops is in flight here, and the
        lock may have been held by one of its threads."""
        self._lock = threading.Lock()
        self._loops = weakref.WeakKeyDictionary()
        self._last = None

    async def read(self, name: str, ticket: NearTicket | None = None) -> bytes | None:
        """The reply of a ``GET`` of ``name``: one of its own, or one in flight it may
        join. ``ticket``: the caller's near-cache ticket (it will keep what it reads)."""
        loop = asyncio.get_running_loop()
        last = self._last
        reads = last[1] if last is not None and last[0]() is loop else self._reads_of(loop)
        # A name in flight was checked by the read that sent it: a joiner skips the check.
        while type(name) is str and (pending := reads.get(name)) is not None and (
                ticket is None or (pending[0] is not None and self._valid(pending[0]))):
            mine = loop.create_future()  # its own: a cancelled reader cancels only itself
            pending[1].append(mine)
            raw = await mine
            if raw is not _RETRY:
                return raw  # type: ignore[no-any-return]  # not typing.cast: a call per hit
        command = self._core.read_command(name)  # a bad name is refused before anything
        pending = reads[name] = (ticket, [])
        outcome: Any = _RETRY  # cancelled: the others read for themselves
        try:
            stored: bytes | None = await self._conns.acall(command)
            outcome = stored
            return stored
        except RedisMiddlewareError as exc:
            outcome = exc
            raise
        finally:
            if reads.get(name) is pending:
                # forget() in another thread may take it between the two: one pop, no
                # KeyError that would leave the waiters below waiting for ever.
                reads.pop(name, None)
            for waiter in pending[1]:
                if not waiter.done():
                    if isinstance(outcome, BaseException):
                        waiter.set_exception(outcome)
                    else:
                        waiter.set_result(outcome)

    def _reads_of(self, loop: asyncio.AbstractEventLoop) -> dict[str, _InFlight]:
        with self._lock:
            reads = self._loops.get(loop)
            if reads is None:
                reads = self._loops[loop] = {}
        self._last = (weakref.ref(loop), reads)
        return reads

    def forget(self, names: Iterable[str] | None = None) -> None:
        """After this process wrote ``names`` (None: any name, as after a clear): readers
        from now on send a ``GET`` of their own rather than join one sent before. Those
        already waiting get that read's reply."""
        with self._lock:
            loops = list(self._loops.values())
        for reads in loops:
            if names is None:
                reads.clear()
            else:
                for name in names:
                    reads.pop(name, None)


def _after_fork_in_child() -> None:
    for found in list(_forgotten_at_fork):
        found.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
