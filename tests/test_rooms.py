"""join_room: a WebSocket in a room, on a real Starlette app (memory:// and Redis), its
members authorised by Starlette's own authentication (``websocket.user``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.asgi import Broadcast, Presence, join_room
from redis_middleware.wsgi import Broadcast as SyncBroadcast
from redis_middleware.wsgi import Presence as SyncPresence

from .support.driven_socket import a_listener_ends_when_the_client_leaves

ended: list[str] = []  # what each handler saw at its end


class TokenBackend(AuthenticationBackend):
    """A browser cannot set headers on a WebSocket: the token is in the query string
    (here the token is the user name; a real backend would verify it)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = conn.query_params.get("token")
        return (AuthCredentials(["authenticated"]), SimpleUser(token)) if token else None


def make_app(settings: Settings) -> Starlette:
    broadcast = Broadcast(settings)
    presence = Presence(settings)

    async def chat(websocket: WebSocket) -> None:
        if not websocket.user.is_authenticated:  # the framework's user, before joining
            await websocket.accept()  # then close: the client sees the code
            await websocket.close(code=4401)
            return
        user = websocket.user.display_name
        room = websocket.path_params["room"]
        async with join_room(websocket, broadcast, room, user=user, presence=presence) as j:
            async for text in j:
                await j.publish({"user": user, "text": text})
        ended.append(f"chat:{user}")

    async def listen_only(websocket: WebSocket) -> None:
        async with join_room(websocket, broadcast, websocket.path_params["room"]) as joined:
            await joined.wait_closed()  # sends only: must still notice the client left
        ended.append("listener")

    return Starlette(routes=[WebSocketRoute("/chat/{room}", chat),
                             WebSocketRoute("/listen/{room}", listen_only)],
                     middleware=[Middleware(AuthenticationMiddleware, backend=TokenBackend())])


@pytest.fixture
def client(settings: Settings) -> Any:
    ended.clear()
    with TestClient(make_app(settings)) as c:
        yield c
        c.portal.call(connections_for(settings).aclose)


def _until(receive: Any, check: Any) -> dict[str, Any]:
    for _ in range(20):
        envelope = json.loads(receive())
        if check(envelope):
            return envelope
    raise AssertionError("never arrived")


def test_members_talk_and_see_each_other_arrive_and_leave(client: Any,
                                                          settings: Settings) -> None:
    settings = settings.replace(presence_ttl=4)  # grace: 1 s
    with client.websocket_connect("/chat/lobby?token=ann") as ann:
        joined = _until(ann.receive_text, lambda e: e["data"].get("presence"))
        assert joined["data"] == {"presence": "online", "user": "ann"}
        assert joined["type"] == "message" and joined["room"] == "lobby"
        with client.websocket_connect("/chat/lobby?token=bob") as bob:
            assert _until(ann.receive_text, lambda e: e["data"].get("user") == "bob")[
                "data"]["presence"] == "online"
            assert "ann" in SyncPresence(settings).online_users(room="lobby")
            bob.send_text("hello")
            for socket in (ann, bob):
                said = _until(socket.receive_text, lambda e: "text" in e["data"])
                assert said["data"] == {"user": "bob", "text": "hello"}
        left = _until(ann.receive_text, lambda e: e["data"].get("presence") == "offline")
        assert left["data"]["user"] == "bob"  # after the grace period, and only then


async def test_a_handler_that_only_sends_notices_the_client_left(settings: Settings) -> None:
    """Driven as a server drives it (no cancellation after the client's close, unlike
    the test client): the handler ends on its own, and its room is unsubscribed."""

    ended.clear()
    await a_listener_ends_when_the_client_leaves(make_app(settings), "/listen/news", "news",
                                                 settings)
    assert ended == ["listener"]


def test_an_unauthorised_socket_is_closed_before_joining(client: Any) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused, \
            client.websocket_connect("/chat/lobby") as socket:
        socket.receive_text()
    assert refused.value.code == 4401


def app_from_env() -> Starlette:
    """The same app in a server process (``uvicorn --factory``), settings from the
    environment."""
    return make_app(Settings.from_env())


@pytest.mark.real_redis
def test_a_refused_client_sees_4401_under_a_real_server(redis_server: Any,
                                                        tmp_path: Any) -> None:
    """uvicorn answers a close before the handshake ends with an HTTP 403, in which the
    code is lost: the handler accepts, then closes, and the client gets 4401."""
    import websockets

    from .support.clients import SECRET, make_settings
    from .support.servers import Served

    settings = make_settings(redis_server.url)
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}

    async def refused(port: int) -> int | None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat/lobby") as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 10)
        return None if closed.value.rcvd is None else closed.value.rcvd.code

    with Served(["uvicorn", "--port", "{port}", "--factory", "tests.test_rooms:app_from_env"],
                env, tmp_path / "uvicorn.log") as srv:
        assert asyncio.run(refused(srv.port)) == 4401
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()


def test_a_client_too_slow_for_the_room_is_closed_with_1013(settings: Settings) -> None:
    from starlette.websockets import WebSocketDisconnect

    settings = settings.replace(realtime_queue_size=2, realtime_overflow="disconnect")
    gate: list[Any] = []
    broadcast = Broadcast(settings)

    class Stalled:  # a socket whose sends never finish (a client that stopped reading)
        def __init__(self, websocket: WebSocket) -> None:
            self.websocket = websocket

        async def accept(self) -> None:
            await self.websocket.accept()

        async def receive(self) -> Any:
            return await self.websocket.receive()

        async def send(self, message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                import anyio

                gate.append(1)
                await anyio.sleep(3600)
            await self.websocket.send(message)

    async def slow(websocket: WebSocket) -> None:
        async with join_room(Stalled(websocket), broadcast, "busy") as joined:
            await joined.wait_closed()

    app = Starlette(routes=[WebSocketRoute("/slow", slow)])
    with TestClient(app) as client:
        try:
            with client.websocket_connect("/slow") as socket:
                publisher = SyncBroadcast(settings)
                for n in range(6):
                    publisher.publish("busy", n)
                    time.sleep(0.05)
                with pytest.raises(WebSocketDisconnect) as closed:
                    socket.receive_text()
            assert closed.value.code == 1013 and gate
        finally:
            client.portal.call(connections_for(settings).aclose)
