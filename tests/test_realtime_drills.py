"""Real-time fan-out when the shared subscription breaks: killed connections, Redis
stopped and restarted mid-stream. Plain rooms say they may have missed messages; durable
rooms miss nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from redis_middleware.asgi import Broadcast
from redis_middleware.asgi.realtime import Gap, Message
from redis_middleware.errors import RedisMiddlewareError

from .conftest import make_settings, start_redis_server, stop_redis_server

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


async def _collect(sub: Any, until: float) -> list[Message | Gap]:
    items: list[Message | Gap] = []
    while time.monotonic() < until:
        item = await sub.get(0.2)
        if item is not None:
            items.append(item)
    return items


async def _publish_steadily(broadcast: Broadcast, room: str, stop: asyncio.Event,
                            acknowledged: list[int]) -> None:
    n = 0
    while not stop.is_set():
        try:
            await broadcast.publish(room, n)
            acknowledged.append(n)
        except RedisMiddlewareError:
            pass  # Redis is down: this one was refused, not acknowledged
        n += 1
        await asyncio.sleep(0.01)


async def test_a_killed_subscription_is_resubscribed_with_a_gap_or_a_replay(
        own_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(own_server.url, realtime_durable_rooms=("durable:*",))
    broadcast = Broadcast(settings)
    stop = asyncio.Event()
    plain_sent: list[int] = []
    durable_sent: list[int] = []
    try:
        with caplog.at_level(logging.WARNING, logger="redis_middleware"):
            async with broadcast.subscribe("plain") as plain, \
                    broadcast.subscribe("durable:1") as durable:
                publishers = [
                    asyncio.create_task(_publish_steadily(broadcast, "plain", stop, plain_sent)),
                    asyncio.create_task(_publish_steadily(broadcast, "durable:1", stop,
                                                          durable_sent))]
                await asyncio.sleep(0.3)
                with own_server.client() as admin:  # only the Pub/Sub connection dies
                    assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*publishers)
                until = time.monotonic() + 1.0
                plain_items, durable_items = await asyncio.gather(
                    _collect(plain, until), _collect(durable, until))
        gaps = [i for i in plain_items if isinstance(i, Gap)]
        assert [g.reason for g in gaps] == ["reconnect"]  # told once, never silently
        assert [i.data for i in durable_items] == durable_sent  # type: ignore[union-attr]
        assert not any(isinstance(i, Gap) for i in durable_items)
        assert plain_items[-1].data == plain_sent[-1]  # type: ignore[union-attr]
        lines = [r.getMessage() for r in caplog.records if "real-time" in r.getMessage()]
        assert len(lines) == 2 and "lost" in lines[0] and "restored" in lines[1]
    finally:
        stop.set()
        await broadcast.redis.aclose()


async def test_redis_restarted_mid_stream(tmp_path: Path) -> None:
    """With an append-only file synced on every write, a durable room loses nothing that
    publish acknowledged; a plain room says it may have missed messages."""
    durable_opts = ("--appendonly", "yes", "--appendfsync", "always")
    server = start_redis_server(tmp_path / "a", *durable_opts)
    settings = make_settings(server.url, realtime_durable_rooms=("durable:*",),
                             socket_timeout=0.3, breaker_cooldown=0.2)
    broadcast = Broadcast(settings)
    stop = asyncio.Event()
    plain_sent: list[int] = []
    durable_sent: list[int] = []
    try:
        async with broadcast.subscribe("plain") as plain, \
                broadcast.subscribe("durable:1") as durable:
            publishers = [
                asyncio.create_task(_publish_steadily(broadcast, "plain", stop, plain_sent)),
                asyncio.create_task(_publish_steadily(broadcast, "durable:1", stop,
                                                      durable_sent))]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(stop_redis_server, server)
            await asyncio.sleep(0.5)
            server = await asyncio.to_thread(start_redis_server, tmp_path / "a",
                                             *durable_opts, port=server.port)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*publishers)
            until = time.monotonic() + 1.5
            plain_items, durable_items = await asyncio.gather(
                _collect(plain, until), _collect(durable, until))
        assert any(isinstance(i, Gap) and i.reason == "reconnect" for i in plain_items)
        assert plain_items[-1].data == plain_sent[-1]  # type: ignore[union-attr]
        delivered = [i.data for i in durable_items if isinstance(i, Message)]
        assert delivered == durable_sent  # every acknowledged message, in order, once
    finally:
        stop.set()
        await broadcast.redis.aclose()
        stop_redis_server(server)
