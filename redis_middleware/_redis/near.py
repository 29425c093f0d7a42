"""The near cache of one Redis target and key prefix: its memory, its lock, and a tracking
connection per master (``tracking.py``: why it is built this way; ``sansio/cache/near.py``:
what it decides with; ``docs/near-cache.md``: what it promises)."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import hiredis

from ..config.settings import Settings
from ..config.urls import RedisTarget
from ..sansio import metrics
from ..sansio.cache import near as decide
from ..sansio.cache.near import MISS, NearStore, Ticket, freeze, thaw
from .breaker import Breaker
from .endpoint import Endpoint
from .tracking import NEVER, PROBE_EVERY, PROOF_WINDOW, Link, Tracker, tls_context


class Connections(Protocol):
    """What a near cache needs of its target's connections (``connections.py``)."""

    name: str
    target: RedisTarget
    endpoint: Endpoint | None
    breaker: Breaker

__all__ = ["NearCache"]

logger = logging.getLogger("redis_middleware")

TOPOLOGY_EVERY = 1.0  # a Cluster's primaries are asked again this often (and after a loss)


class NearCache:
    """The near cache of one Redis target and key prefix: the memory, its lock, and a
    tracking connection per master. Implements ``sansio.cache.near.NearView``.

    Built on first use of a settings with ``near_cache_size`` > 0
    (:func:`~redis_middleware._redis.connections.near_cache_for`); its connections start
    on its first lookup, so a process that forks its workers before serving (gunicorn's
    ``--preload``) starts nothing; a forked child never reads its parent's connections
    and starts its own.
    """

    def __init__(self, conns: Connections, settings: Settings) -> None:
        self.conns = conns
        self.settings = settings
        self.prefixes = decide.prefixes(settings.key_prefix)
        # A channel nobody publishes on (``decide.tracking`` says why it is subscribed).
        self.channel = f"{settings.key_prefix}:near"
        self.where = conns.name
        self.off = False
        self._reset()
        conns.breaker.listeners.append(self._breaker)
        _live.add(self)

    def _reset(self) -> None:
        s = self.settings
        self.lock = threading.Lock()
        self.store = NearStore(s.near_cache_size, s.near_cache_bytes, s.near_cache_ttl)
        self.started = False
        self.ready_until = NEVER
        self.trackers: list[Tracker] = []
        self._by_fd: dict[int, Tracker] = {}
        self._epoll = select.epoll()
        self._watcher: threading.Thread | None = None
        self._topology = threading.Event()  # wakes the Cluster watcher
        self._known = False  # a Cluster's primaries were read at least once

    # -- what the cores call -------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The value kept for ``key`` (a fresh copy), or MISS."""
        now = time.monotonic()
        with self.lock:
            if not self._serving(now):
                return MISS
            kept = self.store.get(key, now)
        return thaw(kept)

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        now = time.monotonic()
        with self.lock:
            if not self._serving(now):
                return [MISS] * len(keys)
            get = self.store.get
            kept = [get(key, now) for key in keys]
        return [thaw(k) for k in kept]

    def ticket(self, key: str) -> Ticket | None:
        """Before a read of ``key`` is sent; None while nothing may be kept."""
        now = time.monotonic()
        with self.lock:
            if not self._serving(now):
                return None
            return self.store.begin(key)

    def put(self, ticket: Ticket | None, value: Any, size: int, ttl_ms: float | None = None,
            copy: bool = True, builtin: bool = False) -> bool:
        """After the read: keep ``value`` (``size``: its bytes as stored in Redis) unless
        the key changed since ``ticket`` was taken. ``ttl_ms``: what the key had left
        (``PTTL``: -1 none, -2 gone; None: unknown); ``copy``: each hit gets a fresh
        copy (False: the value is immutable, it is shared); ``builtin``: the value holds
        builtin types only (:func:`freeze`)."""
        if ticket is None:
            return False
        if not self.store.fits(ticket.key, size):
            self.drop(ticket)
            return False
        kept = freeze(value, builtin) if copy else value
        if kept is MISS or (ttl_ms is not None and ttl_ms != -1 and ttl_ms <= 0):
            self.drop(ticket)
            return False
        ttl = None if ttl_ms is None or ttl_ms == -1 else ttl_ms / 1000
        with self.lock:
            return self.store.store(ticket, kept, size, time.monotonic(), ttl)

    def drop(self, ticket: Ticket | None) -> None:
        if ticket is not None:
            with self.lock:
                self.store.abandon(ticket)

    def valid(self, ticket: Ticket) -> bool:
        with self.lock:
            return self.store.live(ticket)

    def forget(self, *keys: str) -> None:
        with self.lock:
            self.store.invalidate(keys)

    def flush(self, reason: str = "") -> None:
        with self.lock:
            self.store.flush(reason)

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Start if need be and wait until memory may be served (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            with self.lock:
                if self._serving(now):
                    return True
            if now > deadline or self.off:
                return False
            time.sleep(0.005)

    # -- serving (lock held) -------------------------------------------------------------
    def _serving(self, now: float) -> bool:
        if now < self.ready_until:
            events = self._epoll.poll(0)
            if events:
                for fd, _ in events:
                    tracker = self._by_fd.get(fd)
                    if tracker is not None:
                        tracker.drain(now)
            return now < self.ready_until and not self.conns.breaker.failing
        if not self.started:
            self._start()
        return False

    def recompute(self) -> None:
        """When memory may be served: every tracker up and proven (lock held)."""
        trackers = self.trackers
        if self.off or not trackers or (self._watcher is not None and not self._known) or any(
                t.state != "up" for t in trackers):
            self.ready_until = NEVER
        else:
            self.ready_until = min(t.proven for t in trackers) + PROOF_WINDOW

    def watch(self, fd: int, tracker: Tracker) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._by_fd[fd] = tracker

    def unwatch(self, fd: int) -> None:
        self._by_fd.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def tracker_lost(self) -> None:
        self._topology.set()  # a Cluster's primaries may have changed

    # -- starting and stopping -----------------------------------------------------------
    def _start(self) -> None:
        self.started = True
        if self.off:
            return
        target = self.conns.target
        if target.kind == "memory":
            self._turn_off("memory:// has no client-side caching (CLIENT TRACKING)",
                           "memory")
            return
        if target.kind == "standalone":
            ep = self.conns.endpoint
            if ep is None:
                self._turn_off("REDIS_URL has options only redis-py reads", "url")
                return
            self._add(ep.where, lambda: ep)
        elif target.kind == "sentinel":
            self._add(f"the master of {target.service_name}", self._sentinel_master)
        else:
            self._watcher = threading.Thread(target=self._watch_cluster, daemon=True,
                                             name="redis-middleware-near cluster")
            self._watcher.start()

    def _add(self, where: str, locate: Callable[[], Endpoint],
             address: tuple[str, int] | None = None) -> None:
        tracker = Tracker(self, where, locate, address)
        self.trackers.append(tracker)
        tracker.start()

    def _turn_off(self, why: str, reason: str) -> None:
        """Off for the life of the process (lock held): one WARNING."""
        if self.off:
            return
        self.off = True
        logger.warning("near cache off for Redis at %s: %s; every read goes to Redis",
                       self.where, why)
        if metrics.hook is not None:
            metrics.hook.near("off", reason)
        self.store.flush("")
        for tracker in self.trackers:
            tracker.stop(join=False)
        self.recompute()

    def refused(self, reply: str) -> None:
        with self.lock:
            self._turn_off(f"it refuses CLIENT TRACKING ({reply})", "refused")

    def _breaker(self, is_open: bool) -> None:
        if is_open:
            with self.lock:
                self.store.flush("breaker")

    def close(self) -> None:
        """Stop the connections and threads and empty the memory; the next lookup starts
        again (as the clients of ``RedisConnections`` do after ``close``)."""
        with self.lock:
            trackers, self.trackers = self.trackers, []
            watcher, self._watcher = self._watcher, None
            self.started, self._known = False, False
            self.recompute()
            self.store.flush("")
            for tracker in trackers:
                tracker.stopped = True
        self._topology.set()
        for tracker in trackers:
            tracker.stop(join=True)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5)
        with self.lock:
            self._topology = threading.Event()

    def after_fork(self) -> None:
        """In a forked child: the parent's connections are not ours to read (each
        invalidation would reach one process only); close our copies, start afresh."""
        for tracker in self.trackers:
            tracker.forsake()
        self._epoll.close()
        self._reset()

    # -- where the masters are -----------------------------------------------------------
    def _node(self, host: str, port: int) -> Endpoint:
        t, s = self.conns.target, self.settings
        tls = tls_context(t.tls_options) if t.tls else None
        return Endpoint(host=host, port=port, path=None, db=0, username=t.username,
                        password=t.password, protocol=3, tls=tls,
                        connect_timeout=s.connect_timeout, timeout=s.socket_timeout)

    def _ask(self, host: str, port: int, *command: Any) -> Any:
        ep = self._node(host, port)
        link = Link(ep)
        try:
            auth = link.call(*decide.hello(2, ep.username, ep.password))
            if isinstance(auth, Exception):
                raise ConnectionError(f"{host}:{port} refused the session: {auth}")
            return link.call(*command)
        finally:
            link.close()

    def _sentinel_master(self) -> Endpoint:
        """The master the Sentinels name now (asked at every connect)."""
        t = self.conns.target
        for host, port in t.hosts:
            try:
                found = self._ask(host, port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                  t.service_name)
            except OSError:
                continue
            if isinstance(found, list) and len(found) == 2:
                return self._node(found[0].decode(), int(found[1]))
        raise ConnectionError(f"no Sentinel names a master for {t.service_name}")

    def _primaries(self) -> set[tuple[str, int]]:
        """The Cluster's primaries, as the first node that answers says."""
        known = [t.address for t in list(self.trackers) if t.address is not None]
        for host, port in [*known, *self.conns.target.hosts]:
            try:
                slots = self._ask(host, port, "CLUSTER", "SLOTS")
            except OSError:
                continue
            if isinstance(slots, list) and slots:
                out = set()
                for row in slots:
                    node_host = row[2][0].decode() if row[2][0] else host
                    out.add((node_host if node_host != "?" else host, int(row[2][1])))
                return out
        raise ConnectionError("no Cluster node answers CLUSTER SLOTS")

    def _watch_cluster(self) -> None:
        """A tracker per primary: asked every second, and at once after a loss."""
        while True:
            with self.lock:
                if self._watcher is not threading.current_thread() or self.off:
                    return
                event = self._topology
            try:
                wanted = self._primaries()
            except (OSError, hiredis.ProtocolError, IndexError, ValueError) as exc:
                logger.debug("near cache: the Cluster's primaries are unknown: %s", exc)
                event.wait(PROBE_EVERY)
                event.clear()
                continue
            gone: list[Tracker] = []
            with self.lock:
                if self._watcher is not threading.current_thread() or self.off:
                    return
                have = {t.address: t for t in self.trackers}
                if set(have) != wanted:
                    gone = [t for a, t in have.items() if a not in wanted]
                    self.trackers = [t for t in self.trackers if t.address in wanted]
                    for tracker in gone:
                        tracker.stop(join=False)
                    if self._known:  # the slots moved: anything kept may be stale
                        self.store.flush("failover")
                    for host, port in sorted(wanted - set(have)):
                        self._add(f"{host}:{port}", partial(self._node, host, port),
                                  (host, port))
                self._known = True
                self.recompute()
            event.wait(TOPOLOGY_EVERY)
            event.clear()


_live: weakref.WeakSet[NearCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for near in list(_live):
        near.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
