"""Redis clients built from ``Settings``: one pool per process, shared by all components.

:func:`connections_for` returns the process-wide :class:`RedisConnections` for a
settings' Redis target. It builds the sync client on first use and one asyncio
client per running event loop (an asyncio client belongs to the loop that made
it), never at import time. Connection failures surface on use, as
:class:`RedisUnavailableError`, never at import or at app startup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from ..config.settings import Settings
from ..config.urls import RedisTarget
from ..config.urls import mask_url as _mask_url
from ..errors import RedisUnavailableError
from ..sansio.cache import near as near_decisions
from ..sansio.flow import Batch, Delegate, Pause, PausingFlow
from .breaker import Breaker
from .driver import (
    AsyncCallOne,
    AsyncExecute,
    CallOne,
    Command,
    Execute,
    aone_of,
    call_async,
    call_sync,
    one_of,
    redispy_aexecute,
    redispy_cluster_execute,
    redispy_execute,
    run_async,
    run_sync,
)
from .endpoint import Endpoint, endpoint_for
from .near import NearCache
from .wire_async import AsyncWire
from .wire_sync import SyncWire

__all__ = ["RedisConnections", "connections_for", "near_cache_for"]

logger = logging.getLogger("redis_middleware")
T = TypeVar("T")

# A loop's client: its execute and call functions, and the built-in client if it is one.
_LoopClient = tuple[AsyncExecute, AsyncCallOne, AsyncWire | None]

_registry: dict[tuple[Any, ...], RedisConnections] = {}
_registry_lock = threading.Lock()
_memory_server: Any = None
_memory_lock = threading.Lock()


def memory_server() -> Any:
    """The one in-process fakeredis server of this process (``memory://``)."""
    global _memory_server
    with _memory_lock:
        if _memory_server is None:
            import fakeredis  # imported lazily: only memory:// needs it

            _memory_server = fakeredis.FakeServer()
            logger.warning(
                "REDIS_URL is memory://: data lives in this process only and is not shared "
                "with other workers; set REDIS_URL for production"
            )
        return _memory_server


class RedisConnections:
    """The clients, circuit breaker and round-trip counters of one Redis target."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.target: RedisTarget = settings.target
        self.name = _mask_url(settings.redis_url)
        self.breaker = Breaker(settings.breaker_cooldown, self.name)
        self.round_trips = 0
        self.commands = 0
        self.script_loads = 0
        self._sync: Any = None
        # A standalone server is reached through the built-in pipelined client
        # (``wire_sync.py``, ``wire_async.py``); Cluster, Sentinel, memory:// and Pub/Sub
        # through redis-py.
        self.endpoint: Endpoint | None = None
        if self.target.kind == "standalone":
            self.endpoint = endpoint_for(
                self.target.url, settings.connect_timeout, settings.socket_timeout)
        self._sync_execute: Execute | None = None
        self._sync_call: CallOne | None = None
        self._sync_wire: SyncWire | None = None
        self._async_execute: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        # The client of the loop that ran the last flow: a weak-dict lookup per flow
        # showed in the driver micro-benchmark (bench/flow_overhead.py).
        self._last_async: tuple[weakref.ref[asyncio.AbstractEventLoop], _LoopClient] | None = (
            None)
        self._lock = threading.RLock()
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._init_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._closers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[Callable[[], Awaitable[None]]]
        ] = weakref.WeakKeyDictionary()
        self._near: dict[tuple[Any, ...], NearCache] = {}

    def on_aclose(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` when :meth:`aclose` is called in the running loop."""
        self._closers.setdefault(asyncio.get_running_loop(), []).append(closer)

    # -- clients ------------------------------------------------------------
    def sync_client(self) -> Any:
        """The process's sync client (built on first use)."""
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._build(asyncio_client=False)
        return self._sync

    def async_client(self) -> Any:
        """The asyncio client of the running event loop (built on first use in that loop)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = self._build(asyncio_client=True)
        return client

    def _common(self) -> dict[str, Any]:
        s = self.settings
        return {
            "socket_timeout": s.socket_timeout,
            "socket_connect_timeout": s.connect_timeout,
            "health_check_interval": 30,
        }

    def _build(self, *, asyncio_client: bool) -> Any:
        t = self.target
        mod: Any = redis.asyncio if asyncio_client else redis
        # One immediate retry on a broken pooled connection (e.g. after a Redis
        # restart); timeouts are not retried, so a slow Redis costs one timeout.
        retry = mod.retry.Retry(NoBackoff(), 1, (redis.exceptions.ConnectionError,))
        if t.kind == "memory":
            import fakeredis

            cls = fakeredis.FakeAsyncRedis if asyncio_client else fakeredis.FakeRedis
            return cls(server=memory_server())
        common = self._common()
        if t.kind == "standalone":
            return mod.Redis.from_url(
                t.url, max_connections=self.settings.max_connections, retry=retry, **common
            )
        auth = {"username": t.username, "password": t.password}
        tls = {"ssl": True, **t.tls_options} if t.tls else {}
        if t.kind == "cluster":
            cluster_mod: Any = redis.asyncio.cluster if asyncio_client else redis.cluster
            nodes = [cluster_mod.ClusterNode(host, port) for host, port in t.hosts]
            return cluster_mod.RedisCluster(
                startup_nodes=nodes, max_connections=self.settings.max_connections,
                retry=retry, **auth, **tls, **common,
            )
        sentinel_mod: Any = redis.asyncio.sentinel if asyncio_client else redis.sentinel
        sentinel = sentinel_mod.Sentinel(
            list(t.hosts),
            sentinel_kwargs={**common, **auth, **tls},
            **common,
        )
        client = sentinel.master_for(
            t.service_name, db=t.db, retry=retry, max_connections=self.settings.max_connections,
            **auth, **tls,
        )
        client._rmw_sentinels = sentinel.sentinels  # closed with the client
        return client

    def pubsub(self, *, asyncio_client: bool) -> Any:
        """A Pub/Sub object. On a cluster, a plain connection to one node: a classic
        PUBLISH reaches every node (redis-py's cluster Pub/Sub fails on some slots)."""
        if self.target.kind != "cluster":
            client = self.async_client() if asyncio_client else self.sync_client()
            return client.pubsub()
        mod: Any = redis.asyncio if asyncio_client else redis
        host, port = self.target.hosts[0]
        tls = {"ssl": True, **self.target.tls_options} if self.target.tls else {}
        node = mod.Redis(host=host, port=port, username=self.target.username,
                         password=self.target.password, socket_connect_timeout=(
                             self.settings.connect_timeout), **tls)
        return node.pubsub()

    def pubsub_client(self, host: str | None = None, port: int | None = None) -> Any:
        """A new asyncio client for one shared Pub/Sub connection (a Cluster node's when
        ``host`` is given). It never retries or reconnects on its own: a lost connection
        must surface, so that its subscribers are told they may have missed messages
        (redis-py would resubscribe silently)."""
        t = self.target
        s = self.settings
        mod: Any = redis.asyncio
        common: dict[str, Any] = {
            "socket_timeout": s.socket_timeout, "socket_connect_timeout": s.connect_timeout,
            "socket_keepalive": True, "retry": mod.retry.Retry(NoBackoff(), 0)}
        if t.kind == "memory":
            import fakeredis

            return fakeredis.FakeAsyncRedis(server=memory_server())
        if t.kind == "standalone":
            return mod.Redis.from_url(t.url, **common)
        auth: dict[str, Any] = {"username": t.username, "password": t.password}
        tls: dict[str, Any] = {"ssl": True, **t.tls_options} if t.tls else {}
        if t.kind == "cluster":
            return mod.Redis(host=host, port=port, **auth, **tls, **common)
        sentinel = mod.sentinel.Sentinel(
            list(t.hosts), sentinel_kwargs={**auth, **tls,
                                            "socket_timeout": s.socket_timeout,
                                            "socket_connect_timeout": s.connect_timeout})
        client = sentinel.master_for(t.service_name, db=t.db, **auth, **tls, **common)
        client._rmw_sentinels = sentinel.sentinels
        return client

    async def cluster_node_for(self, key: str, refresh: bool = False) -> tuple[str, int]:
        """The host and port of the Cluster node that owns ``key``'s slot now.

        ``refresh``: ask the Cluster first (after a node was lost): one read-only command
        on the slot, so that redis-py follows a MOVED or, after a connection error, reads
        the slots again, as it does for any command. When that fails, the slot map it
        holds may be stale (a demoted master, a dead one): ``redis.ConnectionError``, for
        the caller to try again later, rather than an answer that may be wrong."""
        client = self.async_client()
        if not getattr(client, "_rmw_ready", False):
            await self._initialize(client)
        if refresh:
            try:
                await client.exists(key)
            except (redis.RedisError, RedisClusterException, OSError) as exc:
                raise redis.ConnectionError(
                    f"the Cluster did not say where the slot is served ({exc})") from exc
        node = client.get_node_from_key(key)
        return str(node.host), int(node.port)

    def near_cache(self, settings: Settings) -> NearCache | None:
        """The near cache of ``settings``' key prefix on this target (one per prefix and
        near-cache settings), or None when ``near_cache_size`` is 0."""
        if not settings.near_cache_size:
            return None
        key = (settings.key_prefix, settings.near_cache_size, settings.near_cache_bytes,
               settings.near_cache_ttl)
        found = self._near.get(key)
        if found is None:
            with self._lock:
                found = self._near.get(key)
                if found is None:
                    found = self._near[key] = NearCache(self, settings)
        return found

    # -- running flows ------------------------------------------------------
    def _sync_executor(self) -> Execute:
        if self._sync_execute is None:
            with self._lock:
                if self._sync_execute is None:
                    if self.endpoint is not None:
                        wire = self._sync_wire = SyncWire(
                            self.endpoint, self.settings.max_connections)
                        self._sync_call = wire.call
                        self._sync_execute = wire.execute
                    else:
                        execute = self._cluster_execute_on_first_batch() \
                            if self.target.kind == "cluster" \
                            else redispy_execute(self.sync_client())
                        self._sync_call = one_of(execute)
                        self._sync_execute = execute
        return self._sync_execute

    def _async_executor(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        found = self._async_execute.get(loop)
        if found is None:
            if self.endpoint is not None:
                wire = AsyncWire(self.endpoint)
                found = (wire.execute, wire.call, wire)
            else:
                client = self.async_client()
                execute = redispy_aexecute(client)
                if self.target.kind == "cluster":
                    execute = self._cluster_initialized_by_first_batch(client, execute)
                found = (execute, aone_of(execute), None)
            self._async_execute[loop] = found
        return found

    def run(self, flow: PausingFlow[T], first: Batch | Pause | Delegate | None = None) -> T:
        """Run ``flow`` on the sync client (WSGI, CLI); ``first``: the batch it yielded
        already (``sansio.flow.step``)."""
        return run_sync(flow, self._sync_executor(), self.breaker, self, first)

    def call(self, command: Command) -> Any:
        """One command's reply, on the sync client: what running a flow that yields only
        this command does (the breaker, the counters, the metrics, the errors), without
        the flow, its batch or their lists (:func:`call_sync`). The hot read of the cache
        backends."""
        return call_sync(command, self._sync_call or self._sync_caller(), self.breaker, self)

    def _sync_caller(self) -> CallOne:
        execute = self._sync_executor()
        # _sync_call is None again only when close() ran meanwhile: use what was built.
        return self._sync_call or one_of(execute)

    async def arun(self, flow: PausingFlow[T],
                   first: Batch | Pause | Delegate | None = None) -> T:
        """Run ``flow`` on this event loop's asyncio client (ASGI); ``first``: as
        :meth:`run`."""
        last = self._last_async
        if last is not None and last[0]() is asyncio.get_running_loop():  # the usual case
            return await run_async(flow, last[1][0], self.breaker, self, first)
        return await run_async(flow, self._loop_client()[0], self.breaker, self, first)

    def acall(self, command: Command) -> Coroutine[Any, Any, Any]:
        """:meth:`call` on this event loop's asyncio client: :func:`call_async`'s coroutine
        (returned, not awaited here: a coroutine less to start and resume on every hit)."""
        last = self._last_async
        client = last[1] if last is not None and last[0]() is asyncio.get_running_loop() \
            else self._loop_client()
        return call_async(command, client[1], self.breaker, self)

    def _loop_client(self) -> _LoopClient:
        """This event loop's client (its execute and call functions), remembered for the
        next call (the usual case: one loop per process)."""
        client = self._async_executor()
        self._last_async = (weakref.ref(asyncio.get_running_loop()), client)
        return client

    def _cluster_execute_on_first_batch(self) -> Execute:
        """redis-py's sync cluster client connects in its constructor (the slots, then
        COMMAND): it is built by the first batch, so that a Cluster down then is an
        outage like any other (the breaker, the flow's fallback, one log line), as
        :meth:`_cluster_initialized_by_first_batch` makes it for the asyncio client;
        never a traceback."""
        built: list[Execute] = []

        def execute(commands: list[Command]) -> list[Any]:
            if not built:
                with self._lock:
                    if not built:
                        built.append(redispy_cluster_execute(self.sync_client()))
            return built[0](commands)

        return execute

    def _cluster_initialized_by_first_batch(self, client: Any, execute: AsyncExecute
                                            ) -> AsyncExecute:
        """:meth:`_cluster_execute_on_first_batch` for asyncio: this loop's cluster client
        is initialized by its first batch (:meth:`_initialize`), so that a Cluster down
        then is met by the flow as any outage (its fallback, one log line)."""
        async def run(commands: list[Command]) -> list[Any]:
            if not getattr(client, "_rmw_ready", False):
                await self._initialize(client)
            return await execute(commands)

        return run

    async def _initialize(self, client: Any) -> None:
        # redis-py's asyncio cluster client initializes lazily on first use; when many
        # coroutines race into that, nodes get replaced under connections in use (seen
        # as AttributeError in CI). Initialize once per loop, under a lock.
        lock = self._init_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if getattr(client, "_rmw_ready", False):
                return
            self.breaker.check()
            try:
                await client.initialize()
            except Exception as exc:
                self.breaker.failure(exc)
                raise RedisUnavailableError(f"Redis at {self.name} is unavailable: {exc}") from exc
            client._rmw_ready = True

    def close(self) -> None:
        """Close the sync clients' connections and the near caches' tracking connections
        (asyncio clients close with their loops)."""
        for near in list(self._near.values()):
            near.close()
        if self._sync_wire is not None:
            self._sync_wire.close()
        if self._sync is not None:
            for sentinel in getattr(self._sync, "_rmw_sentinels", ()):
                sentinel.close()
            self._sync.close()
            self._sync = None
        self._sync_execute = self._sync_call = self._sync_wire = None

    async def aclose(self) -> None:
        """Close the running loop's asyncio client (and resources registered with it)."""
        loop = asyncio.get_running_loop()
        for closer in self._closers.pop(loop, []):
            await closer()
        if self._last_async is not None and self._last_async[0]() is loop:
            self._last_async = None
        _, _, wire = self._async_execute.pop(loop, (None, None, None))
        if wire is not None:
            await wire.aclose()
        client = self._async.pop(loop, None)
        if client is not None:
            for sentinel in getattr(client, "_rmw_sentinels", ()):
                await sentinel.aclose()
            await client.aclose()


def connections_for(settings: Settings) -> RedisConnections:
    """The process-wide connections for ``settings``' Redis target and timeouts."""
    key = (
        settings.redis_url, settings.socket_timeout, settings.connect_timeout,
        settings.max_connections, settings.breaker_cooldown,
    )
    with _registry_lock:
        conns = _registry.get(key)
        if conns is None:
            conns = _registry[key] = RedisConnections(settings)
        return conns


def near_cache_for(settings: Settings) -> NearCache | None:
    """The process's near cache for ``settings`` (their Redis target and key prefix), or
    None when ``near_cache_size`` is 0. Its tracking connections start on first use."""
    return connections_for(settings).near_cache(settings)


# How the cores find a settings' near cache (``sansio/cache/near.py``: ``near_for``).
near_decisions.install(near_cache_for)


def _after_fork_in_child() -> None:
    """A forked child takes none of its parent's locks: a thread of the parent that held
    one at the fork (a Cluster or Sentinel client connects while it is being built under
    its connections' lock, for seconds when the servers are down) does not exist here,
    and the child would wait for it for ever on its first use."""
    global _registry_lock, _memory_lock
    _registry_lock, _memory_lock = threading.Lock(), threading.Lock()
    for conns in list(_registry.values()):
        conns._lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)
