"""The stack's own cost per request, in process: no HTTP server, no framework.

    python bench/request_overhead.py [--requests 3200] [--runs 9]

Starts its own redis-server on a free loopback port (stopped at the end) and wraps a
trivial app (it reads two session keys and answers a small JSON body) in:

- ``floor``: exactly one Redis round trip per request through the built-in client, no
  other work (as in ``bench/run.py``);
- ``stack``: ``RedisMiddleware`` (sessions, rate limiting, the response cache and
  presence), the request signed in;
- ``stack, anonymous``: the same stack, no cookie;
- ``rate limit alone`` and ``sessions alone``: the stack with one part on.

For each, on both sides (ASGI: 16 requests in flight on one uvloop event loop; WSGI: one
thread): Python function calls per request (generator and coroutine resumptions
included; the same code path gives the same count on any machine, so a change shows
even where timing noise hides it), and CPU time of this process per request, the
minimum over ``--runs`` runs that alternate between stacks. The app itself costs a few
microseconds, so ``stack - floor`` is what our middleware adds to a request. Beside
them, Redis commands per request (scripts' inner commands included) and the CPU of the
server's main thread per request (``INFO cpu``, as ``bench/run.py`` measures it).

Two checkouts compare by running this file under each (``PYTHONPATH=<tree>``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not os.environ.get("PYTHONPATH"):  # else the checkout it names is measured
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import uvloop

from redis_middleware import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datacache import python_calls, start_server, stop_server
from run import redis_usec

SECRET = "bench-secret-" + "x" * 40
LIMIT = "1000000/minute"  # counted on every request, never reached
STACKS: dict[str, dict[str, Any]] = {
    "stack": {},
    "rate limit alone": {"session_enabled": False, "cache_enabled": False,
                         "presence_enabled": False},
    "sessions alone": {"ratelimit_enabled": False, "cache_enabled": False,
                       "presence_enabled": False},
}
FIELDS = {"user_id": "u42", "name": "Ada", "role": "admin"}


def _body(session: Any) -> bytes:
    session = session if session is not None else {}
    return json.dumps({"user": session.get("user_id"), "name": session.get("name")}).encode()


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/login" and "session" in scope:
        scope["session"].update(FIELDS)
    body = _body(scope.get("session"))
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: Any, start_response: Any) -> Any:
    session = environ.get("redis_middleware.session")
    if environ["PATH_INFO"] == "/login" and session is not None:
        session.update(FIELDS)
    body = _body(session)
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class AsgiFloor:
    def __init__(self, app: Any, settings: Settings) -> None:
        from redis_middleware._redis.connections import connections_for

        self.app, self.redis = app, connections_for(settings)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.redis.arun(_one_get())
        await self.app(scope, receive, send)


class WsgiFloor:
    def __init__(self, app: Any, settings: Settings) -> None:
        from redis_middleware._redis.connections import connections_for

        self.app, self.redis = app, connections_for(settings)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.redis.run(_one_get())
        return self.app(environ, start_response)


def _one_get() -> Any:
    from redis_middleware.sansio.flow import Call

    (value,) = yield (Call(("GET", "bench:floor")),)
    return value


# -- driving the apps ---------------------------------------------------------------------
def scope(path: str, cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST" if path == "/login" else "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000)}


def environ(path: str, cookie: str | None) -> dict[str, Any]:
    env = {"REQUEST_METHOD": "POST" if path == "/login" else "GET", "PATH_INFO": path,
           "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
           "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*",
           "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
           "SERVER_PROTOCOL": "HTTP/1.1"}
    if cookie:
        env["HTTP_COOKIE"] = cookie
    return env


async def asgi_call(app: Any, path: str, cookie: str | None) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope(path, cookie), receive, send)
    return sent


def wsgi_call(app: Any, path: str, cookie: str | None) -> tuple[str, list[Any]]:
    got: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        got[:] = [status, headers]

    b"".join(app(environ(path, cookie), start_response))
    return got[0], got[1]


def cookie_of(headers: list[tuple[Any, Any]]) -> str | None:
    """The session cookie a login set (None: a stack without sessions)."""
    for name, value in headers:
        name = name.decode() if isinstance(name, bytes) else name
        value = value.decode() if isinstance(value, bytes) else value
        if name.lower() == "set-cookie":
            return str(value.split(";")[0])
    return None


def measure_side(side: str, url: str, requests: int, runs: int) -> dict[str, dict[str, float]]:
    from redis_middleware import asgi, wsgi

    module = asgi if side == "asgi" else wsgi
    app = asgi_app if side == "asgi" else wsgi_app
    apps: dict[str, Any] = {"floor": (AsgiFloor if side == "asgi" else WsgiFloor)(
        app, Settings(redis_url=url, secret_key=(SECRET,)))}
    for i, (name, changes) in enumerate(STACKS.items()):
        settings = Settings(redis_url=url, secret_key=(SECRET,), key_prefix=f"b{side}{i}",
                            **changes)
        apps[name] = module.RedisMiddleware(app, settings, limit=LIMIT, key="ip",
                                            routes={"/item/{id}": 60})
    loop = uvloop.new_event_loop()
    cookies: dict[str, str | None] = {}
    for name, wrapped in apps.items():
        if name == "floor":
            cookies[name] = None
        elif side == "asgi":
            cookies[name] = cookie_of(loop.run_until_complete(
                asgi_call(wrapped, "/login", None))[0]["headers"])
        else:
            cookies[name] = cookie_of(wsgi_call(wrapped, "/login", None)[1])
    cases = [(name, name, cookies[name]) for name in apps]
    cases.insert(2, ("stack, anonymous", "stack", None))

    def batch(wrapped: Any, cookie: str | None, n: int) -> Callable[[], Any]:
        if side == "wsgi":
            return lambda: [wsgi_call(wrapped, "/me", cookie) for _ in range(n)]

        async def worker(k: int) -> None:
            for _ in range(k):
                await asgi_call(wrapped, "/me", cookie)

        async def many() -> None:
            await asyncio.gather(*(worker(n // 16) for _ in range(16)))

        return lambda: loop.run_until_complete(many())

    def sequential(wrapped: Any, cookie: str | None, n: int) -> Callable[[], Any]:
        if side == "wsgi":
            return lambda: [wsgi_call(wrapped, "/me", cookie) for _ in range(n)]

        async def one_by_one() -> None:
            for _ in range(n):
                await asgi_call(wrapped, "/me", cookie)

        return lambda: loop.run_until_complete(one_by_one())

    out: dict[str, dict[str, float]] = {}
    admin = redis.Redis.from_url(url)
    for label, name, cookie in cases:
        batch(apps[name], cookie, 160)()  # warm: scripts loaded, memos filled
        # bench/datacache.py's count, over a batch of 100 requests one after another
        calls = python_calls(sequential(apps[name], cookie, 100), n=1) / 100
        # What the requests cost Redis: its commands (scripts' inner ones included) and
        # the CPU of its main thread (bench/run.py's measure: parsing and answering too).
        before, usec = admin.info("stats"), redis_usec(admin)
        batch(apps[name], cookie, 1600)()
        usec, after = redis_usec(admin) - usec, admin.info("stats")
        commands = after["total_commands_processed"] - before["total_commands_processed"] - 3
        out[label] = {"calls": calls, "cpu_us": float("inf"), "commands": commands / 1600,
                      "redis_us": usec / 1600}
    admin.close()
    for _ in range(runs):  # alternating: noise hits every stack alike
        for label, name, cookie in cases:
            run = batch(apps[name], cookie, requests)
            start = time.process_time()
            run()
            took = (time.process_time() - start) / (requests // 16 * 16) * 1e6
            out[label]["cpu_us"] = min(out[label]["cpu_us"], took)
    loop.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    proc, url, workdir = start_server()  # bench/datacache.py's: a free loopback port
    try:
        print("| Side | Stack | Python calls per request | CPU per request (µs, min) |"
              " over the floor (µs) | Redis commands | Redis CPU (µs) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for side in ("asgi", "wsgi"):
            table = measure_side(side, url, args.requests, args.runs)
            floor = table["floor"]["cpu_us"]
            for label, row in table.items():
                print(f"| {side} | {label} | {row['calls']:.0f} | {row['cpu_us']:.1f} | "
                      f"{row['cpu_us'] - floor:+.1f} | {row['commands']:.2f} | "
                      f"{row['redis_us']:.1f} |")
    finally:
        stop_server(proc, workdir)


if __name__ == "__main__":
    main()
