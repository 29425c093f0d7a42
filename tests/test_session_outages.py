"""Sessions while Redis is down or refuses writes: 503 or read-only, never a 500; recovery."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from redis_middleware.sansio import incidents

from .support.clients import Clients, make_settings
from .support.servers import start_redis_server, stop_redis_server
from .support.wsgi_direct import call


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
    interface: str, own_redis: Any, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis down under the ``readonly`` policy: an empty session, writes dropped with
    one log line for the incident (not one per request), the cookie left as it was."""
    server = own_redis()
    settings = make_settings(server.url, session_on_redis_error="readonly")
    clients = Clients(interface, settings)
    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident
    try:
        client = clients()
        client.post("/set", json={"a": 1})
        cookie = dict(client.cookies)
        stop_redis_server(server)
        response = client.get("/get")
        assert (response.status_code, response.json()) == (200, {})
        with caplog.at_level(logging.WARNING, logger="redis_middleware"):
            for _ in range(3):
                dropped = client.post("/set", json={"b": 1})
                assert dropped.status_code == 200 and "set-cookie" not in dropped.headers
        assert dict(client.cookies) == cookie
        lines = [r.getMessage() for r in caplog.records]
        assert len([m for m in lines if "session changes dropped" in m]) == 1
    finally:
        clients.close()


@pytest.mark.real_redis
@pytest.mark.parametrize("middleware", ["SessionMiddleware", "RedisMiddleware"])
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_command_errors_give_503_and_no_corruption(
        interface: str, middleware: str, own_redis: Any, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes Redis refuses (OOM under noeviction) answer 503, change nothing, and are
    logged once per incident, standalone and in the stack alike."""
    server = own_redis()
    settings = make_settings(server.url)
    clients = Clients(interface, settings)
    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident
    try:
        client = clients(middleware)
        client.post("/set", json={"a": 1})
        with server.client() as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")  # every write is now refused with OOM
            with caplog.at_level(logging.WARNING, logger="redis_middleware"):
                for _ in range(3):
                    response = client.post("/set", json={"a": 2, "b": "x"})
                    assert response.status_code == 503
            admin.config_set("maxmemory", "0")
        refused = [r for r in caplog.records if "session changes not saved" in r.getMessage()]
        assert len(refused) == 1 and "maxmemory" in refused[0].getMessage()
        assert client.get("/get").json() == {"a": 1}
    finally:
        clients.close()


def _restarting_app(lazy: bool) -> Any:
    """A bare WSGI app in PEP 3333's error style: it starts a 200, reads the session, and
    on an error starts again with ``exc_info`` and its own error page: before returning,
    or (``lazy``) from inside the body it returned."""
    import sys

    page = b"the application's own error page, longer than the 503 body" * 3

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        session = environ["redis_middleware.session"]
        if environ["PATH_INFO"] == "/login":
            session["name"] = "ada"  # before the start, where the changes are saved
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"in"]
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            try:
                yield ("hello " + session.get("name")).encode()
            except Exception:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
                yield page

        if lazy:
            return body()
        try:
            return [("hello " + session.get("name")).encode()]
        except Exception:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
            return [page]

    return app


@pytest.mark.real_redis
@pytest.mark.parametrize("lazy", [False, True], ids=["before-returning", "inside-the-body"])
def test_a_wsgi_restart_after_the_store_failed_keeps_the_framing(own_redis: Any,
                                                                  lazy: bool) -> None:
    """The store is down and a bare WSGI app starts its response again with ``exc_info``:
    a 503 with Retry-After, and the response the server gets is whole (its
    Content-Length, if any, is its body's). Restarted before the app returns, the body
    is ours; from inside a body the server got untouched, it is the app's own page."""
    from redis_middleware import wsgi

    server = own_redis()
    app = wsgi.SessionMiddleware(_restarting_app(lazy), make_settings(server.url))
    login = call(app, "/login")
    login.read()
    cookie = login.headers["Set-Cookie"].split(";")[0]
    assert call(app, "/me", cookie).read() == b"hello ada"
    stop_redis_server(server)
    answer = call(app, "/me", cookie)
    body = answer.read()  # a lazy body starts again while it is read
    if "Content-Length" in answer.headers:
        assert int(answer.headers["Content-Length"]) == len(body)
    assert answer.status.startswith("503") and answer.headers["Retry-After"] == "1"
    if lazy:
        assert body.startswith(b"the application's own")
    else:
        assert b"Service Unavailable" in body
