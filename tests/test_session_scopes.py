"""ASGI scopes other than HTTP: websockets get the session, lifespan passes through."""

from __future__ import annotations

from typing import Any

from redis_middleware import Settings


def test_websocket_scope_gets_the_session(settings: Settings) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    from redis_middleware._redis.connections import connections_for
    from redis_middleware.asgi import SessionMiddleware

    from .support import apps

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(websocket.session))
        websocket.session["seen_ws"] = True
        await websocket.close()

    inner = apps.asgi_app()
    inner.router.routes.append(WebSocketRoute("/ws", ws))
    with TestClient(SessionMiddleware(inner, settings)) as client:
        client.post("/set", json={"user_id": "w"})
        with client.websocket_connect("/ws") as socket:
            assert socket.receive_json() == {"user_id": "w"}
        assert client.get("/get").json() == {"user_id": "w", "seen_ws": True}
        client.portal.call(connections_for(settings).aclose)


def test_lifespan_passes_through(settings: Settings) -> None:
    from starlette.testclient import TestClient

    from redis_middleware.asgi import SessionMiddleware

    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})

    with TestClient(SessionMiddleware(app, settings)):
        pass
    assert events == ["lifespan.startup", "lifespan.shutdown"]
