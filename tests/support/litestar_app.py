"""A small Litestar shop for the tests: Litestar's ``request.session`` on our sessions, a
per-user limit, a cached route, presence, and a chat room over a Litestar WebSocket
(``join_room``, authorised by the session); installed either way Litestar allows.

``uvicorn tests.support.litestar_app:app`` serves it wrapped (settings from the environment).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, WebSocket, get, post, websocket
from litestar.handlers import WebsocketRouteHandler
from litestar.middleware import DefineMiddleware

from redis_middleware import Settings
from redis_middleware.asgi import Broadcast, Presence, RedisMiddleware, join_room

rendered = {"count": 0}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@post("/login")
async def login(request: Request[Any, Any, Any]) -> dict[str, str]:
    data = await request.json()
    session = request.session
    session.regenerate()  # type: ignore[attr-defined]  # a new id at login
    session["user_id"] = data["user"]
    return {"user": data["user"]}


@get("/me")
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    session = request.session
    session["visits"] = session.get("visits", 0) + 1
    return {"user": session.get("user_id"), "visits": session["visits"]}


@get("/items")
async def items() -> dict[str, int]:
    rendered["count"] += 1
    return {"rendered": rendered["count"]}


ended: list[str] = []  # the room handlers that returned, in order


def rooms(settings: Settings) -> list[WebsocketRouteHandler]:
    """A chat room (members talk, presence notices) and a listener that only sends."""
    broadcast = Broadcast(settings)
    presence = Presence(settings)

    @websocket("/rooms/{name:str}")
    async def room(socket: WebSocket[Any, Any, Any]) -> None:
        name = socket.path_params["name"]
        user = socket.session.get("user_id")  # authorised by the session, before joining
        if user is None:
            await socket.close(code=4401)
            return
        async with join_room(socket, broadcast, f"room:{name}", user=user,
                             presence=presence) as joined:
            async for text in joined:
                await joined.publish({"user": user, "text": text})
        ended.append(f"room:{user}")

    @websocket("/news")
    async def news(socket: WebSocket[Any, Any, Any]) -> None:
        async with join_room(socket, broadcast, "news") as joined:
            await joined.wait_closed()  # never reads: must still notice the client left
        ended.append("news")

    return [room, news]


def options() -> dict[str, Any]:
    return {"limit": "100/minute", "key": "user_or_ip",
            "rules": {"/me": {"limit": "3/minute", "key": "user"}},
            "routes": {"/items": 30}, "exempt": ["/health"]}


def wrapped(settings: Settings) -> Any:
    """The whole Litestar app inside our middleware (every request, 404s included)."""
    return RedisMiddleware(Litestar([health, login, me, items, *rooms(settings)]), settings,
                           **options())


def defined(settings: Settings) -> Litestar:
    """Litestar's own way: app-level middleware (Litestar skips it for unknown routes)."""
    return Litestar([health, login, me, items, *rooms(settings)],
                    middleware=[DefineMiddleware(RedisMiddleware, settings=settings, **options())])


def presence_of(settings: Settings) -> Presence:
    return Presence(settings)


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use, from the environment of the server process
        return wrapped(Settings.from_env())
    raise AttributeError(name)
