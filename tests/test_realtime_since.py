"""A WebSocket that comes back with ``since`` (the last message id it saw) to a durable
room whose stream cannot answer for it: trimmed past it, or newer than anything the
stream has (another Redis, a flush). The client is told (a gap) and still gets what the
stream keeps; a ``since`` inside the stream costs one round trip, as before
(memory:// and a real Redis)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.asgi import Broadcast, join_room
from redis_middleware.asgi.realtime import Gap, Message
from redis_middleware.wsgi import Broadcast as SyncBroadcast

from .support.clients import raw_client

ROOM = "chat:1"


def make_app(settings: Settings) -> Starlette:
    broadcast = Broadcast(settings)

    async def listen(websocket: WebSocket) -> None:
        async with join_room(websocket, broadcast, websocket.path_params["room"],
                             since=websocket.query_params.get("since")) as joined:
            await joined.wait_closed()

    return Starlette(routes=[WebSocketRoute("/rooms/{room}", listen)])


@pytest.fixture
def durable(settings: Settings) -> Settings:
    return settings.replace(realtime_durable_rooms=("chat:*",))


@pytest.fixture
def client(durable: Settings) -> Iterator[Any]:
    with TestClient(make_app(durable)) as c:
        yield c
        c.portal.call(connections_for(durable).aclose)


def _publish(settings: Settings, *numbers: int) -> list[str]:
    publisher = SyncBroadcast(settings)
    return [publisher.publish(ROOM, {"n": n}).id for n in numbers]


def _stream(settings: Settings) -> str:
    return Broadcast(settings).core.keys.realtime(ROOM, "stream")


def _received(client: Any, settings: Settings, since: str) -> list[Any]:
    """What a client reconnecting with ``since`` receives, up to a message published
    once it is connected (``"gap:<reason>"`` for a gap, else the message's number)."""
    out: list[Any] = []
    with client.websocket_connect(f"/rooms/{ROOM}?since={since}") as socket:
        _publish(settings, 99)
        while not out or out[-1] != 99:
            envelope = json.loads(socket.receive_text())
            if envelope["type"] == "gap":
                assert envelope["room"] == ROOM and envelope["missed"] is None
                out.append(f"gap:{envelope['reason']}")
            else:
                out.append(envelope["data"]["n"])
    return out


def test_a_since_trimmed_away_is_a_gap_then_what_is_kept(client: Any,
                                                         durable: Settings) -> None:
    ids = _publish(durable, 0, 1, 2, 3, 4)
    trim = raw_client(durable)
    try:
        trim.xtrim(_stream(durable), maxlen=2, approximate=False)  # 3 and 4 kept
    finally:
        trim.close()
    assert _received(client, durable, ids[0]) == ["gap:trimmed", 3, 4, 99]
    assert _received(client, durable, ids[1]) == ["gap:trimmed", 3, 4, 99]
    # Not trimmed past: the oldest kept, or a later one; nothing was lost.
    assert _received(client, durable, ids[3]) == [4, 99]
    assert _received(client, durable, ids[4]) == [99]


def test_a_since_newer_than_the_stream_is_a_gap_then_the_live_messages(
        client: Any, durable: Settings) -> None:
    ids = _publish(durable, 0, 1)
    ms = int(ids[-1].split("-")[0])
    assert _received(client, durable, f"{ms + 60_000}-0") == ["gap:future", 99]
    assert _received(client, durable, f"{ms + 60_000}") == ["gap:future", 99]


def test_a_since_from_before_a_flush_is_a_gap(client: Any, durable: Settings) -> None:
    """The stream is gone (a flush, a restart without persistence) while ``since`` is
    inside the replay window: it belongs to no history this Redis has."""
    (since,) = _publish(durable, 0)
    flush = raw_client(durable)
    try:
        flush.delete(_stream(durable))
    finally:
        flush.close()
    assert _received(client, durable, since) == ["gap:future", 99]


def test_a_since_older_than_the_window_of_an_expired_stream_is_trimmed(
        client: Any, durable: Settings) -> None:
    """A quiet room's stream expires a replay window after its last message: a
    ``since`` older than the window has lost whatever followed it."""
    long_ago = int((time.time() - durable.realtime_stream_max_age - 60) * 1000)
    assert _received(client, durable, f"{long_ago}-0") == ["gap:trimmed", 99]


async def test_a_since_inside_the_stream_costs_one_round_trip(durable: Settings) -> None:
    broadcast = Broadcast(durable)
    conns = connections_for(durable)
    try:
        sent = [await broadcast.publish(ROOM, {"n": n}) for n in range(4)]
        before = conns.round_trips
        async with broadcast.subscribe(ROOM, since=sent[1].id) as sub:
            assert conns.round_trips - before == 1
            got = [await sub.get(5) for _ in range(2)]
            assert [m.data["n"] for m in got if isinstance(m, Message)] == [2, 3]
            assert not [m for m in got if isinstance(m, Gap)]
    finally:
        await conns.aclose()
