"""The near cache against Redis, in one run on one redis-server.

    python bench/near.py [--calls 20000] [--runs 5] [--duration 4] [--no-http]
                         [--out bench/results/near.json]

Starts its own redis-server on a free loopback port (stopped at the end, with every
server it started) and measures, with and without the near cache, alternating runs so
that noise hits both alike (medians reported):

1. **A data-cache hot hit**, one call at a time: a ``DataCache.cached`` function (a
   small dict, each hit its own copy) on a cache with the near cache against the same
   function on one without it (one ``GET`` and a decode per hit); sync and asyncio. CPU
   (``process_time``) and wall time per call, and Redis commands per call (the server's
   ``total_commands_processed``).
2. **A response-cache hit in process**: ``CacheMiddleware`` (ASGI and WSGI) called
   directly with a request for a fresh cached route (no HTTP server): the middleware's
   own cost per hit.
3. **A response-cache hit over HTTP** (unless ``--no-http``): the same cache-only app
   under uvicorn (ASGI), gunicorn (gthread, 8 threads) and granian (8 blocking threads)
   for WSGI, one worker each, driven by wrk (16 connections): requests per second and
   commands per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SECRET = "bench-secret-" + "x" * 40
VALUE = {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"],
         "score": 12.5, "active": True}
ITEM = {"id": 1, "name": "item 1", "price": 9.5}


def settings(url: str, near: bool, prefix: str) -> Any:
    from redis_middleware import Settings

    return Settings(redis_url=url, secret_key=(SECRET,), key_prefix=prefix,
                    near_cache_size=10_000 if near else 0)


# -- the apps the HTTP part serves (``near:asgi_app``, ``near:wsgi_app``) ---------------------
def _asgi_app() -> Any:
    from redis_middleware.asgi import CacheMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.002)  # the database
        body = json.dumps(ITEM).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    near = os.environ.get("NEAR_BENCH_NEAR") == "1"
    return CacheMiddleware(app, settings(os.environ["NEAR_BENCH_URL"], near,
                                         os.environ["NEAR_BENCH_PREFIX"]),
                           routes={"/item/{id}": 60})


def _wsgi_app() -> Any:
    from redis_middleware.wsgi import CacheMiddleware

    def app(environ: Any, start_response: Any) -> Any:
        time.sleep(0.002)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(ITEM).encode()]

    near = os.environ.get("NEAR_BENCH_NEAR") == "1"
    return CacheMiddleware(app, settings(os.environ["NEAR_BENCH_URL"], near,
                                         os.environ["NEAR_BENCH_PREFIX"]),
                           routes={"/item/{id}": 60})


def __getattr__(name: str) -> Any:  # built when a server imports them, not before
    if name == "asgi_app":
        return _asgi_app()
    if name == "wsgi_app":
        return _wsgi_app()
    raise AttributeError(name)


# -- the driver -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    import redis

    exe = os.environ.get("REDIS_MIDDLEWARE_TEST_SERVER") or shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-near-")
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


def commands_processed(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as r:
        return int(r.info("stats")["total_commands_processed"])


def measure(fn: Callable[[], Any], calls: int, url: str) -> dict[str, float]:
    for _ in range(min(500, calls)):
        fn()
    before = commands_processed(url)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    commands = commands_processed(url) - before - 1  # the INFO itself
    return {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6,
            "commands": commands / calls}


def ameasure(fn: Callable[[], Any], calls: int, url: str) -> dict[str, float]:
    async def main() -> dict[str, float]:
        for _ in range(min(500, calls)):
            await fn()
        before = commands_processed(url)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await fn()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        commands = commands_processed(url) - before - 1
        return {"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6,
                "commands": commands / calls}

    return asyncio.run(main())


def medians(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {k: round(statistics.median(s[k] for s in runs), 2) for k in runs[0]}
            for name, runs in samples.items()}


def data_hits(url: str, calls: int, runs: int) -> dict[str, Any]:
    """A ``DataCache.cached`` function's hot hit with the near cache against the same
    function on a cache without it (one GET per hit), as an application calls it."""
    from redis_middleware import DataCache
    from redis_middleware._redis.connections import near_cache_for

    on, off = settings(url, True, "bench-data"), settings(url, False, "bench-data")
    near = near_cache_for(on)
    assert near is not None and near.wait_ready(5), "the near cache did not start"
    near_cache, redis_cache = DataCache(on), DataCache(off)

    def load(uid: int) -> dict[str, Any]:
        return dict(VALUE)

    async def aload(uid: int) -> dict[str, Any]:
        return dict(VALUE)

    near_hit = near_cache.cached(ttl=3600, key="user:{uid}")(load)
    redis_hit = redis_cache.cached(ttl=3600, key="user:{uid}")(load)
    anear = near_cache.cached(ttl=3600, key="auser:{uid}")(aload)
    aredis = redis_cache.cached(ttl=3600, key="auser:{uid}")(aload)
    for _ in range(3):  # stored, then read from Redis and kept in memory
        near_hit(1)
        asyncio.run(anear(1))
    assert near_hit(1) == VALUE and redis_hit(1) == VALUE

    async def anear_hit() -> Any:
        return await anear(1)

    async def aredis_hit() -> Any:
        return await aredis(1)

    samples: dict[str, list[dict[str, float]]] = {
        "sync near hit": [], "sync Redis hit": [], "async near hit": [],
        "async Redis hit": []}
    for _ in range(runs):
        samples["sync near hit"].append(measure(lambda: near_hit(1), calls, url))
        samples["sync Redis hit"].append(measure(lambda: redis_hit(1), calls // 4, url))
        samples["async near hit"].append(ameasure(anear_hit, calls, url))
        samples["async Redis hit"].append(ameasure(aredis_hit, calls // 4, url))
    near_cache.redis.close()
    return medians(samples)


def _scope() -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/item/1", "raw_path": b"/item/1",
            "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 50000), "server": ("bench", 80)}


def _environ() -> dict[str, Any]:
    import io

    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/item/1", "QUERY_STRING": "",
            "SERVER_NAME": "bench", "SERVER_PORT": "80", "HTTP_HOST": "bench",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
            "SERVER_PROTOCOL": "HTTP/1.1"}


def response_hits(url: str, calls: int, runs: int) -> dict[str, Any]:
    """CacheMiddleware called in process with a request for a fresh cached route."""
    from redis_middleware._redis.connections import connections_for

    os.environ["NEAR_BENCH_URL"] = url
    apps: dict[str, Any] = {}
    for near in (False, True):
        os.environ["NEAR_BENCH_NEAR"] = "1" if near else "0"
        os.environ["NEAR_BENCH_PREFIX"] = f"bench-resp-{int(near)}"
        apps[f"asgi{' + near' if near else ''}"] = _asgi_app()
        apps[f"wsgi{' + near' if near else ''}"] = _wsgi_app()

    def wsgi_call(app: Any) -> Callable[[], Any]:
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            statuses.append(status)

        def call() -> Any:
            body = b"".join(app(_environ(), start_response))
            if statuses.pop() != "200 OK" or b"item 1" not in body:
                raise SystemExit("the WSGI app did not answer 200")
            return body

        return call

    def asgi_call(app: Any) -> Callable[[], Any]:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def call() -> Any:
            sent: list[Any] = []

            async def send(message: Any) -> None:
                sent.append(message)

            await app(_scope(), receive, send)
            if sent[0]["status"] != 200:
                raise SystemExit("the ASGI app did not answer 200")
            return sent

        return call

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
    cache_states: dict[str, str] = {}
    for _ in range(runs):
        for name, app in apps.items():
            if name.startswith("wsgi"):
                samples[name].append(measure(wsgi_call(app), calls // 4, url))
            else:
                samples[name].append(ameasure(asgi_call(app), calls // 4, url))
    for name, app in apps.items():  # what the last request was served as
        if name.startswith("wsgi"):
            headers: list[Any] = []

            def keep(status: str, given: Any, exc_info: Any = None,
                     into: list[Any] = headers) -> None:
                into.extend(given)

            b"".join(app(_environ(), keep))
            cache_states[name] = dict(headers)["X-Cache"]
    for app in apps.values():
        connections_for(app.settings).close()
    out = medians(samples)
    for name, state in cache_states.items():
        out[name]["x_cache"] = state  # type: ignore[assignment]
    return out


# side -> server: uvicorn; gunicorn's gthread worker (what most Flask deployments run);
# granian (Rust), whose own cost per request is far lower, so that the middleware's share
# of a WSGI request shows (as in bench/run.py).
HTTP_SIDES = ("asgi", "wsgi", "wsgi-granian")


def server_command(side: str, port: int) -> list[str]:
    """One worker process; the WSGI servers run the app on 8 threads."""
    if side == "asgi":
        return [sys.executable, "-m", "uvicorn", "near:asgi_app", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--log-level", "warning",
                "--no-access-log"]
    if side == "wsgi":
        return [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads",
                "8", "-b", f"127.0.0.1:{port}", "--log-level", "warning", "near:wsgi_app"]
    return [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--blocking-threads", "8",
            "--log-level", "error", "near:wsgi_app"]


def http_hits(url: str, duration: int, runs: int) -> dict[str, Any]:
    """The cache-only app under uvicorn, gunicorn and granian, with and without the near
    cache."""
    import httpx
    import redis

    servers: list[tuple[str, subprocess.Popen[bytes], int]] = []
    try:
        for side in HTTP_SIDES:
            for near in (False, True):
                port = free_port()
                env = {**os.environ, "NEAR_BENCH_URL": url, "NEAR_BENCH_NEAR": str(int(near)),
                       "NEAR_BENCH_PREFIX": f"bench-http-{side}-{int(near)}",
                       "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
                command = server_command(side, port)
                proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                servers.append((f"{side}{' + near' if near else ''}", proc, port))
        for name, proc, port in servers:
            for _ in range(200):
                try:
                    for _ in range(5):  # store, then hits (the near cache fills on one)
                        httpx.get(f"http://127.0.0.1:{port}/item/1", timeout=2)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None:
                        raise SystemExit(f"{name} did not start") from None
                    time.sleep(0.1)
        time.sleep(1.0)  # the near caches' tracking connections are up
        samples: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in servers}
        admin = redis.Redis.from_url(url)
        for _ in range(runs):
            for name, _, port in servers:
                out = subprocess.run(
                    ["wrk", "-t1", "-c16", f"-d{duration}s", "--latency",
                     f"http://127.0.0.1:{port}/item/1"], capture_output=True, text=True,
                    check=True).stdout
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
                samples[name].append({"rps": rps})
        for name, _, port in servers:
            with httpx.Client() as client:
                client.get(f"http://127.0.0.1:{port}/item/1")
                before = admin.info("stats")["total_commands_processed"]
                for _ in range(200):
                    response = client.get(f"http://127.0.0.1:{port}/item/1")
                    assert response.headers["x-cache"] == "HIT"
                after = admin.info("stats")["total_commands_processed"]
            for sample in samples[name]:
                sample["commands"] = (after - before - 1) / 200
        admin.close()
        return medians(samples)
    finally:
        for _, proc, _ in servers:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def render(report: dict[str, Any]) -> str:
    lines = ["Data-cache hot hit, per call (µs; commands per call)"]
    d = report["data"]
    for mode in ("sync", "async"):
        n, r = d[f"{mode} near hit"], d[f"{mode} Redis hit"]
        lines.append(f"  {mode:5}  near {n['wall_us']:6.2f} wall {n['cpu_us']:6.2f} cpu "
                     f"{n['commands']:.3f} cmd | Redis {r['wall_us']:6.2f} wall "
                     f"{r['cpu_us']:6.2f} cpu {r['commands']:.3f} cmd | "
                     f"{r['wall_us'] / n['wall_us']:.1f}x")
    lines.append("Response-cache hit in process, per request (µs; commands per request)")
    p = report["response"]
    for side in ("asgi", "wsgi"):
        n, r = p[f"{side} + near"], p[side]
        state = f" ({n['x_cache']})" if "x_cache" in n else ""
        lines.append(f"  {side}  near {n['wall_us']:6.2f} wall {n['commands']:.3f} cmd"
                     f"{state} | Redis {r['wall_us']:6.2f} wall "
                     f"{r['commands']:.3f} cmd | {r['wall_us'] / n['wall_us']:.2f}x")
    if "http" in report:
        lines.append("Response-cache hit over HTTP (requests/s; commands per request)")
        h = report["http"]
        for side in HTTP_SIDES:
            if side not in h:  # a report of an older run
                continue
            n, r = h[f"{side} + near"], h[side]
            lines.append(f"  {side:12}  near {n['rps']:8.0f} rps {n['commands']:.3f} cmd | "
                         f"Redis {r['rps']:8.0f} rps {r['commands']:.3f} cmd | "
                         f"{n['rps'] / r['rps']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "near.json"))
    args = parser.parse_args()
    proc, url, workdir = start_redis()
    try:
        import redis

        version = redis.Redis.from_url(url).info("server")
        report: dict[str, Any] = {
            "server": f"{version.get('server_name', 'redis')} {version['redis_version']}",
            "python": platform.python_version(), "machine": platform.machine(),
            "data": data_hits(url, args.calls, args.runs),
            "response": response_hits(url, args.calls, args.runs)}
        if not args.no_http:
            report["http"] = http_hits(url, args.duration, max(1, args.runs // 2))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(report))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
