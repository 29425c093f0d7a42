"""Sessions: Redis outages, Flask, websockets and fuzzed cookies."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from redis_middleware import SessionLimitError, Settings
from redis_middleware.sansio.session import Limits, Session
from redis_middleware.sansio.sessions import SessionCore

from .conftest import (
    Clients,
    audit_keyspace,
    make_settings,
    start_redis_server,
    stop_redis_server,
)


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    """A redis-server of this test alone, which the test may stop and restart."""
    servers: list[Any] = []

    def start(port: int | None = None) -> Any:
        server = start_redis_server(tmp_path / str(len(servers)), port=port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            stop_redis_server(server)


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_redis_down_gives_503_then_recovers(
    interface: str, own_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = own_redis()
    settings = make_settings(server.url, breaker_cooldown=0.2)
    clients = Clients(interface, settings)
    try:
        client = clients()
        client.post("/set", json={"a": 1})
        stop_redis_server(server)
        with caplog.at_level(logging.WARNING, logger="redis_middleware"):
            for _ in range(5):
                response = client.get("/get")
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                assert "set-cookie" not in response.headers
            assert client.get("/noop").status_code == 200  # never touches the session
            assert make_client_free(clients).get("/get").status_code == 200  # no cookie
        assert sum("unavailable" in r.message for r in caplog.records) == 1
        own_redis(server.port)  # back, empty (no persistence): the old session is gone
        deadline = time.monotonic() + 2
        while client.get("/noop").status_code != 200 or client.get("/get").status_code != 200:
            assert time.monotonic() < deadline, "no recovery within 2 s"
            time.sleep(0.05)
        assert client.post("/set", json={"b": 2}).status_code == 200
        assert client.get("/get").json() == {"b": 2}
    finally:
        clients.close()


def make_client_free(clients: Clients) -> Any:
    return clients()


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_readonly_mode_carries_on_with_an_empty_session(
    interface: str, own_redis: Any
) -> None:
    server = own_redis()
    settings = make_settings(server.url, session_on_redis_error="readonly")
    clients = Clients(interface, settings)
    try:
        client = clients()
        client.post("/set", json={"a": 1})
        stop_redis_server(server)
        response = client.get("/get")
        assert (response.status_code, response.json()) == (200, {})
        assert client.post("/set", json={"b": 1}).status_code == 200  # dropped, logged
    finally:
        clients.close()


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_command_errors_give_503_and_no_corruption(interface: str, own_redis: Any) -> None:
    server = own_redis()
    settings = make_settings(server.url)
    clients = Clients(interface, settings)
    try:
        client = clients()
        client.post("/set", json={"a": 1})
        with server.client() as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")  # every write is now refused with OOM
            response = client.post("/set", json={"a": 2, "b": "x"})
            assert response.status_code == 503
            admin.config_set("maxmemory", "0")
        assert client.get("/get").json() == {"a": 1}
    finally:
        clients.close()


def test_flask_session_through_the_adapter(settings: Settings) -> None:
    from flask import Flask, session

    from redis_middleware.flask import init_app

    app = Flask(__name__)
    init_app(app, settings)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        session.regenerate()  # type: ignore[attr-defined]
        session["user_id"] = user
        return {"ok": True}

    @app.get("/me")
    def me() -> Any:
        return {"user": session.get("user_id"), "new": session.new}

    client = app.test_client()
    first = client.post("/login/ann")
    assert len(first.headers.getlist("Set-Cookie")) == 1  # one cookie: ours
    assert client.get("/me").json == {"user": "ann", "new": False}
    assert "Cookie" in client.get("/me").headers["Vary"]
    audit_keyspace(settings)


def test_flask_answers_503_without_a_traceback_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flask import Flask, session

    from redis_middleware.flask import init_app

    from .conftest import SECRET, free_port

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key=SECRET)
    app = Flask(__name__)
    init_app(app, settings)
    app.get("/me")(lambda: {"user": session.get("user_id")})
    cookie = SessionCore(settings).cookies.set_cookie("abcd" + "x" * 43, False)
    client = app.test_client()
    client.set_cookie("session", cookie.split(";")[0].split("=", 1)[1])
    with caplog.at_level(logging.ERROR):
        response = client.get("/me")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_flask_without_the_middleware_explains() -> None:
    from flask import Flask, session

    from redis_middleware.flask import RedisSessionInterface

    app = Flask(__name__)
    app.session_interface = RedisSessionInterface()
    app.get("/")(lambda: str(session.get("x")))
    app.testing = True
    with pytest.raises(RuntimeError, match="SessionMiddleware is not installed"):
        app.test_client().get("/")


def test_websocket_scope_gets_the_session(settings: Settings) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    from redis_middleware._redis.connections import connections_for
    from redis_middleware.asgi import SessionMiddleware

    from . import apps

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


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=300))
def test_fuzzed_cookie_values_are_no_session(value: str) -> None:
    core = SessionCore(Settings())
    incoming = core.read_cookie({"session": value})
    assert incoming.session_id is None


def test_signed_id_of_wrong_shape_is_rejected() -> None:
    s = Settings()
    core = SessionCore(s)
    forged = core.cookies._primary.sign(b"g" * 47).decode()  # validly signed, bad id shape
    assert core.read_cookie({"session": forged}).session_id is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(object(), "JSON values", id="not-json"),
        pytest.param(float("nan"), "JSON values", id="nan"),
        pytest.param("x" * 100, "MAX_VALUE_BYTES", id="too-big"),
    ],
)
def test_bad_values_raise_from_the_mutation(value: Any, message: str) -> None:
    session = Session(Limits(Settings()))
    with pytest.raises(SessionLimitError, match=message):
        session["k"] = value
    assert "k" not in session


def test_reserved_looking_keys_round_trip() -> None:
    from redis_middleware.sansio.sessions import field_name, key_name

    for key in ["\x00t", "\x01x", "plain", ""]:
        assert key_name(field_name(key)) == key
    assert not field_name("\x00t").startswith("\x00")
