"""DataCache under concurrency and failure: single-flight across threads, tasks and
processes, the lock, stale-while-revalidate and early refresh, and Redis going away."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_middleware import (
    DataCache,
    LockNotAcquired,
    RedisMiddlewareError,
    RedisUnavailableError,
    Settings,
)
from redis_middleware.keys import KeySpace
from redis_middleware.sansio import incidents, metrics

from .support.clients import make_settings, raw_client
from .support.forks import held, in_forked_child
from .support.servers import free_port, start_redis_server, stop_redis_server
from .test_datacache import Recorder, audit_data_keys

pytestmark = [pytest.mark.usefixtures("data_audit"), pytest.mark.scenarios]


@pytest.fixture
def data_audit(request: pytest.FixtureRequest) -> Iterator[None]:
    # The outage tests run a server of their own (and no settings fixture).
    settings = (request.getfixturevalue("settings") if "settings" in request.fixturenames
                else None)
    yield
    if settings is not None:
        audit_data_keys(settings)


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})


@pytest.fixture
def raw(settings: Settings) -> Iterator[Any]:
    client = raw_client(settings)
    yield client
    client.close()


class Counter:
    """A loader's run count, kept in Redis (so that every process adds to one count)."""

    def __init__(self, settings: Settings, name: str = "loads") -> None:
        self.key = f"{settings.key_prefix}:data:test-{name}"
        self.settings = settings

    def add(self) -> int:
        client = raw_client(self.settings)
        try:
            n = int(client.incr(self.key))
            client.expire(self.key, 60)
            return n
        finally:
            client.close()

    @property
    def value(self) -> int:
        client = raw_client(self.settings)
        try:
            return int(client.get(self.key) or 0)
        finally:
            client.close()


def slow_loader(counter: Counter, seconds: float = 0.3) -> Callable[[], dict[str, int]]:
    def load() -> dict[str, int]:
        n = counter.add()
        time.sleep(seconds)
        return {"run": n}

    return load


def in_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


# -- single-flight -----------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False], ids=["one-cache", "a-cache-per-thread"])
def test_eight_threads_run_the_loader_once(settings: Settings, shared: bool) -> None:
    counter = Counter(settings)
    one = DataCache(settings)
    load = slow_loader(counter)
    results = in_threads(8, lambda: (one if shared else DataCache(settings)).get_or_set(
        "hot", load, ttl=60))
    assert results == [{"run": 1}] * 8
    assert counter.value == 1


@pytest.mark.parametrize("shared", [True, False], ids=["one-cache", "a-cache-per-task"])
async def test_twenty_tasks_run_the_loader_once(settings: Settings, shared: bool) -> None:
    counter = Counter(settings)
    one = DataCache(settings)

    async def load() -> dict[str, int]:
        n = await asyncio.to_thread(counter.add)
        await asyncio.sleep(0.3)
        return {"run": n}

    @one.cached(ttl=60, key="hot")
    async def decorated() -> dict[str, int]:
        return await load()

    caches = [one if shared else DataCache(settings) for _ in range(20)]
    if shared:
        results = await asyncio.gather(*(decorated() for _ in caches))
    else:
        results = await asyncio.gather(*(c.aget_or_set("hot", load, ttl=60) for c in caches))
    assert results == [{"run": 1}] * 20
    assert counter.value == 1
    await one.redis.aclose()


def _process_caller(url: str, prefix: str, start_at: float, queue: Any) -> None:
    settings = Settings(redis_url=url, key_prefix=prefix, secret_key=("p" * 40,))
    cache = DataCache(settings)
    counter = Counter(settings)

    @cache.cached(ttl=60, key="cross-process")
    def load() -> dict[str, int]:
        return slow_loader(counter, 0.5)()

    time.sleep(max(0.0, start_at - time.time()))
    results = in_threads(3, load)
    queue.put([r if not isinstance(r, Exception) else repr(r) for r in results])


def test_four_processes_run_the_loader_once(settings: Settings) -> None:
    if settings.target.kind == "memory":
        pytest.skip("memory:// is one process's store")
    counter = Counter(settings)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # after every process has imported and connected
    procs = [ctx.Process(target=_process_caller, args=(
        settings.redis_url, settings.key_prefix, start_at, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    assert results == [[{"run": 1}] * 3] * 4
    assert counter.value == 1


def test_a_failing_loader_propagates_and_is_not_cached(settings: Settings) -> None:
    cache = DataCache(settings)
    counter = Counter(settings)

    def fail() -> None:
        counter.add()
        time.sleep(0.2)
        raise LookupError("no such row")

    results = in_threads(4, lambda: cache.get_or_set("f", fail, ttl=60))
    assert all(isinstance(r, LookupError) for r in results)
    assert counter.value == 1  # the followers shared the leader's outcome
    started = time.monotonic()
    with pytest.raises(LookupError):
        cache.get_or_set("f", fail, ttl=60)
    assert time.monotonic() - started < 1  # the lease was released: nobody waits for it
    assert cache.get_or_set("f", lambda: "now", ttl=60) == "now"


async def test_a_failing_async_loader_propagates(settings: Settings) -> None:
    cache = DataCache(settings)

    async def fail() -> None:
        await asyncio.sleep(0.05)
        raise LookupError("no")

    results = await asyncio.gather(*(cache.aget_or_set("f", fail, ttl=60) for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert await cache.aget_or_set("f", lambda: 1, ttl=60) == 1
    await cache.redis.aclose()


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_loaders_slowness_or_failure_is_no_redis_outage(
        backend_url: str, side: str, caplog: pytest.LogCaptureFixture) -> None:
    """The loader runs between the flow's round trips: longer than the socket timeout,
    or raising the package's own RedisUnavailableError, it opens no breaker, its error
    reaches the caller, and the lease is free at once."""
    settings = make_settings(backend_url, socket_timeout=0.2)
    cache = DataCache(settings)

    def slow() -> str:
        time.sleep(0.4)
        return "slow"

    def down() -> str:
        raise RedisUnavailableError("the loader's own Redis")

    async def run(loader: Callable[[], str], key: str) -> Any:
        try:
            if side == "sync":
                return cache.get_or_set(key, loader, ttl=60)
            return await cache.aget_or_set(key, loader, ttl=60)
        finally:
            if side == "async":
                await cache.redis.aclose()

    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert asyncio.run(run(slow, "slow")) == "slow"
        assert cache.get("slow") == "slow"  # stored: the store did not time out either
        with pytest.raises(RedisUnavailableError, match="loader's own"):
            asyncio.run(run(down, "down"))
        started = time.monotonic()
        assert asyncio.run(run(lambda: "now", "down")) == "now"  # the lease was freed
        assert time.monotonic() - started < 1
    assert not cache.redis.breaker.failing
    outage = [m for r in caplog.records if "unavailable" in (m := r.getMessage())
              or "bypassed" in m]
    assert outage == []  # nothing logged as a Redis failure
    audit_data_keys(settings)


async def test_a_cancelled_leader_hands_over(settings: Settings) -> None:
    cache = DataCache(settings)
    started = asyncio.Event()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.3)
        return calls

    leader = asyncio.create_task(cache.aget_or_set("c", load, ttl=60))
    await started.wait()
    follower = asyncio.create_task(cache.aget_or_set("c", load, ttl=60))
    await asyncio.sleep(0.05)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await follower == 2  # it loaded itself: the lease had been released
    await cache.redis.aclose()


def test_a_follower_stops_waiting_after_lock_wait(settings: Settings, raw: Any) -> None:
    cache = DataCache(settings.replace(data_lock_wait=0.3))
    keys = KeySpace(settings.key_prefix)
    raw.set(keys.data_fill("w"), "another-process", px=10_000)  # a holder that never stores
    started = time.monotonic()
    assert cache.get_or_set("w", lambda: "mine", ttl=60) == "mine"
    assert 0.25 < time.monotonic() - started < 3
    assert cache.get("w") == "mine"
    raw.delete(keys.data_fill("w"))


def test_a_load_that_asks_for_its_own_key_does_not_wait_for_itself(settings: Settings
                                                                  ) -> None:
    # Two layers of caching on one key, or a loader that reads the key it fills: the
    # inner call must not wait data_lock_wait for the load it is part of.
    cache = DataCache(settings.replace(data_lock_wait=5))

    def outer() -> str:
        return "outer+" + cache.get_or_set("same", lambda: "inner", ttl=60)

    @cache.cached(ttl=60, key="layer:{a}")
    @cache.cached(ttl=60, key="layer:{a}", tags=["layers"])
    def layered(a: int) -> int:
        return a * 2

    started = time.monotonic()
    assert cache.get_or_set("same", outer, ttl=60) == "outer+inner"
    assert layered(4) == 8
    assert time.monotonic() - started < 2
    assert cache.get("same") == "outer+inner"  # the outer load stored last
    assert cache.get("layer:4") == 8


async def test_an_async_load_that_asks_for_its_own_key_does_not_wait_for_itself(
        settings: Settings) -> None:
    cache = DataCache(settings.replace(data_lock_wait=5))
    runs: list[str] = []

    def inner(where: str) -> Any:
        async def load() -> str:
            runs.append(where)
            return where
        return load

    async def from_a_child() -> str:  # nothing stored yet: the child must load itself
        (child,) = await asyncio.gather(cache.aget_or_set("child", inner("child"), ttl=60))
        return "outer+" + child

    async def from_the_same_task() -> str:
        return "outer+" + await cache.aget_or_set("same", inner("same"), ttl=60)

    def from_a_thread() -> str:
        return "outer+" + cache.get_or_set("thread", lambda: "thread", ttl=60)

    started = time.monotonic()
    try:
        assert await cache.aget_or_set("child", from_a_child, ttl=60) == "outer+child"
        assert await cache.aget_or_set("same", from_the_same_task, ttl=60) == "outer+same"
        assert await cache.aget_or_set("thread", from_a_thread, ttl=60) == "outer+thread"
        assert time.monotonic() - started < 2  # no data_lock_wait (5 s) for itself
        assert runs == ["child", "same"]
        assert await cache.aget("child") == "outer+child"  # the outer load stored last
    finally:
        await cache.aclose()
        await cache.redis.aclose()


async def test_a_task_that_outlives_the_load_it_was_started_in_is_outside_it(
        settings: Settings) -> None:
    # A loader that starts a task: once the load is over, that task's misses of the key
    # share one load again (single-flight), as anyone's.
    cache = DataCache(settings.replace(data_lock_wait=5))
    runs: list[int] = []
    later: list[asyncio.Task[Any]] = []

    async def load() -> int:
        runs.append(1)
        await asyncio.sleep(0.2)
        return len(runs)

    async def afterwards() -> list[Any]:
        await asyncio.sleep(0.1)  # the load that started this task is over by now
        await cache.adelete("k")
        return list(await asyncio.gather(*(cache.aget_or_set("k", load, ttl=60)
                                           for _ in range(2))))

    async def first_load() -> int:
        later.append(asyncio.get_running_loop().create_task(afterwards()))
        return 0

    try:
        assert await cache.aget_or_set("k", first_load, ttl=60) == 0
        assert await later[0] == [1, 1]
        assert runs == [1]  # one load for the two misses
    finally:
        await cache.aclose()
        await cache.redis.aclose()


def test_a_lease_that_vanishes_without_a_value_is_taken_over(settings: Settings,
                                                             raw: Any) -> None:
    cache = DataCache(settings)
    keys = KeySpace(settings.key_prefix)
    raw.set(keys.data_fill("v"), "a-crashed-process", px=300)
    started = time.monotonic()
    assert cache.get_or_set("v", lambda: "taken over", ttl=60) == "taken over"
    assert 0.2 < time.monotonic() - started < 3
    assert raw.exists(keys.data_fill("v")) == 0


def test_a_long_loader_keeps_its_lease(settings: Settings) -> None:
    quick = settings.replace(data_lock_timeout=0.6, data_lock_wait=5)
    counter = Counter(settings)
    load = slow_loader(counter, 1.8)  # three lease timeouts long: renewed meanwhile
    results = in_threads(3, lambda: DataCache(quick).get_or_set("long", load, ttl=60))
    assert results == [{"run": 1}] * 3
    assert counter.value == 1


# -- stale-while-revalidate and early refresh --------------------------------------------------
def test_stale_values_are_served_while_one_refresh_runs(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DataCache(settings)
    counter = Counter(settings)
    load = slow_loader(counter, 0.5)
    assert cache.get_or_set("s", load, ttl=0.3, stale=30) == {"run": 1}
    time.sleep(0.4)
    recorder = Recorder()
    monkeypatch.setattr(metrics, "hook", recorder)
    results = in_threads(8, lambda: DataCache(settings).get_or_set("s", load, ttl=0.3,
                                                                   stale=30))
    assert results == [{"run": 1}] * 8
    served = [event for event, _ in recorder.events if event != "load"]
    assert served == ["stale"] * 8  # nobody missed, nobody waited for the refresh
    deadline = time.monotonic() + 5
    while cache.get("s") != {"run": 2}:
        assert time.monotonic() < deadline, "the background refresh did not store"
        time.sleep(0.05)
    assert counter.value == 2  # exactly one refresh
    assert cache.get_or_set("s", load, ttl=0.3, stale=30) == {"run": 2}


def test_close_waits_for_the_background_refreshes_of_sync_callers(settings: Settings
                                                                  ) -> None:
    """A refresh running in a thread when the cache is closed at shutdown ends first: its
    value is stored and its lease freed before the connections are closed (not a
    connection opened again after them). A closed cache starts none."""
    cache = DataCache(settings)
    counter = Counter(settings)
    gate = threading.Event()

    def load() -> dict[str, int]:
        n = counter.add()
        if n > 1:
            gate.wait(10)
        return {"run": n}

    assert cache.get_or_set("c", load, ttl=1, stale=30) == {"run": 1}
    time.sleep(1.1)
    assert cache.get_or_set("c", load, ttl=1, stale=30) == {"run": 1}  # refresh starts
    assert cache.close(timeout=0.2) is False  # the refresh waits on the gate
    gate.set()
    assert cache.close(timeout=10) is True
    assert counter.value == 2
    assert cache.get("c") == {"run": 2}  # stored before close returned
    time.sleep(1.1)  # stale again: a closed cache serves it and starts no refresh
    assert cache.get_or_set("c", load, ttl=1, stale=30) == {"run": 2}
    time.sleep(0.3)
    assert counter.value == 2
    assert cache.close(timeout=None) is True  # nothing left running
    cache.redis.close()


async def test_async_stale_values_are_served_while_one_refresh_runs(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DataCache(settings)
    counter = Counter(settings)

    @cache.cached(ttl=0.3, stale=30, key="as")
    async def load() -> dict[str, int]:
        n = await asyncio.to_thread(counter.add)
        await asyncio.sleep(0.5)
        return {"run": n}

    assert await load() == {"run": 1}
    await asyncio.sleep(0.4)
    recorder = Recorder()
    monkeypatch.setattr(metrics, "hook", recorder)
    assert await asyncio.gather(*(load() for _ in range(20))) == [{"run": 1}] * 20
    assert [event for event, _ in recorder.events if event != "load"] == ["stale"] * 20
    deadline = time.monotonic() + 5
    while await cache.aget("as") != {"run": 2}:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert counter.value == 2
    await cache.aclose()
    await cache.redis.aclose()


def test_a_stale_value_is_a_miss_for_a_caller_without_a_stale_window(settings: Settings
                                                                    ) -> None:
    cache = DataCache(settings)
    cache.set("s", "old", ttl=0.2, stale=30)
    time.sleep(0.3)
    assert cache.get("s", default="expired") == "expired"
    assert cache.get_or_set("s", lambda: "new", ttl=60) == "new"


def test_early_refresh_renews_a_hot_value_before_it_expires(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DataCache(settings)
    counter = Counter(settings)
    load = slow_loader(counter, 0.05)
    assert cache.get_or_set("e", load, ttl=1, early=4) == {"run": 1}
    recorder = Recorder()
    monkeypatch.setattr(metrics, "hook", recorder)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # a hot key, 1 s TTL, read for 2.5 s
        cache.get_or_set("e", load, ttl=1, early=4)
        time.sleep(0.01)
    time.sleep(0.2)  # the last refresh's store
    monkeypatch.setattr(metrics, "hook", None)
    outcomes = [event for event, _ in recorder.events]
    assert "miss" not in outcomes  # refreshed before expiry: no caller met a miss
    assert 3 <= counter.value <= 15  # refreshed before each expiry, not on every read
    assert outcomes.count("load") == counter.value - 1


# -- the lock ----------------------------------------------------------------------------------
def test_the_lock_excludes(settings: Settings) -> None:
    cache = DataCache(settings)
    inside = 0
    most = 0
    guard = threading.Lock()

    def critical() -> None:
        nonlocal inside, most
        with DataCache(settings).lock("rebuild", timeout=5):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with guard:
                inside -= 1

    assert in_threads(6, critical) == [None] * 6
    assert most == 1
    with cache.lock("rebuild", timeout=5) as held:
        assert held.locked()
        with pytest.raises(LockNotAcquired), cache.lock("rebuild", blocking=False):
            pass
        started = time.monotonic()
        with pytest.raises(LockNotAcquired), cache.lock("rebuild", wait=0.2):
            pass
        assert 0.15 < time.monotonic() - started < 2
    assert not held.locked()
    other = cache.lock("rebuild")
    assert other.acquire(blocking=False) is True and other.release() is True


def test_the_lock_is_renewed_while_held(settings: Settings) -> None:
    cache = DataCache(settings)
    with cache.lock("long", timeout=1):
        for _ in range(3):
            time.sleep(0.6)  # 1.8 s in all: past the timeout, but renewed
            assert cache.lock("long").acquire(blocking=False) is False
    after = cache.lock("long")
    assert after.acquire(blocking=False) is True and after.release() is True


def test_a_lock_dropped_while_held_expires(settings: Settings) -> None:
    import gc

    cache = DataCache(settings)
    assert cache.lock("dropped", timeout=1.5).acquire()  # no reference kept, no release
    gc.collect()
    probe = cache.lock("dropped")
    assert probe.acquire(blocking=False) is False  # not expired yet
    started = time.monotonic()
    with cache.lock("dropped", timeout=5, wait=5):  # not renewed: it expires
        assert time.monotonic() - started < 2


def test_only_the_holder_releases(settings: Settings, raw: Any) -> None:
    cache = DataCache(settings)
    first = cache.lock("x", timeout=10)
    assert first.acquire()
    raw.delete(KeySpace(settings.key_prefix).data_lock("x"))  # as if it had expired
    second = cache.lock("x", timeout=10)
    assert second.acquire(blocking=False)
    assert first.release() is False  # its token is no longer the lock's
    assert cache.lock("x").acquire(blocking=False) is False  # second still holds it
    assert second.release() is True


def _hold_and_die(url: str, prefix: str) -> None:
    cache = DataCache(Settings(redis_url=url, key_prefix=prefix, secret_key=("p" * 40,)))
    assert cache.lock("crash", timeout=1).acquire()
    os._exit(0)  # no release, no renewal: the process is gone


def test_a_dead_holders_lock_expires(settings: Settings) -> None:
    if settings.target.kind == "memory":
        pytest.skip("memory:// is one process's store")
    child = multiprocessing.get_context("spawn").Process(
        target=_hold_and_die, args=(settings.redis_url, settings.key_prefix))
    child.start()
    child.join(30)
    cache = DataCache(settings)
    assert cache.lock("crash").acquire(blocking=False) is False  # held by the dead process
    started = time.monotonic()
    with cache.lock("crash", timeout=5, wait=5):
        assert time.monotonic() - started < 1.5


def _hold_fork_and_die(url: str, prefix: str) -> None:
    """Hold "crash" (renewed by this process's thread), fork a child that holds a lock
    of its own for 3 s (its own renewal thread), then die without releasing."""
    cache = DataCache(Settings(redis_url=url, key_prefix=prefix, secret_key=("p" * 40,)))
    crash = cache.lock("crash", timeout=1)
    assert crash.acquire()
    if os.fork() == 0:  # the child
        try:
            cache.set("child's pid", os.getpid(), ttl=60)
            with cache.lock("child's own", timeout=1):
                time.sleep(3)
            cache.set("child's done", True, ttl=60)
        finally:
            os._exit(0)
    os._exit(0)  # the parent: no release, no renewal


def test_a_forked_child_does_not_renew_its_parents_locks(settings: Settings) -> None:
    """A child forked while its parent held a lock renews only its own: the parent's
    lock expires when the parent dies, however long the child lives. And the child
    takes its own (the parent's renewal thread may have held the renewer's lock at the
    fork: a child that inherited it hung)."""
    if settings.target.kind == "memory":
        pytest.skip("memory:// is one process's store")
    parent = multiprocessing.get_context("spawn").Process(
        target=_hold_fork_and_die, args=(settings.redis_url, settings.key_prefix))
    parent.start()
    parent.join()  # (no timeout: waitpid, not the sentinel the child holds too)
    cache = DataCache(settings)
    assert cache.lock("crash").acquire(blocking=False) is False  # held by the dead parent
    started = time.monotonic()
    with cache.lock("crash", timeout=5, wait=8):
        assert time.monotonic() - started < 1.5
    for _ in range(100):  # it took its own lock, renewed it for 3 s, and let it go
        if cache.get("child's done"):
            break
        time.sleep(0.1)
    else:
        os.kill(cache.get("child's pid"), signal.SIGKILL)
        pytest.fail("the forked child hung taking a lock")


def test_a_forked_child_loads_though_a_thread_was_inside_the_cache_at_the_fork(
        settings: Settings) -> None:
    """A process forked while another of its threads was inside the single-flight table
    (a request thread of a server that forks): the child's first load does not wait for
    a lock that thread held at the fork, nor for a load the child does not have."""
    cache = DataCache(settings)
    assert cache.get_or_set("warm", lambda: "up", ttl=60) == "up"
    table = cache._fill.local.flights  # fault injection: hold its lock across the fork
    with held(table._lock):  # the child: one load, its value to the parent
        got = in_forked_child(
            lambda: str(cache.get_or_set("k", lambda: "loaded", ttl=60)).encode())
    assert got == b"loaded", "the forked child hung on the parent's lock"


async def test_the_async_lock(settings: Settings) -> None:
    cache = DataCache(settings)
    order: list[str] = []

    async def worker(name: str) -> None:
        async with cache.alock("a", timeout=1):
            order.append(f"{name}+")
            await asyncio.sleep(1.5)  # past the timeout: the renewal task keeps it
            order.append(f"{name}-")

    await asyncio.gather(worker("one"), worker("two"))
    assert order in (["one+", "one-", "two+", "two-"], ["two+", "two-", "one+", "one-"])
    async with cache.alock("a") as held:
        assert held.locked()
        with pytest.raises(LockNotAcquired):
            async with cache.alock("a", blocking=False):
                pass
    assert not held.locked()
    await cache.redis.aclose()


# -- Redis going away --------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    started = start_redis_server(tmp_path)
    yield started
    if started.proc.poll() is None:
        stop_redis_server(started)


@pytest.mark.real_redis
def test_redis_killed_mid_call(server: Any, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(server.url, breaker_cooldown=0.2)
    cache = DataCache(settings)
    calls = []

    @cache.cached(ttl=60, key="p:{n}", tags=["t"])
    def load(n: int) -> int:
        calls.append(n)
        if n == 2:
            stop_redis_server(server)  # Redis dies while the loader runs
        return n * 10

    assert load(1) == 10
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert load(2) == 20  # the store failed: the value is still returned
        assert load(1) == 10 and load(3) == 30  # every call runs its loader, nothing raised
        assert cache.get("p:1", default="d") == "d"
        assert cache.set("x", 1) is False and cache.delete("x") is False
        assert cache.invalidate(tags=["t"]) == 0 and cache.get_many(["x"]) == {}
        assert cache.delete_many(["x"]) == 0 and cache.clear() == 0
        # strict: "nothing was done" told apart from "nothing was there"
        with pytest.raises(RedisMiddlewareError):
            cache.delete_many(["x"], strict=True)
        with pytest.raises(RedisMiddlewareError):
            cache.clear(strict=True)
        assert cache.get_or_set("y", lambda: "loaded", ttl=60) == "loaded"
        with pytest.raises(ValueError, match="unavailable"):
            cache.incr("n")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert calls == [1, 2, 1, 3]
    restarted = start_redis_server(tmp_path / "again", port=server.port)
    try:
        deadline = time.monotonic() + 3
        while not cache.set("x", 1, ttl=60):
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.05)
        assert load(4) == 40 and load(4) == 40 and calls == [1, 2, 1, 3, 4]
    finally:
        cache.redis.close()
        stop_redis_server(restarted)


@pytest.mark.real_redis
def test_callers_of_one_process_share_a_load_while_redis_is_down(server: Any) -> None:
    cache = DataCache(make_settings(server.url, breaker_cooldown=5))
    stop_redis_server(server)
    runs = []

    @cache.cached(ttl=60)
    def load() -> str:
        runs.append(1)
        time.sleep(0.3)
        return "value"

    assert in_threads(8, load) == ["value"] * 8
    assert len(runs) == 1  # no Redis lease to be had: the threads shared one load

    async def main() -> list[str]:
        @cache.cached(ttl=60)
        async def aload() -> str:
            runs.append(2)
            await asyncio.sleep(0.3)
            return "async value"

        return await asyncio.gather(*(aload() for _ in range(20)))

    assert asyncio.run(main()) == ["async value"] * 20
    assert runs == [1, 2]


@pytest.mark.real_redis
async def test_redis_down_async(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(server.url, breaker_cooldown=0.2)
    cache = DataCache(settings)

    @cache.cached(ttl=60)
    async def load(n: int) -> int:
        return n + 1

    assert await load(1) == 2
    stop_redis_server(server)
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert await asyncio.gather(*(load(i) for i in range(5))) == [1, 2, 3, 4, 5]
        assert await cache.aget("x", 7) == 7 and await cache.aset("x", 1) is False
        assert await cache.ainvalidate(tags=["t"]) == 0
        assert await cache.adelete_many(["x"]) == 0 and await cache.aclear() == 0
        with pytest.raises(RedisMiddlewareError):
            await cache.adelete_many(["x"], strict=True)
        with pytest.raises(RedisMiddlewareError):
            await cache.aclear(strict=True)
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1
    await cache.redis.aclose()


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_cluster_down_from_the_first_call_degrades_alike_on_both_sides(
        side: str, caplog: pytest.LogCaptureFixture) -> None:
    """No node answers from the first use on: the asyncio client's setup fails before any
    command, and each method still answers as during any outage (the loader's value,
    the default, False), with one log line, as the sync side does."""
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    cache = DataCache(make_settings(url, breaker_cooldown=5))

    async def acalls() -> list[Any]:
        try:
            return [await cache.aset("k", 1), await cache.aget("k", 5),
                    await cache.aget_or_set("k", lambda: 7), await cache.adelete("k"),
                    await cache.aget_many(["k"]), await cache.ainvalidate(tags=["t"])]
        finally:
            await cache.redis.aclose()

    def calls() -> list[Any]:
        return [cache.set("k", 1), cache.get("k", 5), cache.get_or_set("k", lambda: 7),
                cache.delete("k"), cache.get_many(["k"]), cache.invalidate(tags=["t"])]

    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        got = calls() if side == "sync" else asyncio.run(acalls())
    assert got == [False, 5, 7, False, {}, 0]
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1, caplog.text


@pytest.mark.real_redis
def test_a_value_that_cannot_carry_its_tags_is_not_stored(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Scripts refused (renamed away, as some managed services do): the tag ops fail where
    the SET worked. A value kept without its tags would outlive an invalidation of them."""
    server = start_redis_server(tmp_path, "--rename-command", "EVALSHA", "",
                                "--rename-command", "EVAL", "")
    try:
        cache = DataCache(make_settings(server.url))
        with caplog.at_level(logging.WARNING, logger="redis_middleware"):
            assert cache.set("plain", 1, ttl=60) is True
            assert cache.set("user:1", {"n": 1}, ttl=60, tags=["user:1"]) is False
            assert cache.set_many({"a": 1, "b": 2}, ttl=60, tags=["t"]) == ["a", "b"]
        with server.client() as admin:
            kept = sorted(k.decode() for k in admin.scan_iter(match="*"))
        assert [k for k in kept if "plain" not in k] == [], kept
        assert cache.get("plain") == 1 and cache.get("user:1") is None
        cache.redis.close()
    finally:
        stop_redis_server(server)
