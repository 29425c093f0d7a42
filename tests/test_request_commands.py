"""What a request costs Redis: the commands an authenticated read runs, counted on a real
server (commands inside scripts included), and the bound the session's sliding expiry
keeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_middleware import Settings

from .support.clients import Clients, make_settings
from .support.servers import RedisServer

pytestmark = pytest.mark.real_redis


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def commands(admin: redis.Redis) -> dict[str, int]:
    """Calls per command since the last reset (CONFIG RESETSTAT)."""
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def counted(admin: redis.Redis, run: Any) -> dict[str, int]:
    admin.config_resetstat()
    run()
    found = commands(admin)
    found.pop("config|resetstat", None)
    found.pop("config", None)
    return found


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_an_authenticated_read_runs_at_most_five_commands(
    interface: str, redis_server: RedisServer, admin: redis.Redis
) -> None:
    """The one-line stack on a signed-in request (session cookie, a per-IP limit,
    presence on): one round trip, the session's HGETALL and the limit's INCRBY and PTTL
    inside their scripts, nothing slid while the last slide is recent."""
    settings = make_settings(redis_server.url, session_slide_interval=60)
    clients = Clients(interface, settings)
    client = clients("RedisMiddleware", limit="1000/minute", key="ip")
    try:
        client.post("/login?user=ada")
        client.get("/get")  # the first heartbeat and scripts loaded
        reads = 20
        used = counted(admin, lambda: [client.get("/get") for _ in range(reads)])
        assert used.get("evalsha", 0) == 2 * reads, used
        assert sum(used.values()) <= 5 * reads, used
        assert used.get("hset", 0) == 0 and used.get("pexpire", 0) == 0, used
    finally:
        clients.close()


def test_the_idle_expiry_slides_once_per_interval(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    settings = make_settings(redis_server.url, session_idle_timeout=60,
                             session_slide_interval=0.4)
    clients = Clients("asgi", settings)
    client = clients()
    try:
        client.post("/set", json={"a": 1})
        (key,) = [k for k in admin.scan_iter(f"{settings.key_prefix}:session:*")
                  if b":user:" not in k]
        time.sleep(0.15)
        assert client.get("/get").json() == {"a": 1}
        first = admin.pttl(key)
        assert first < 59_900  # not slid: the write was 0.15 s ago, under the interval
        time.sleep(0.4)
        assert client.get("/get").json() == {"a": 1}
        assert admin.pttl(key) > first  # slid: the interval has passed
    finally:
        clients.close()


def test_no_interval_slides_every_read(redis_server: RedisServer, admin: redis.Redis) -> None:
    settings: Settings = make_settings(redis_server.url, session_idle_timeout=60,
                                       session_slide_interval=0)
    clients = Clients("wsgi", settings)
    client = clients()
    try:
        client.post("/set", json={"a": 1})
        client.get("/get")
        used = counted(admin, lambda: [client.get("/get") for _ in range(5)])
        assert used.get("pexpire", 0) == 5, used
    finally:
        clients.close()
