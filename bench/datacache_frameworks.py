"""The framework cache backends against their peers, in one run on one redis-server.

    python bench/datacache_frameworks.py [--calls 2000] [--runs 15] [--busy N]
                                         [--out bench/results/datacache-frameworks.json]

Starts its own redis-server on a free loopback port (stopped at the end) and measures a
hot hit (the value is in Redis), one call at a time:

1. **Django**: ``cache.get`` and ``cache.get_or_set`` of
   ``redis_middleware.django.cache.RedisCache`` against django-redis and Django's own
   ``RedisCache``, and against the floor of ``bench/datacache.py`` (a ``GET`` on a bare
   socket, no client); and ``cache.aget`` (ours runs on the asyncio client, theirs are
   Django's thread wrappers).
2. **Flask-Caching**: a ``@cache.memoize`` hit, and ``cache.get``, on
   ``redis_middleware.flask.FlaskCache`` against Flask-Caching's ``RedisCache``.

For each: CPU time of this process (``process_time``) and wall time per call, Redis
commands per call (the server's ``total_commands_processed``) and round trips per call
(ours: the connections' counter; the peers send one command per round trip here, so
theirs is their command count). Runs are short and alternate between contenders, so
that the noise of a shared machine hits all alike; the medians are reported, and each
peer's cost over ours (how many times ours is cheaper) as the median of the run-by-run
ratios. The order of the contenders, and of the calls of each, turns around from run to
run (what runs first after a switch costs less here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from datacache import (  # noqa: E402 (bench/datacache.py)
    FLOOR,
    alternate,
    busy_cores,
    commands_processed,
    socket_floor,
    start_server,
    stop_server,
)

VALUE = {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"],
         "score": 12.5, "active": True}
SECRET = "bench-secret-" + "x" * 40
Measure = dict[str, float]


def round_trips(url: str) -> Callable[[], int]:
    """Our connections' round-trip counter (every backend of ours on ``url`` shares it)."""
    from redis_middleware import Settings
    from redis_middleware._redis.connections import connections_for

    conns = connections_for(Settings(redis_url=url, secret_key=(SECRET,), key_prefix="bench"))
    return lambda: conns.round_trips


def measure(fn: Callable[[], Any], calls: int, url: str, trips: Callable[[], int] | None
            ) -> Measure:
    for _ in range(min(500, calls)):
        fn()
    commands, rt = commands_processed(url), trips() if trips else 0
    cpu, wall, user = time.process_time(), time.perf_counter(), user_cpu()
    for _ in range(calls):
        fn()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    user = user_cpu() - user
    commands = commands_processed(url) - commands - 1  # INFO itself
    out = {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6,
           "user_us": user / calls * 1e6, "commands": commands / calls}
    out["round_trips"] = (trips() - rt) / calls if trips else out["commands"]
    return out


def ameasure(fn: Callable[[], Awaitable[Any]], calls: int, url: str,
             trips: Callable[[], int] | None) -> Measure:
    async def run() -> Measure:
        for _ in range(min(500, calls)):
            await fn()
        commands, rt = commands_processed(url), trips() if trips else 0
        cpu, wall, user = time.process_time(), time.perf_counter(), user_cpu()
        for _ in range(calls):
            await fn()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        user = user_cpu() - user
        commands = commands_processed(url) - commands - 1
        out = {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6,
               "user_us": user / calls * 1e6, "commands": commands / calls}
        out["round_trips"] = (trips() - rt) / calls if trips else out["commands"]
        return out

    return asyncio.run(run())


def user_cpu() -> float:
    """This process's CPU seconds in user mode: the libraries' own work, without the
    system calls of a round trip (the same whoever makes them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def medians(samples: dict[str, list[Measure]]) -> dict[str, Measure]:
    return {name: {k: round(statistics.median(s[k] for s in runs), 2) for k in runs[0]}
            for name, runs in samples.items()}


def ratios(samples: dict[str, list[Measure]], ours: str
           ) -> dict[str, dict[str, float | None]]:
    """Each contender's cost over ours, run by run (the runs alternate, so each pair saw
    the same moment of a shared machine), and the median of those ratios."""
    mine = samples[ours]

    def ratio(theirs: list[Measure], unit: str) -> float | None:
        # A run whose user-mode CPU rounded to zero (the clock's tick is coarse) has none.
        pairs = [theirs[k][f"{unit}_us"] / mine[k][f"{unit}_us"] for k in range(len(mine))
                 if mine[k][f"{unit}_us"] > 0]
        return round(statistics.median(pairs), 2) if pairs else None

    return {name: {unit: ratio(theirs, unit) for unit in ("cpu", "user", "wall")}
            for name, theirs in samples.items()}


# -- Django -------------------------------------------------------------------------------
DJANGO = {"ours": "redis_middleware.django.cache.RedisCache",
          "django-redis": "django_redis.cache.RedisCache",
          "Django's RedisCache": "django.core.cache.backends.redis.RedisCache"}


def django_bench(url: str, calls: int, runs: int) -> dict[str, Any]:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY=SECRET, USE_TZ=True,
        CACHES={name: {"BACKEND": backend, "LOCATION": url, "KEY_PREFIX": f"p{i}"}
                for i, (name, backend) in enumerate(DJANGO.items())},
        REDIS_MIDDLEWARE={"secret_key": (SECRET,), "key_prefix": "bench"})
    django.setup()
    from django.core.cache import caches

    trips = round_trips(url)
    samples: dict[str, dict[str, list[Measure]]] = {"get": {}, "get_or_set": {}, "aget": {}}
    for name in DJANGO:
        caches[name].set("user:1:profile", VALUE, 600)
    floor = socket_floor(url)  # a GET with no client: what no backend can go below
    for run in range(runs):
        for name in alternate([*DJANGO, FLOOR], run):
            if name == FLOOR:
                for kind in alternate(["get", "get_or_set"], run // 2):
                    samples[kind].setdefault(name, []).append(measure(floor, calls, url, None))
                continue
            cache = caches[name]
            mine = trips if name == "ours" else None

            def get(cache: Any = cache) -> Any:
                return cache.get("user:1:profile")

            def get_or_set(cache: Any = cache) -> Any:
                return cache.get_or_set("user:1:profile", load, 600)

            def aget(cache: Any = cache) -> Awaitable[Any]:
                return cache.aget("user:1:profile")  # type: ignore[no-any-return]

            for kind, fn in alternate([("get", get), ("get_or_set", get_or_set)], run // 2):
                samples[kind].setdefault(name, []).append(measure(fn, calls, url, mine))
            samples["aget"].setdefault(name, []).append(
                ameasure(aget, max(calls // 4, 100), url, mine))
    assert caches["ours"].get("user:1:profile") == VALUE
    return {"per_call": {kind: medians(s) for kind, s in samples.items()},
            "ratio_to_ours": {kind: ratios(s, "ours") for kind, s in samples.items()}}


def load() -> dict[str, Any]:
    return VALUE


# -- Flask-Caching -----------------------------------------------------------------------
FLASK = {"ours": "redis_middleware.flask.FlaskCache",
         "Flask-Caching RedisCache": "RedisCache"}


def flask_bench(url: str, calls: int, runs: int) -> dict[str, Any]:
    from flask import Flask
    from flask_caching import Cache

    os.environ.setdefault("REDIS_MIDDLEWARE_SECRET_KEY", SECRET)
    trips = round_trips(url)
    contenders: dict[str, tuple[Flask, Cache, Callable[[int], Any]]] = {}
    for i, (name, kind) in enumerate(FLASK.items()):
        app = Flask(f"bench{i}")
        app.config.update(CACHE_TYPE=kind, CACHE_REDIS_URL=url, CACHE_KEY_PREFIX=f"f{i}_",
                          CACHE_OPTIONS={"key_prefix": "bench"} if name == "ours" else None)
        cache = Cache(app)

        @cache.memoize(600)
        def profile(user_id: int) -> dict[str, Any]:
            return VALUE

        contenders[name] = (app, cache, profile)
    samples: dict[str, dict[str, list[Measure]]] = {"memoize": {}, "get": {}}
    for run in range(runs):
        for name in alternate(list(contenders), run):
            app, cache, memoized = contenders[name]
            mine = trips if name == "ours" else None
            with app.app_context():
                memoized(1)
                cache.set("user:1:profile", VALUE)
                calls_of = [("memoize", lambda memoized=memoized: memoized(1)),
                            ("get", lambda cache=cache: cache.get("user:1:profile"))]
                for kind, fn in alternate(calls_of, run // 2):
                    samples[kind].setdefault(name, []).append(measure(fn, calls, url, mine))
    return {"per_call": {kind: medians(s) for kind, s in samples.items()},
            "ratio_to_ours": {kind: ratios(s, "ours") for kind, s in samples.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", default=None, help="default: bench/results/"
                        "datacache-frameworks.json (-busy.json with --busy)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N cores busy (spinning at nice 19) while timing "
                             "(default 0: an idle machine)")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not on PATH")
    out = args.out or str(ROOT / "bench/results" / (
        "datacache-frameworks" + ("-busy" if args.busy else "") + ".json"))
    proc, url, workdir = start_server()
    try:
        with busy_cores(args.busy):
            result = {
                "python": platform.python_version(), "machine": platform.machine(),
                "calls": args.calls, "runs": args.runs, "busy_cores": args.busy,
                "django": django_bench(url, args.calls, args.runs),
                "flask_caching": flask_bench(url, args.calls, args.runs),
            }
    finally:
        stop_server(proc, workdir)
    text = json.dumps(result, indent=2)
    Path(out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
