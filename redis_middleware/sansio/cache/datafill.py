"""``get_or_set`` as one flow: read, judge, share one load, store.

One flow decides every call of ``get_or_set`` and of a decorated function, for the sync
driver (``RedisConnections.run``) and the asyncio one (``arun``) alike:

1. the value (one ``GET``; a caller that read it already hands the reply in);
2. fresh: served. Stale inside its window, or due for an early refresh (XFetch): served,
   and one background refresh started if this process takes the key's lease;
3. a miss: the callers of this process share one load (*join*); the one that leads
   claims the lease in Redis, or waits (polling) while another process holds it, runs
   the loader, then stores the value and frees the lease in one script;
4. Redis failing: the loader runs (still once per process) and nothing is stored.

What Redis commands cannot do is asked of the process running the flow (``Local``,
built by ``redis_middleware/datacache/``), each step yielded as a :class:`Delegate`: its
sync method for the sync driver, its ``a`` twin for the asyncio one. The drivers throw a
delegate's exception back into the flow, so that a failed or cancelled load frees its
lease before the exception reaches the caller; nothing is stored then.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NamedTuple, Protocol

from ..._memo import Memo
from ...errors import RedisMiddlewareError
from ..flow import Delegate, Flow, PausingFlow
from ..incidents import log_incident
from .data import DataCore, Seconds
from .datacalls import failed, report
from .dataenvelope import Entry, Judgement

__all__ = ["UNREAD", "Fill", "Followed", "Lease", "Local", "Policy", "Ticket"]

_NUMBERS = (int, float, type(None), timedelta)
_EARLY = (int, float, bool)
Lease = tuple[str, str, int]  # key, token, px: renewed while the loader runs
Tags = Callable[[], Sequence[str]]  # the tag keys of the value (rendered on a miss only)


class Policy(NamedTuple):
    """The validated options of a ``get_or_set`` (or of a decorated function)."""

    fresh_ms: int
    stale_ms: int
    early: float  # XFetch's beta (0: off)
    label: str  # the metrics label


class Followed(NamedTuple):
    """What a caller got that waited for the load of another caller of its process."""

    stored: bytes | None  # the leader's value, encoded; None: it gave up (cancelled)
    error: BaseException | None  # the leader's loader failed with this
    seconds: float | None  # how long it waited; None: it loads itself (past
    # data_lock_wait, or a call made inside its own load of the key: no lease, no wait)


class Ticket(Protocol):
    """A caller leads the load of its key in this process: it settles the ticket."""

    def settle(self, stored: bytes) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def close(self) -> None:
        """The load is over (unsettled: the followers try again)."""


class Joining(Protocol):
    """In-process single-flight: lead the key's load, or wait for its leader."""

    def join(self, name: str) -> Ticket | Followed: ...

    async def ajoin(self, name: str) -> Ticket | Followed: ...


class Loading(Protocol):
    """Runs the loader (the flow's delegate), renewing ``lease`` meanwhile."""

    def load(self, loader: Delegate, lease: Lease | None) -> Any: ...

    async def aload(self, loader: Delegate, lease: Lease | None) -> Any: ...


class Refreshing(Protocol):
    """Background refreshes: one per key in this process, run on their own."""

    def refreshing(self, name: str) -> bool: ...

    def refresh(self, name: str, flow: PausingFlow[None]) -> bool: ...

    async def arefresh(self, name: str, flow: PausingFlow[None]) -> bool: ...


class Local(NamedTuple):
    """What the process lends the flow; ``wrote(name)`` is told before a loaded value of
    ``name`` is stored and after (the near cache and the reads in flight forget it: this
    process reads its own writes)."""

    flights: Joining
    leases: Loading
    refresher: Refreshing
    wrote: Callable[[str], None]


class _Unread:
    __slots__ = ()


UNREAD: Any = _Unread()  # the flow reads the value itself


class Fill:
    """``get_or_set`` of one data-cache namespace, run by one process's ``Local``."""

    def __init__(self, core: DataCore, local: Local) -> None:
        self.core = core
        self.local = local
        self._policies: Memo[tuple[Any, ...], Policy] = Memo(256)

    def policy(self, ttl: Seconds | None, stale: Seconds, early: float | bool, label: str
               ) -> Policy:
        """A call's options, validated (and remembered: get_or_set pays this per hit)."""
        memo = (ttl, stale, early, label)
        plain = type(ttl) in _NUMBERS and type(stale) in _NUMBERS and type(early) in _EARLY
        found = self._policies.get(memo) if plain else None  # (True == 1: bools not here)
        if found is None:
            beta = 1.0 if early is True else float(early)
            if not beta >= 0 or beta > 100:
                raise ValueError(f"early is XFetch's beta, a number in [0, 100] (1 is "
                                 f"usual), not {early!r}")
            found = Policy(self.core.px(ttl), self.core.stale_ms(stale), beta, label)
            if plain:
                self._policies.put(memo, found)
        return found

    def flow(self, name: str, policy: Policy, loader: Delegate, tags: Tags,
             read: bytes | RedisMiddlewareError | None = UNREAD) -> PausingFlow[Any]:
        """The value of ``name``, loaded by ``loader`` (a delegate: ``call()`` for the sync
        driver, ``acall()`` for the asyncio one) on a miss. ``read``: the reply of the
        ``GET`` the caller sent already (a ``RedisMiddlewareError`` when it failed)."""
        if read is UNREAD:
            try:
                read = yield from self.core.read_flow(name)
            except RedisMiddlewareError as exc:
                read = exc
        if isinstance(read, RedisMiddlewareError):
            failed(read)
            report("bypass", policy.label)
            return (yield from self._single_flight(name, policy, loader, tags, bypass=True))
        judged = None if read is None else self._judge(read, policy)
        if judged is not None:
            entry, verdict = judged
            if verdict == "fresh":
                report("hit", policy.label)
                return entry.value
            report("stale", policy.label)
            yield from self._refresh_later(name, policy, loader, tags)
            return entry.value
        report("miss", policy.label)
        return (yield from self._single_flight(name, policy, loader, tags))

    def _judge(self, raw: bytes, policy: Policy) -> tuple[Entry, Judgement] | None:
        """A stored value and ``fresh``, ``stale`` or ``early`` (both: serve it and refresh
        in the background); None for a miss."""
        entry = self.core.decode(raw)
        if entry is None:
            return None
        verdict = self.core.judge(entry, time.time() * 1000, policy.early,
                                  1.0 - random.random())
        if verdict == "stale" and not policy.stale_ms:
            return None  # stored with a stale window this caller does not accept
        return entry, verdict

    def _single_flight(self, name: str, policy: Policy, loader: Delegate, tags: Tags,
                       bypass: bool = False) -> PausingFlow[Any]:
        """One load per key in this process; ``bypass``: Redis failed, nothing stored."""
        flights = self.local.flights
        join = Delegate(functools.partial(flights.join, name),
                        functools.partial(flights.ajoin, name))
        while True:
            joined = yield join
            if not isinstance(joined, Followed):
                break
            if joined.seconds is None:  # past the wait: our own load
                return (yield from self._load_and_store(name, policy, loader, tags, None,
                                                        bypass))[0]
            report("wait", policy.label, joined.seconds)
            if joined.error is not None:
                raise joined.error
            if joined.stored is not None:  # else the leader gave up: try again
                entry = self.core.decode(joined.stored)
                if entry is not None:
                    return entry.value
        ticket: Ticket = joined
        try:
            value, stored = yield from (
                self._load_and_store(name, policy, loader, tags, None, True) if bypass
                else self._lead(name, policy, loader, tags))
        except Exception as exc:
            ticket.fail(exc)
            raise
        else:
            ticket.settle(stored)
        finally:
            ticket.close()
        return value

    def _lead(self, name: str, policy: Policy, loader: Delegate, tags: Tags
              ) -> PausingFlow[tuple[Any, bytes]]:
        """Across processes: the lease, or the value another process stores meanwhile."""
        core = self.core
        token = core.token()
        try:
            raw, ours = yield from core.claim_flow(name, token)
            if raw is None and not ours:  # another process is loading it
                started = time.perf_counter()
                raw, ours = yield from core.wait_flow(name, token)
                report("wait", policy.label, time.perf_counter() - started)
        except RedisMiddlewareError as exc:
            failed(exc)
            return (yield from self._load_and_store(name, policy, loader, tags, None, True))
        if raw is not None:
            entry = core.decode(raw)
            if entry is not None:
                return entry.value, raw
        return (yield from self._load_and_store(name, policy, loader, tags,
                                                token if ours else None))

    def _load_and_store(self, name: str, policy: Policy, loader: Delegate, tags: Tags,
                        token: str | None, bypass: bool = False
                        ) -> PausingFlow[tuple[Any, bytes]]:
        """Run the loader (renewing the lease ``token`` meanwhile) and store its value,
        freeing the lease; the value and its encoded form. A loader that fails (or is
        cancelled) frees the lease, stores nothing, and its exception goes on."""
        core = self.core
        fill = core.fill_key(name)
        lease = None if token is None else (fill, token, core.lease_ms)
        leases = self.local.leases
        try:
            started = time.perf_counter()
            value = yield Delegate(functools.partial(leases.load, loader, lease),
                                   functools.partial(leases.aload, loader, lease))
            seconds = time.perf_counter() - started
            report("load", policy.label, seconds)
            tag_keys = tags()
            data = core.encode(value, policy.fresh_ms, policy.stale_ms, tag_keys,
                               int(seconds * 1000))
        except GeneratorExit:
            raise  # closed by its driver: no more round trips (the lease expires)
        except BaseException:
            if token is not None:
                yield from self._release(fill, token)
            raise
        if bypass:
            return value, data
        if core.too_large(data, name):
            try:
                yield from core.refuse_flow([name], token)
            except RedisMiddlewareError as exc:
                failed(exc)
        else:
            wrote = self.local.wrote
            wrote(name)
            try:
                yield from core.store_flow(name, data, policy.fresh_ms + policy.stale_ms,
                                           token, tag_keys)
            except RedisMiddlewareError as exc:
                failed(exc)
            finally:
                wrote(name)
        return value, data

    def _release(self, fill: str, token: str) -> Flow[None]:
        try:
            yield from self.core.release_flow(fill, token)
        except RedisMiddlewareError as exc:  # it expires by itself
            failed(exc)

    def _refresh_later(self, name: str, policy: Policy, loader: Delegate, tags: Tags
                       ) -> PausingFlow[None]:
        """Stale or early: unless this process refreshes ``name`` already, take the lease
        (free: nobody refreshes it) and refresh in the background."""
        refresher = self.local.refresher
        if refresher.refreshing(name):
            return
        core = self.core
        fill, token = core.fill_key(name), core.token()
        try:
            if not (yield from core.acquire_flow(fill, token, core.lease_ms)):
                return
        except RedisMiddlewareError as exc:
            failed(exc)
            return
        flow = self._refresh(name, policy, loader, tags, token)
        started = yield Delegate(functools.partial(refresher.refresh, name, flow),
                                 functools.partial(refresher.arefresh, name, flow))
        if not started:  # the interpreter is shutting down
            yield from self._release(fill, token)

    def _refresh(self, name: str, policy: Policy, loader: Delegate, tags: Tags, token: str
                 ) -> PausingFlow[None]:
        """The background refresh, under the lease taken for it: a failing loader is
        logged (once per incident) while the old value is served."""
        try:
            yield from self._load_and_store(name, policy, loader, tags, token)
        except Exception as exc:
            log_incident("data-refresh", "data cache: refreshing %r failed (%s: %s); its "
                         "stale value is served meanwhile", name, type(exc).__name__, exc)
