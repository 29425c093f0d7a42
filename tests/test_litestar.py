"""Litestar: both ways of installing the middleware, Litestar's ``request.session`` on our
sessions, per-user limits, the cache, presence and a chat room on a Litestar WebSocket
(``join_room``); in process and under uvicorn with a real WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support import litestar_app
from .support.audit import audit_keyspace


@pytest.fixture(params=["wrapped", "defined"])
def client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Any]:
    from starlette.testclient import TestClient

    app = getattr(litestar_app, request.param)(settings)
    with TestClient(app, client=("10.8.0.1", 1)) as test_client:
        test_client.install = request.param  # type: ignore[attr-defined]
        yield test_client
        test_client.portal.call(connections_for(settings).aclose)


def test_request_session_is_ours(client: Any, settings: Settings) -> None:
    assert client.post("/login", json={"user": "lena"}).json() == {"user": "lena"}
    assert client.get("/me").json() == {"user": "lena", "visits": 1}
    assert client.get("/me").json() == {"user": "lena", "visits": 2}
    keys = audit_keyspace(settings)
    assert any(":session:" in k for k in keys)


def test_a_per_user_limit_sees_the_litestar_login(client: Any, settings: Settings) -> None:
    client.post("/login", json={"user": "milo"})
    assert [client.get("/me").status_code for _ in range(4)] == [200, 200, 200, 429]
    client.cookies.clear()
    client.post("/login", json={"user": "nina"})
    assert client.get("/me").status_code == 200  # another user, same address


def test_the_cache_and_presence(client: Any, settings: Settings) -> None:
    first, second = client.get("/items"), client.get("/items")
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert first.json() == second.json()
    client.post("/login", json={"user": "olga"})
    client.get("/me")
    presence = litestar_app.presence_of(settings)
    assert client.portal.call(presence.is_online, "olga")


def test_unknown_routes(client: Any) -> None:
    """Wrapped, a 404 flood is rate limited like any request; as Litestar app-level
    middleware it never reaches us (Litestar answers unknown routes itself)."""
    statuses = [client.get("/nowhere").status_code for _ in range(3)]
    assert statuses == [404] * 3
    limited = "x-ratelimit-limit" in client.get("/nowhere").headers
    assert limited is (client.install == "wrapped")


def _until(receive: Callable[[], Any], check: Callable[[dict[str, Any]], bool]
           ) -> dict[str, Any]:
    for _ in range(20):
        envelope: dict[str, Any] = json.loads(receive())
        if check(envelope):
            return envelope
    raise AssertionError("never arrived")


def test_a_chat_room_on_litestar_websockets(client: Any, settings: Settings) -> None:
    """Members authorised by the session talk in a room and see each other arrive;
    presence lists them while connected; a socket without a login is refused (4401)."""
    from litestar.exceptions import WebSocketDisconnect as LitestarDisconnect
    from starlette.websockets import WebSocketDisconnect

    from redis_middleware.wsgi import Presence as SyncPresence

    client.post("/login", json={"user": "lena"})
    with client.websocket_connect("/rooms/lobby") as lena:
        arrived = _until(lena.receive_text, lambda e: e["data"].get("presence") == "online")
        assert arrived["data"]["user"] == "lena" and arrived["room"] == "room:lobby"
        client.cookies.clear()
        client.post("/login", json={"user": "milo"})
        with client.websocket_connect("/rooms/lobby") as milo:
            assert _until(lena.receive_text, lambda e: e["data"].get("user") == "milo")[
                "data"]["presence"] == "online"
            assert set(SyncPresence(settings).online_users(room="room:lobby")) == {
                "lena", "milo"}
            milo.send_text("hello")
            for socket in (lena, milo):
                said = _until(socket.receive_text, lambda e: "text" in e["data"])
                assert said["data"] == {"user": "milo", "text": "hello"}
                assert said["type"] == "message" and said["seq"] >= 1
    client.cookies.clear()
    with pytest.raises((WebSocketDisconnect, LitestarDisconnect)) as refused, \
            client.websocket_connect("/rooms/lobby") as anonymous:
        anonymous.receive_text()
    assert getattr(refused.value, "code", None) == 4401


@pytest.mark.parametrize("install", ["wrapped", "defined"])
async def test_a_litestar_handler_that_only_sends_notices_the_client_left(
        install: str, settings: Settings) -> None:
    """Driven as a server drives it: after the client's close the handler returns on its
    own (Litestar's WebSocket never raises in a handler that does not read), and the
    room's shared subscription ends with it."""
    from .support.driven_socket import a_listener_ends_when_the_client_leaves

    litestar_app.ended.clear()
    app = getattr(litestar_app, install)(settings)
    await a_listener_ends_when_the_client_leaves(app, "/news", "news", settings)
    assert litestar_app.ended == ["news"]


@pytest.mark.real_redis
def test_under_uvicorn(tmp_path: Any, redis_server: Any) -> None:
    import httpx

    from .support.clients import SECRET, make_settings
    from .support.servers import Served

    settings = make_settings(redis_server.url)
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}
    with Served(["uvicorn", "--port", "{port}", "tests.support.litestar_app:app"], env,
                tmp_path / "uvicorn.log") as srv, httpx.Client(base_url=srv.base) as http:
        http.post("/login", json={"user": "pia"})
        assert http.get("/me").json() == {"user": "pia", "visits": 1}
        assert [http.get("/me").status_code for _ in range(3)] == [200, 200, 429]
        assert http.get("/items").headers["x-cache"] == "MISS"
        assert http.get("/items").headers["x-cache"] == "HIT"
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        said = asyncio.run(_say_in_room(srv.port, cookie, "hello from pia"))
        assert said["data"] == {"user": "pia", "text": "hello from pia"}
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()


async def _say_in_room(port: int, cookie: str, text: str) -> dict[str, Any]:
    """A real WebSocket (the websockets client) joins a Litestar room, says something and
    reads it back."""
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/rooms/lobby",
                                  additional_headers={"Cookie": cookie}) as socket:
        while True:  # the own arrival notice comes first
            envelope = json.loads(await asyncio.wait_for(socket.recv(), 10))
            if envelope["data"].get("presence") == "online":
                break
        await socket.send(text)
        while True:
            envelope = json.loads(await asyncio.wait_for(socket.recv(), 10))
            if "text" in envelope["data"]:
                return dict(envelope)
