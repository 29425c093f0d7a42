"""Real-time fan-out: rooms across processes, one shared subscription, gaps, durable
replay, slow subscribers, hostile room names (memory://, Redis and a Cluster)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_middleware import Settings, SubscriberOverflow
from redis_middleware.asgi import Broadcast
from redis_middleware.asgi.realtime import Gap, Message
from redis_middleware.wsgi import Broadcast as SyncBroadcast

from .support.audit import audit_keyspace
from .support.clients import raw_client

pytestmark = pytest.mark.scenarios
ROOT = Path(__file__).resolve().parent.parent


async def _next(subscription: Any, timeout: float = 5.0) -> Message | Gap:
    item = await subscription.get(timeout)
    assert item is not None, "nothing arrived"
    return item


def _numsub(settings: Settings, channel: str) -> int:
    """Subscribers Redis counts on ``channel`` (sharded on a Cluster: asked of the node
    that owns its slot, with a plain connection: redis-py's cluster client merges the
    nodes' replies, and 8.2 no longer merges a reply it has not split into pairs)."""
    client = raw_client(settings)
    try:
        if settings.target.kind == "cluster":
            node = client.get_node_from_key(channel)
            with redis.Redis(host=node.host, port=node.port) as on_node:
                return _count(on_node.execute_command("PUBSUB", "SHARDNUMSUB", channel), channel)
        return _count(client.execute_command("PUBSUB", "NUMSUB", channel), channel)
    finally:
        client.close()


def _count(reply: Any, channel: str) -> int:
    """The count for ``channel`` in a ``PUBSUB (SHARD)NUMSUB`` reply, as the server sends
    it (a flat channel, count, ... array) or as a redis-py callback shapes it (pairs, or
    a mapping)."""
    if isinstance(reply, dict):
        pairs = list(reply.items())
    elif reply and isinstance(reply[0], (list, tuple)):
        pairs = [tuple(pair) for pair in reply]
    else:
        pairs = list(zip(reply[0::2], reply[1::2], strict=True))
    counts = [int(n) for name, n in pairs
              if (name.decode() if isinstance(name, bytes) else name) == channel]
    assert len(counts) == 1, f"no single count for {channel!r} in {reply!r}"
    return counts[0]


async def test_every_local_subscriber_gets_each_message_over_one_subscription(
        settings: Settings) -> None:
    broadcast = Broadcast(settings)
    channel = broadcast.core.channel("room:1")
    try:
        async with broadcast.subscribe("room:1") as a, broadcast.subscribe("room:1") as b:
            assert broadcast.connections() == 1
            if settings.target.kind != "memory":
                assert _numsub(settings, channel) == 1  # two local subscribers, one for Redis
            sent = await broadcast.publish("room:1", {"text": "Hello!"})
            for sub in (a, b):
                got = await _next(sub)
                assert isinstance(got, Message) and got.data == {"text": "Hello!"}
                assert got.seq == sent.seq == 1 and got.room == "room:1"
            async with broadcast.subscribe("room:1") as c:
                await broadcast.publish("room:1", 2)
                assert [(await _next(s)).data for s in (a, b, c)] == [2, 2, 2]
        if settings.target.kind != "memory":
            assert _numsub(settings, channel) == 0  # the last local subscriber left
        assert broadcast.connections() == 0
    finally:
        await broadcast.redis.aclose()
    audit_keyspace(settings)


async def test_rooms_are_isolated_and_numbered_each_on_its_own(settings: Settings) -> None:
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("a") as a, broadcast.subscribe("b") as b:
            await broadcast.publish("a", "for a")
            await broadcast.publish("b", "for b")
            await broadcast.publish("a", "again a")
            assert [(m.data, m.seq) for m in [await _next(a), await _next(a)]] == [
                ("for a", 1), ("again a", 2)]
            got = await _next(b)
            assert (got.data, got.seq) == ("for b", 1)  # type: ignore[union-attr]
            assert await b.get(0.2) is None
    finally:
        await broadcast.redis.aclose()


async def test_a_sync_publisher_reaches_async_subscribers(settings: Settings) -> None:
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("orders") as sub:
            published = await asyncio.to_thread(SyncBroadcast(settings).publish, "orders",
                                                {"id": 7})
            got = await _next(sub)
            assert isinstance(got, Message) and got.data == {"id": 7}
            assert got.seq == published.seq
    finally:
        await broadcast.redis.aclose()


@pytest.mark.parametrize("room", [
    "a:b", "{tag}", "}{", "*", "room\nname", "../../etc", "x" * 256, "ключ", "a b%3A",
    "rmw:session:{x}", "\x00",
])
async def test_hostile_room_names_stay_inside_the_namespace(settings: Settings,
                                                            room: str) -> None:
    settings = settings.replace(realtime_durable_rooms=("*",))
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe(room) as sub:
            await broadcast.publish(room, {"room": room})
            got = await _next(sub)
            assert isinstance(got, Message) and got.data == {"room": room} and got.room == room
        channel = broadcast.core.channel(room)
        assert channel.startswith(f"{settings.key_prefix}:realtime:{{")
        assert channel.count("{") == 1 and channel.count("}") == 1  # one hash tag, ours
    finally:
        await broadcast.redis.aclose()
    keys = audit_keyspace(settings)  # every key has a TTL and a known component
    assert keys and all(k.startswith(f"{settings.key_prefix}:realtime:{{") for k in keys)


@pytest.mark.parametrize("room", ["", "x" * 257])
async def test_unusable_room_names_and_messages_are_refused(settings: Settings,
                                                            room: str) -> None:
    broadcast = Broadcast(settings)
    try:
        with pytest.raises(ValueError, match="room name"):
            await broadcast.publish(room, 1)
        with pytest.raises(ValueError, match="room name"):
            async with broadcast.subscribe(room):
                pass
        with pytest.raises(ValueError, match="JSON"):
            await broadcast.publish("ok", {"not": object()})
        with pytest.raises(ValueError, match="larger"):
            await broadcast.publish("ok", "x" * settings.realtime_max_message_bytes)
    finally:
        await broadcast.redis.aclose()


async def test_a_durable_room_replays_from_the_last_id_a_client_saw(settings: Settings) -> None:
    settings = settings.replace(realtime_durable_rooms=("chat:*",))
    broadcast = Broadcast(settings)
    try:
        sent = [await broadcast.publish("chat:1", {"n": n}) for n in range(5)]
        assert all(p.id for p in sent) and [p.seq for p in sent] == [1, 2, 3, 4, 5]
        async with broadcast.subscribe("chat:1", since=sent[1].id) as sub:
            await broadcast.publish("chat:1", {"n": 5})
            got = [await _next(sub) for _ in range(4)]
            assert [m.data["n"] for m in got] == [2, 3, 4, 5]  # type: ignore[union-attr]
            assert await sub.get(0.2) is None  # delivered once, replayed or live
        assert [m.data["n"] for m in await broadcast.history("chat:1", 3)] == [3, 4, 5]
        assert await broadcast.history("plain", 3) == []
    finally:
        await broadcast.redis.aclose()
    client = raw_client(settings)
    try:
        key = broadcast.core.keys.realtime("chat:1", "stream")
        ttl = client.ttl(key)
        assert 0 < ttl <= settings.realtime_stream_max_age
    finally:
        client.close()


@pytest.mark.parametrize("since", ["not-an-id", "1-", "-", "+", "$", "(5", "1-2-3",
                                   "18446744073709551616-0", " 1", "\uff11"])
async def test_a_since_that_is_no_stream_id_is_the_client_s_mistake(
        settings: Settings, since: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``since`` from a client that is no stream id: never sent to Redis, the
    subscriber starts with a gap, then gets the live messages; nothing is logged (a
    Redis incident's warning, sharing the real-time log throttle, would let a client
    mute the real ones)."""
    from redis_middleware.sansio import incidents

    monkeypatch.setattr(incidents, "_last_logged", {})
    settings = settings.replace(realtime_durable_rooms=("chat:*",))
    broadcast = Broadcast(settings)
    try:
        await broadcast.publish("chat:1", "before")
        with caplog.at_level(logging.WARNING):
            async with broadcast.subscribe("chat:1", since=since) as sub:
                await broadcast.publish("chat:1", "live")
                assert await _next(sub) == Gap("chat:1", "since")
                assert (await _next(sub)).data == "live"  # type: ignore[union-attr]
        assert not [r for r in caplog.records if "real-time" in r.getMessage()]
    finally:
        await broadcast.redis.aclose()


def _lose_on_the_way(settings: Settings, broadcast: Broadcast, room: str,
                     keep: bool = True) -> None:
    """What a message Pub/Sub did not carry leaves behind (a Cluster node changing roles
    under a subscription, say): its number taken and, in a durable room, its stream
    entry (``keep=False``: trimmed away since), but nothing on the channel."""
    client = raw_client(settings)
    try:
        seq = client.incr(broadcast.core.keys.realtime(room, "seq"))
        if broadcast.core.durable(room):
            stream = broadcast.core.keys.realtime(room, "stream")
            entry = client.xadd(stream, {"s": seq, "t": int(time.time() * 1000),
                                         "d": json.dumps("lost")})
            if not keep:
                client.xdel(stream, entry)
    finally:
        client.close()


async def test_a_durable_room_reads_back_what_its_subscription_missed(
        settings: Settings) -> None:
    settings = settings.replace(realtime_durable_rooms=("chat:*",))
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("chat:1") as sub, \
                broadcast.subscribe("chat:1", since="0") as late:
            await broadcast.publish("chat:1", "first")
            _lose_on_the_way(settings, broadcast, "chat:1")
            await broadcast.publish("chat:1", "third")
            await broadcast.publish("chat:1", "fourth")
            for s in (sub, late):
                got = [await _next(s) for _ in range(4)]
                assert [(m.seq, m.data) for m in got] == [  # type: ignore[union-attr]
                    (1, "first"), (2, "lost"), (3, "third"), (4, "fourth")]
                assert await s.get(0.2) is None  # nothing twice, no gap
            _lose_on_the_way(settings, broadcast, "chat:1", keep=False)  # gone for good
            await broadcast.publish("chat:1", "sixth")
            assert await _next(sub) == Gap("chat:1", "sequence", 1)  # told, not hidden
            assert (await _next(sub)).data == "sixth"  # type: ignore[union-attr]
    finally:
        await broadcast.redis.aclose()


async def test_a_plain_room_marks_a_skipped_number_as_a_gap(settings: Settings) -> None:
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("plain") as sub:
            await broadcast.publish("plain", 1)
            _lose_on_the_way(settings, broadcast, "plain")
            await broadcast.publish("plain", 3)
            got = [await _next(sub) for _ in range(3)]
            assert got[1] == Gap("plain", "sequence", 1)
            assert [(m.seq, m.data) for m in (got[0], got[2])] == [  # type: ignore[union-attr]
                (1, 1), (3, 3)]
    finally:
        await broadcast.redis.aclose()


async def test_a_durable_room_keeps_about_maxlen_messages(settings: Settings) -> None:
    settings = settings.replace(realtime_durable_rooms=("*",), realtime_stream_maxlen=10)
    broadcast = SyncBroadcast(settings)
    for n in range(500):
        broadcast.publish("busy", n)
    client = raw_client(settings)
    try:
        length = client.xlen(broadcast.core.keys.realtime("busy", "stream"))
        assert 10 <= length < 200  # "~": trimmed by whole nodes of the stream
    finally:
        client.close()


async def test_a_slow_subscriber_gets_a_gap_and_never_delays_the_others(
        settings: Settings) -> None:
    settings = settings.replace(realtime_queue_size=5)
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("r") as slow, broadcast.subscribe("r") as fast:
            received: list[int] = []
            for n in range(20):  # the fast one reads each message as it comes
                await broadcast.publish("r", n)
                item = await _next(fast)
                assert isinstance(item, Message)
                received.append(item.data)
            assert received == list(range(20))  # the fast one missed nothing
            assert slow.pending <= 5  # bounded, whatever the backlog
            gap = await _next(slow)
            assert isinstance(gap, Gap) and gap.reason == "overflow" and gap.missed == 15
            assert [(await _next(slow)).data for _ in range(5)] == [  # type: ignore[union-attr]
                15, 16, 17, 18, 19]
    finally:
        await broadcast.redis.aclose()


async def test_the_disconnect_policy_ends_a_slow_subscription(settings: Settings) -> None:
    settings = settings.replace(realtime_queue_size=3, realtime_overflow="disconnect")
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("r") as slow, broadcast.subscribe("r") as other:
            for n in range(4):  # the other one reads each message as it comes
                await broadcast.publish("r", n)
                assert (await _next(other)).data == n  # type: ignore[union-attr]
            deadline = time.monotonic() + 5
            while not slow.inbox.overflowed and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            with pytest.raises(SubscriberOverflow):
                await slow.get(1)
    finally:
        await broadcast.redis.aclose()


async def test_a_thousand_subscribers_in_a_hundred_rooms_share_one_connection(
        settings: Settings) -> None:
    import contextlib

    broadcast = Broadcast(settings)
    try:
        async with contextlib.AsyncExitStack() as stack:
            subs = [await stack.enter_async_context(broadcast.subscribe(f"room:{i % 100}"))
                    for i in range(1000)]
            expected = 1 if settings.target.kind != "cluster" else 3  # one per master
            assert broadcast.connections() <= expected
            for room in range(100):
                await broadcast.publish(f"room:{room}", room)
            got = await asyncio.gather(*(_next(s) for s in subs))
            assert [m.data for m in got] == [i % 100 for i in range(1000)]  # type: ignore
    finally:
        await broadcast.redis.aclose()


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": settings.redis_url,
            "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
            "REDIS_MIDDLEWARE_SECRET_KEY": settings.secret_key[0],
            "PYTHONPATH": str(ROOT)}


@pytest.fixture
def peer(settings: Settings) -> Iterator[Any]:
    """Start tests/support/realtime_peer.py in another process (stopped after the test)."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.realtime_peer", *args],
                                cwd=ROOT, env=_env(settings), stdout=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_messages_cross_processes_both_ways(settings: Settings, peer: Any) -> None:
    if settings.target.kind == "memory":
        pytest.skip("memory:// is one process by definition")
    broadcast = Broadcast(settings)
    try:
        async with broadcast.subscribe("x") as sub:  # another process publishes
            proc = peer("publish", "x", "3")
            got = [await _next(sub, 20) for _ in range(3)]
            assert [m.data for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]  # type: ignore
            assert proc.wait(20) == 0
        listener = peer("subscribe", "y", "z")  # another process subscribes
        assert listener.stdout is not None
        assert await asyncio.to_thread(listener.stdout.readline) == "ready\n"
        await broadcast.publish("y", "to y")
        await broadcast.publish("z", "to z")
        lines = [json.loads(await asyncio.to_thread(listener.stdout.readline))
                 for _ in range(2)]
        assert sorted((m["room"], m["data"]) for m in lines) == [("y", "to y"), ("z", "to z")]
    finally:
        await broadcast.redis.aclose()
