"""A WebSocket driven as an ASGI server drives it (no cancellation of the handler after
the client's close, unlike the frameworks' test clients), for the send-only room tests
of the Starlette and Litestar apps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.asgi import Broadcast


def websocket_scope(path: str, **extra: Any) -> dict[str, Any]:
    """The scope an ASGI server gives a WebSocket to ``path`` (``extra`` added)."""
    return {"type": "websocket", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [(b"host", b"testserver")], "scheme": "ws",
            "server": ("testserver", 80), "client": ("127.0.0.1", 5000), "root_path": "",
            "subprotocols": [], "asgi": {"version": "3.0"}, "state": {}, **extra}


async def a_listener_ends_when_the_client_leaves(app: Any, path: str, room: str,
                                                 settings: Settings) -> None:
    """The socket at ``path`` is accepted and forwards what is published to ``room``;
    after the client's close its handler returns by itself and the room's shared
    subscription ends with it."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = websocket_scope(path)
    await to_app.put({"type": "websocket.connect"})
    handler = asyncio.create_task(app(scope, to_app.get, from_app.put))
    try:
        assert (await asyncio.wait_for(from_app.get(), 5))["type"] == "websocket.accept"
        await Broadcast(settings).publish(room, {"headline": 1})
        sent = await asyncio.wait_for(from_app.get(), 5)
        assert json.loads(sent["text"])["data"] == {"headline": 1}
        await to_app.put({"type": "websocket.disconnect", "code": 1001})
        await asyncio.wait_for(handler, 5)  # returns by itself
        assert Broadcast(settings).connections() == 0  # the last subscriber left
    finally:
        handler.cancel()
        await connections_for(settings).aclose()
