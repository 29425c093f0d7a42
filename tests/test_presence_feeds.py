"""The presence event feeds of both sides, through a Redis restart (a server of their own)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from redis_middleware import RedisMiddlewareError

from .support.clients import make_settings


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_event_feeds_resubscribe_and_stop_when_idle(interface: str, tmp_path: Any) -> None:
    """Both sides' ``events()``: a Redis restart mid-feed is survived (resubscribed, logged
    once), and ``timeout`` seconds without an event end the feed."""

    from redis_middleware.asgi import Presence as AsyncPresence
    from redis_middleware.wsgi import Presence as SyncPresence

    from .support.servers import start_redis_server, stop_redis_server

    server = start_redis_server(tmp_path / "a")
    settings = make_settings(server.url)
    got: list[str] = []

    def publish_until(count: int, port: int) -> None:
        publisher = SyncPresence(settings)
        deadline = time.monotonic() + 15
        n = 0
        while len(got) < count and time.monotonic() < deadline:
            n += 1
            try:
                publisher.heartbeat(f"u{n}")
            except RedisMiddlewareError:
                pass
            time.sleep(0.1)

    def consume() -> None:
        if interface == "wsgi":
            for event in SyncPresence(settings).events(timeout=3.0):
                got.append(event.user)
            return

        async def run() -> None:
            presence = AsyncPresence(settings)
            async for event in presence.events(timeout=3.0):
                got.append(event.user)
            await presence.redis.aclose()
        asyncio.run(run())

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        publish_until(1, server.port)
        stop_redis_server(server)
        server = start_redis_server(tmp_path / "b", port=server.port)
        before = len(got)
        publish_until(before + 1, server.port)
        assert len(got) > before, "no event after the restart: the feed did not resubscribe"
        started = time.monotonic()
        consumer.join(10)
        assert not consumer.is_alive(), "the idle feed did not stop"
        assert time.monotonic() - started < 8
    finally:
        stop_redis_server(server)
        consumer.join(10)
