"""Soak: mixed traffic through the whole stack in one process (30,000 requests in the
suite; ``SOAK_REQUESTS=100000`` for a longer run)."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
from typing import Any

import pytest

from redis_middleware._redis.connections import connections_for
from redis_middleware.asgi import RedisMiddleware

from .support import apps
from .support.clients import make_settings, raw_client

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "30000"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_soak(redis_server: Any) -> None:
    # A short forwarding window for regenerated ids: checked below once it has passed.
    settings = make_settings(redis_server.url, presence_heartbeat_interval=1.0,
                             session_regenerate_grace=0.5)
    app = RedisMiddleware(apps.asgi_app(), settings, limit="10000000/minute",
                          routes={"/c/*": 60}, key="user_or_ip")
    admin = raw_client(settings)

    async def call(method: str, path: str, cookie: bytes | None, peer: int) -> Any:
        path, _, query = path.partition("?")
        headers = [(b"host", b"soak")]
        if cookie:
            headers.append((b"cookie", cookie))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": (f"10.9.{peer // 250}.{peer % 250}", 1), "server": ("soak", 80)}
        sent: list[Any] = []
        bodies = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> Any:
            if bodies:
                return bodies.pop()
            await asyncio.sleep(3600)  # the client stays connected (cancelled at the end)
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent

    async def run() -> dict[str, Any]:
        cookies: list[bytes] = []
        for user in range(50):
            sent = await call("POST", f"/login?user=soak{user}", None, user)
            cookie = dict(sent[0]["headers"])[b"set-cookie"].split(b";")[0]
            cookies.append(cookie)
        statuses: dict[int, int] = {}
        marks: dict[str, Any] = {}
        for i in range(REQUESTS):
            kind = i % 10
            cookie = cookies[i % 50] if kind >= 5 else None
            if kind < 3:
                sent = await call("GET", "/noop", None, i % 100)
            elif kind < 5:
                sent = await call("GET", f"/c/item{i % 20}", None, i % 100)
            elif kind < 8:
                sent = await call("GET", "/get", cookie, i % 50)
            elif kind < 9:
                sent = await call("POST", "/set", cookie, i % 50)
            else:
                sent = await call("POST", f"/login?user=soak{i % 50}", cookie, i % 50)
                cookies[i % 50] = dict(sent[0]["headers"])[b"set-cookie"].split(b";")[0]
            status = sent[0]["status"]
            statuses[status] = statuses.get(status, 0) + 1
            if i == REQUESTS // 10:  # after warm-up
                gc.collect()
                marks["rss_start"] = rss_mb()
                marks["clients_start"] = admin.info("clients")["connected_clients"]
        gc.collect()
        marks["rss_end"] = rss_mb()
        marks["clients_end"] = admin.info("clients")["connected_clients"]
        marks["statuses"] = statuses
        await connections_for(settings).aclose()
        return marks

    marks = asyncio.run(run())
    time.sleep(0.6)  # the forwarding entries of the last logins expire
    keys = list(admin.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
    admin.close()
    print(f"\nsoak: {REQUESTS} requests, statuses {marks['statuses']}, RSS "
          f"{marks['rss_start']:.1f} -> {marks['rss_end']:.1f} MiB, Redis clients "
          f"{marks['clients_start']} -> {marks['clients_end']}, keys {len(keys)}")
    assert set(marks["statuses"]) == {200}
    assert marks["rss_end"] - marks["rss_start"] < 25  # no leak per request
    assert marks["clients_end"] <= marks["clients_start"] + 2  # no connection growth
    # Bounded by the clients, users and URLs, whatever the number of requests:
    by_component: dict[str, int] = {}
    for key in keys:
        component = key.decode().split(":")[1]
        by_component[component] = by_component.get(component, 0) + 1
    print(f"keys by component: {by_component}")
    assert by_component.get("session", 0) <= 100  # 50 live sessions + 50 user indexes
    assert by_component.get("cache", 0) <= 20 * 3 + 1  # entry, vary, variants per URL
    assert by_component.get("ratelimit", 0) <= 100 + 50  # one per client and per user
    assert by_component.get("presence", 0) <= 60
