"""DataCache against the data-caching peers, in one run on one redis-server.

    python bench/datacache.py [--calls 20000] [--runs 5] [--busy N]
                              [--out bench/results/datacache.json]

Starts its own redis-server on a free loopback port (stopped at the end) and measures:

1. **A hot hit** (the value is in Redis): CPU time of this process (``process_time``)
   and wall time per call, and Redis commands per call (the server's
   ``total_commands_processed``), one call at a time, and for asyncio also with 16
   calls in flight. Contenders: ``DataCache`` (a ``@cached`` function, ``get_or_set``
   and a plain ``get``, sync and async), a hand-written redis-py cache-aside (one
   ``GET`` and ``json.loads``), the same on a bare socket with no client around it (the
   floor of any Python client: the round trip, hiredis's parser and ``json.loads``),
   dogpile.cache (sync), cashews and aiocache (async). Every value is the same small
   dict. Runs alternate between contenders (noise hits all alike), in an order that
   turns around from run to run; medians are reported, with each contender's ratio to
   DataCache.
2. **A stampede**: 50 callers miss one cold key at once; the loader (100 ms) counts its
   runs in Redis. In one process (50 threads, or 50 tasks) and across 4 processes. The
   peers run as configured by default and, where they have one, with their stampede
   option (dogpile's ``distributed_lock``, cashews' ``lock=True``, aiocache's
   ``cached_stampede``).

The machine's noise moves CPU times by a factor of two between runs; the Python function
calls per DataCache hit (a profile hook counts them) do not, so a change to the hot path
shows there first (``python_calls_per_hit``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hiredis
import redis
import redis.asyncio

from redis_middleware import DataCache, Settings

VALUE = {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"],
         "score": 12.5, "active": True}
SECRET = "bench-secret-" + "x" * 40
STAMPEDE_CALLERS = 50
LOADER_SECONDS = 0.1
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-datacache-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url, workdir
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def stop_server(proc: subprocess.Popen[bytes], workdir: str) -> None:
    """Stop what :func:`start_server` started and remove its directory."""
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


class busy_cores:
    """``n`` processes that spin at the lowest priority (``nice 19``) while the block
    runs, stopped by their PIDs at its end: the machine's cores never go idle, as on a
    server with other work. A client that blocks in ``recv`` then wakes on a core that
    did not sleep; on an idle virtual machine each wake costs the process several
    microseconds more, and its code runs slower after it (measured by ``--busy``)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> busy_cores:
        spin = [sys.executable, "-c", "import os; os.nice(19)\nwhile True: pass"]
        self.procs = [subprocess.Popen(spin) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


def commands_processed(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        return int(r.info("stats")["total_commands_processed"])


# -- hot hits --------------------------------------------------------------------------
FLOOR = "socket GET, no client (floor)"


def _floor_key(url: str, key: str) -> tuple[str, int, bytes]:
    """Store the value under ``key``; the server's address and the packed ``GET``."""
    with redis.Redis.from_url(url) as r:
        r.set(key, json.dumps(VALUE), ex=600)
    host, port = url.split("//")[1].split("/")[0].split(":")
    return host, int(port), bytes(hiredis.pack_command(("GET", key)))


def socket_floor(url: str) -> Callable[[], Any]:
    """A hit with no client: one packed ``GET`` on a blocking socket, hiredis's parser,
    ``json.loads``. No pool, no timeout, no errors handled: no client can cost less."""
    host, port, packed = _floor_key(url, "bare:user:1")
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()

    def get() -> Any:
        sock.sendall(packed)
        reply = reader.gets()
        while reply is False:
            reader.feed(sock.recv(65536))
            reply = reader.gets()
        return json.loads(reply)

    return get


class _FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            reply = self.reader.gets()
            if reply is False:
                return
            self.waiting.popleft().set_result(reply)


async def asocket_floor(url: str) -> Callable[[], Awaitable[Any]]:
    """:func:`socket_floor` for asyncio: a bare protocol, one future per ``GET``."""
    host, port, packed = _floor_key(url, "abare:user:1")
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_FloorProtocol, host, port)

    async def get() -> Any:
        future = loop.create_future()
        protocol.waiting.append(future)
        transport.write(packed)
        return json.loads(await future)

    return get

def sync_contenders(url: str) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    cache = DataCache(Settings(redis_url=url, secret_key=(SECRET,), key_prefix="bench"))

    @cache.cached(ttl=600, key="user:{user_id}:profile")
    def load(user_id: int) -> dict[str, Any]:
        return VALUE

    out["DataCache @cached"] = lambda: load(1)
    out["DataCache get_or_set"] = lambda: cache.get_or_set("user:2:profile", lambda: VALUE,
                                                           ttl=600)
    cache.set("user:3:profile", VALUE, ttl=600)
    out["DataCache get"] = lambda: cache.get("user:3:profile")  # cache-aside by hand

    client = redis.Redis.from_url(url)

    def by_hand() -> Any:
        raw = client.get("hand:user:1")
        if raw is None:
            client.set("hand:user:1", json.dumps(VALUE), ex=600)
            return VALUE
        return json.loads(raw)

    out["redis-py GET"] = by_hand
    out[FLOOR] = socket_floor(url)

    from dogpile.cache import make_region

    region = make_region().configure("dogpile.cache.redis", expiration_time=600,
                                     arguments={"url": url, "redis_expiration_time": 1200})

    @region.cache_on_arguments()
    def dogpile_load(user_id: int) -> dict[str, Any]:
        return VALUE

    out["dogpile.cache"] = lambda: dogpile_load(1)
    return out


async def async_contenders(url: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    out: dict[str, Callable[[], Awaitable[Any]]] = {}
    cache = DataCache(Settings(redis_url=url, secret_key=(SECRET,), key_prefix="bench"))

    @cache.cached(ttl=600, key="auser:{user_id}:profile")
    async def aload(user_id: int) -> dict[str, Any]:
        return VALUE

    async def value() -> dict[str, Any]:
        return VALUE

    out["DataCache @cached"] = lambda: aload(1)
    out["DataCache aget_or_set"] = lambda: cache.aget_or_set("auser:2:profile", value, ttl=600)
    await cache.aset("auser:3:profile", VALUE, ttl=600)
    out["DataCache aget"] = lambda: cache.aget("auser:3:profile")

    client = redis.asyncio.Redis.from_url(url)

    async def by_hand() -> Any:
        raw = await client.get("ahand:user:1")
        if raw is None:
            await client.set("ahand:user:1", json.dumps(VALUE), ex=600)
            return VALUE
        return json.loads(raw)

    out["redis-py GET"] = by_hand
    out[FLOOR] = await asocket_floor(url)

    from cashews import Cache as CashewsCache

    cashews = CashewsCache()
    cashews.setup(url)

    @cashews(ttl="10m", key="user:{user_id}:profile")
    async def cashews_load(user_id: int) -> dict[str, Any]:
        return VALUE

    out["cashews"] = lambda: cashews_load(1)

    from aiocache import Cache, cached
    from aiocache.serializers import JsonSerializer

    host, port = url.split("//")[1].split("/")[0].split(":")

    @cached(ttl=600, cache=Cache.REDIS, endpoint=host, port=int(port), namespace="aio",
            serializer=JsonSerializer())
    async def aiocache_load(user_id: int) -> dict[str, Any]:
        return VALUE

    out["aiocache"] = lambda: aiocache_load(1)
    return out


def measure_sync(fn: Callable[[], Any], calls: int, url: str) -> dict[str, float]:
    for _ in range(min(500, calls)):
        fn()
    before = commands_processed(url)
    cpu, wall, modes = time.process_time(), time.perf_counter(), cpu_modes()
    for _ in range(calls):
        fn()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    user, system = (b - a for a, b in zip(modes, cpu_modes(), strict=True))
    commands = commands_processed(url) - before - 1  # the INFO itself
    return {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6,
            "user_us": user / calls * 1e6, "system_us": system / calls * 1e6,
            "commands": commands / calls}


def cpu_modes() -> tuple[float, float]:
    """This process's CPU seconds so far in user mode and in the kernel (the system
    calls of a round trip, the same whoever makes them)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def measure_async(fn: Callable[[], Awaitable[Any]], calls: int, url: str,
                        in_flight: int) -> dict[str, float]:
    per_task = calls // in_flight

    async def loop(n: int) -> None:
        for _ in range(n):
            await fn()

    await asyncio.gather(*(loop(min(500, calls) // in_flight + 1) for _ in range(in_flight)))
    before = commands_processed(url)
    cpu, wall, modes = time.process_time(), time.perf_counter(), cpu_modes()
    await asyncio.gather(*(loop(per_task) for _ in range(in_flight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    user, system = (b - a for a, b in zip(modes, cpu_modes(), strict=True))
    done = per_task * in_flight
    commands = commands_processed(url) - before - 1
    return {"cpu_us": cpu / done * 1e6, "wall_us": wall / done * 1e6,
            "user_us": user / done * 1e6, "system_us": system / done * 1e6,
            "commands": commands / done}


def python_calls(fn: Callable[[], Any], n: int = 200) -> float:
    """Python function calls (and generator or coroutine resumptions) per call of ``fn``."""
    for _ in range(50):
        fn()
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        for _ in range(n):
            fn()
    finally:
        sys.setprofile(None)
    return count / n


async def apython_calls(fn: Callable[[], Awaitable[Any]], n: int = 200) -> float:
    """:func:`python_calls` of a coroutine function, one call in flight."""
    for _ in range(50):
        await fn()
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        for _ in range(n):
            await fn()
    finally:
        sys.setprofile(None)
    return count / n


def alternate(items: list[T], run: int) -> list[T]:
    """``items`` in turn forwards and backwards: what runs first after a switch of
    contender can cost less here (about 10% on 2,000 calls), so each takes each place as
    often."""
    return items if run % 2 == 0 else items[::-1]


def medians(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {k: round(statistics.median(s[k] for s in runs), 2) for k in runs[0]}
            for name, runs in samples.items()}


def hot_hits(url: str, calls: int, runs: int) -> dict[str, Any]:
    sync = sync_contenders(url)
    sync_samples: dict[str, list[dict[str, float]]] = {name: [] for name in sync}
    for run in range(runs):
        for name in alternate(list(sync), run):
            sync_samples[name].append(measure_sync(sync[name], calls, url))
    results: dict[str, Any] = {"sync": medians(sync_samples)}
    cache = DataCache(Settings(redis_url=url, secret_key=(SECRET,), key_prefix="bench"))
    before = (cache.redis.round_trips, cache.redis.commands)
    fn = sync["DataCache @cached"]
    for _ in range(1000):
        fn()
    results["sync_round_trips_per_hit"] = (cache.redis.round_trips - before[0]) / 1000
    python_calls_per_hit = {name: python_calls(fn) for name, fn in sync.items()
                            if "DataCache" in name}

    async def run_async() -> None:
        contenders = await async_contenders(url)
        for in_flight in (1, 16):
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
            for run in range(runs):
                for name in alternate(list(contenders), run):
                    samples[name].append(
                        await measure_async(contenders[name], calls, url, in_flight))
            results[f"async_{in_flight}_in_flight"] = medians(samples)
        rt = cache.redis.round_trips
        afn = contenders["DataCache @cached"]
        for _ in range(1000):
            await afn()
        results["async_round_trips_per_hit"] = (cache.redis.round_trips - rt) / 1000
        for name, afn in contenders.items():
            if "DataCache" in name:
                python_calls_per_hit["async " + name] = await apython_calls(afn)
        results["python_calls_per_hit"] = python_calls_per_hit
        await cache.redis.aclose()

    asyncio.run(run_async())
    return results


# -- stampedes ------------------------------------------------------------------------------
def _counter(url: str, name: str) -> Callable[[], None]:
    client = redis.Redis.from_url(url)

    def count() -> None:
        client.incr(name)
        client.expire(name, 600)

    return count


def sync_stampede_fn(kind: str, url: str, key: str, counter: str) -> Callable[[], Any]:
    count = _counter(url, counter)

    def loader() -> dict[str, Any]:
        count()
        time.sleep(LOADER_SECONDS)
        return VALUE

    if kind == "DataCache":
        cache = DataCache(Settings(redis_url=url, secret_key=(SECRET,), key_prefix="bench"))
        return lambda: cache.get_or_set(key, loader, ttl=600)
    if kind == "redis-py by hand":
        client = redis.Redis.from_url(url)

        def by_hand() -> Any:
            raw = client.get(key)
            if raw is not None:
                return json.loads(raw)
            value = loader()
            client.set(key, json.dumps(value), ex=600)
            return value

        return by_hand
    from dogpile.cache import make_region

    args: dict[str, Any] = {"url": url, "redis_expiration_time": 1200}
    if kind == "dogpile.cache distributed_lock":
        args.update(distributed_lock=True, thread_local_lock=False, lock_timeout=10)
    region = make_region().configure("dogpile.cache.redis", expiration_time=600,
                                     arguments=args)
    return lambda: region.get_or_create(key, loader)


def async_stampede_fn(kind: str, url: str, key: str, counter: str
                      ) -> Callable[[], Awaitable[Any]]:
    count = _counter(url, counter)

    async def loader(*_: Any) -> dict[str, Any]:
        await asyncio.to_thread(count)
        await asyncio.sleep(LOADER_SECONDS)
        return VALUE

    if kind == "DataCache":
        cache = DataCache(Settings(redis_url=url, secret_key=(SECRET,), key_prefix="bench"))
        return lambda: cache.aget_or_set(key, loader, ttl=600)
    if kind == "redis-py by hand":
        client = redis.asyncio.Redis.from_url(url)

        async def by_hand() -> Any:
            raw = await client.get(key)
            if raw is not None:
                return json.loads(raw)
            value = await loader()
            await client.set(key, json.dumps(value), ex=600)
            return value

        return by_hand
    if kind.startswith("cashews"):
        from cashews import Cache as CashewsCache

        cashews = CashewsCache()
        cashews.setup(url)
        fn = cashews(ttl="10m", key=key, lock=kind.endswith("lock=True"))(loader)
        return lambda: fn()
    from aiocache import Cache, cached, cached_stampede
    from aiocache.serializers import JsonSerializer

    host, port = url.split("//")[1].split("/")[0].split(":")
    decorator = cached_stampede if kind.endswith("cached_stampede") else cached
    afn = decorator(ttl=600, key=key, cache=Cache.REDIS, endpoint=host, port=int(port),
                    serializer=JsonSerializer())(loader)
    return lambda: afn()


def _run_callers(kind: str, mode: str, url: str, key: str, counter: str, callers: int,
                 start_at: float) -> None:
    if mode == "sync":
        fn = sync_stampede_fn(kind, url, key, counter)
        threads = [threading.Thread(target=fn) for _ in range(callers)]
        time.sleep(max(0.0, start_at - time.time()))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return

    async def main() -> None:
        afn = async_stampede_fn(kind, url, key, counter)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(afn() for _ in range(callers)))

    asyncio.run(main())


def stampede(kind: str, mode: str, url: str, processes: int, tag: str) -> int:
    key = f"stampede:{tag}:{kind}:{mode}:{processes}".replace(" ", "_")
    counter = key + ":loads"
    start_at = time.time() + (2.0 if processes > 1 else 0.2)
    shares = [STAMPEDE_CALLERS // processes + (1 if i < STAMPEDE_CALLERS % processes else 0)
              for i in range(processes)]
    if processes == 1:
        _run_callers(kind, mode, url, key, counter, shares[0], start_at)
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_run_callers, args=(kind, mode, url, key, counter, n,
                                                        start_at)) for n in shares]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    with redis.Redis.from_url(url) as r:
        return int(r.get(counter) or 0)


SYNC_STAMPEDE = ["DataCache", "redis-py by hand", "dogpile.cache",
                 "dogpile.cache distributed_lock"]
ASYNC_STAMPEDE = ["DataCache", "redis-py by hand", "cashews", "cashews lock=True", "aiocache",
                  "aiocache cached_stampede"]


def stampedes(url: str) -> dict[str, Any]:
    tag = str(int(time.time()))
    out: dict[str, Any] = {}
    for mode, kinds in (("sync", SYNC_STAMPEDE), ("async", ASYNC_STAMPEDE)):
        for processes in (1, 4):
            out[f"{mode}_{processes}_process{'es' if processes > 1 else ''}"] = {
                kind: stampede(kind, mode, url, processes, tag) for kind in kinds}
    return out


def ratios(table: dict[str, dict[str, float]], ours: str, unit: str = "cpu_us"
           ) -> dict[str, float]:
    base = table[ours][unit]
    return {name: round(row[unit] / base, 2) for name, row in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=None, help="default: bench/results/datacache.json "
                        "(datacache-busy.json with --busy)")
    parser.add_argument("--skip-stampede", action="store_true")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N cores busy (spinning at nice 19) while the hot hits "
                             "are timed (default 0: an idle machine)")
    args = parser.parse_args()
    proc, url, workdir = start_server()
    try:
        with busy_cores(args.busy):
            hits = hot_hits(url, args.calls, args.runs)
        result: dict[str, Any] = {
            "python": platform.python_version(), "machine": platform.machine(),
            "calls": args.calls, "runs": args.runs, "busy_cores": args.busy,
            "hot_hit": hits,
            "cpu_ratio_to_datacache": {
                "sync": ratios(hits["sync"], "DataCache @cached"),
                "async_1_in_flight": ratios(hits["async_1_in_flight"], "DataCache @cached"),
                "async_16_in_flight": ratios(hits["async_16_in_flight"], "DataCache @cached"),
            },
            "user_cpu_ratio_to_datacache": {  # the libraries' own work, without the kernel's
                kind: ratios(hits[kind], "DataCache @cached", "user_us")
                for kind in ("sync", "async_1_in_flight", "async_16_in_flight")},
        }
        if not args.skip_stampede:
            result["stampede_loader_runs"] = stampedes(url)
    finally:
        stop_server(proc, workdir)
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out or Path(__file__).parent / "results" / (
        "datacache" + ("-busy" if args.busy else "") + ".json")).write_text(text + "\n")


if __name__ == "__main__":
    main()
