"""The WebSocket fan-out app of bench/realtime.py, in three variants (env VARIANT):

- ``ours``: redis_middleware's ``join_room`` (one shared subscription per process);
- ``per-socket``: the common hand-written way, one redis-py Pub/Sub per WebSocket;
- ``broadcaster``: encode/broadcaster 0.3 on Redis (one subscription per process).

Each socket of ``/ws/{room}`` gets every message of its room as a text frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

VARIANT = os.environ.get("VARIANT", "ours")
REDIS_URL = os.environ["REDIS_URL"]
open_sockets = 0


async def _forward_until_closed(websocket: WebSocket, forward: Any) -> None:
    """Run ``forward()`` (it sends) while reading the socket until the client leaves."""
    global open_sockets
    open_sockets += 1
    sender = asyncio.create_task(forward())
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        open_sockets -= 1
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender


if VARIANT == "ours":
    from redis_middleware import Settings
    from redis_middleware.asgi import Broadcast, join_room

    broadcast = Broadcast(Settings.from_env())

    async def room(websocket: WebSocket) -> None:
        global open_sockets
        async with join_room(websocket, broadcast, websocket.path_params["room"]) as joined:
            open_sockets += 1
            await joined.wait_closed()
        open_sockets -= 1

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await broadcast.aclose()

elif VARIANT == "per-socket":
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, max_connections=5000)

    async def room(websocket: WebSocket) -> None:
        await websocket.accept()
        pubsub = client.pubsub()
        await pubsub.subscribe("bench:" + websocket.path_params["room"])

        async def forward() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    await websocket.send_text(message["data"].decode())

        try:
            await _forward_until_closed(websocket, forward)
        finally:
            await pubsub.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await client.aclose()

else:
    from broadcaster import Broadcast as PeerBroadcast

    peer = PeerBroadcast(REDIS_URL)

    async def room(websocket: WebSocket) -> None:
        await websocket.accept()
        async with peer.subscribe("bench:" + websocket.path_params["room"]) as subscriber:

            async def forward() -> None:
                async for event in subscriber:
                    await websocket.send_text(event.message)

            await _forward_until_closed(websocket, forward)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await peer.connect()
        yield
        await peer.disconnect()


def held() -> int | None:
    """Messages received and not yet sent, over all subscribers (the backpressure run).
    Read from each library's internals: neither has a public counter for it."""
    if VARIANT == "ours":
        from redis_middleware.asgi import realtime

        return sum(len(inbox.queue) for hubs in realtime._hubs.values()
                   for hub in hubs.values() for r in hub.rooms.values()
                   for inbox in r.inboxes)
    if VARIANT == "broadcaster":
        return sum(q.qsize() for qs in peer._subscribers.values() for q in qs)
    return None  # per-socket: what is not read waits in Redis (its output buffers)


async def ready(_: Any) -> JSONResponse:
    return JSONResponse({"sockets": open_sockets, "held": held()})


app = Starlette(routes=[WebSocketRoute("/ws/{room}", room), Route("/ready", ready)],
                lifespan=lifespan)
