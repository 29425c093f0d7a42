"""The responses the middleware answers itself, through real apps on ASGI and WSGI:
problem+json for API clients, HTML for browsers, and the app's own refusal handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from redis_middleware.sansio.request import RequestInfo
from redis_middleware.sansio.responses import Refusal, Response

from .support.clients import Clients, make_settings
from .support.servers import start_redis_server, stop_redis_server

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_429_in_the_clients_format(make_client: Clients) -> None:
    client = make_client("RateLimitMiddleware", limit="1/minute")
    client.get("/noop")
    api = client.get("/noop")
    assert api.status_code == 429
    assert api.headers["content-type"] == "application/problem+json"
    assert api.json()["status"] == 429 and api.json()["title"] == "Too Many Requests"
    page = client.get("/noop", headers={"accept": BROWSER})
    assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
    assert "Too Many Requests" in page.text and int(page.headers["retry-after"]) >= 1
    # One client's refusal: a shared cache in front must not serve it to others.
    assert api.headers["cache-control"] == page.headers["cache-control"] == "no-store"


def _handler(request: RequestInfo, refusal: Refusal) -> Response | None:
    if request.path != "/noop":
        return None  # the default elsewhere
    body = json.dumps({"error": refusal.kind, "path": request.path}).encode()
    return Response(refusal.status, (("Content-Type", "application/json"),), body)


@pytest.mark.parametrize("middleware", ["RateLimitMiddleware", "RedisMiddleware"])
def test_the_apps_handler_shapes_the_429(make_client: Clients, middleware: str) -> None:
    client = make_client(middleware, limit="1/minute", refusal_handler=_handler)
    client.get("/noop")
    limited = client.get("/noop")
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate-limited", "path": "/noop"}
    assert int(limited.headers["retry-after"]) >= 1  # added when the handler forgot it
    client.get("/get")
    assert client.get("/get").headers["content-type"] == "application/problem+json"


@pytest.mark.real_redis
@pytest.mark.parametrize("middleware", ["SessionMiddleware", "RedisMiddleware"])
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_session_store_down_answers_a_page_to_a_browser(
        interface: str, middleware: str, tmp_path: Path) -> None:
    server = start_redis_server(tmp_path)
    clients = Clients(interface, make_settings(server.url, breaker_cooldown=0.2))
    try:
        client = clients(middleware)
        client.post("/set", json={"a": 1})
        stop_redis_server(server)
        page = client.get("/get", headers={"accept": BROWSER})
        assert page.status_code == 503 and page.headers["retry-after"] == "1"
        assert page.headers["content-type"].startswith("text/html")
        assert "Service Unavailable" in page.text
        api = client.get("/get")
        assert api.status_code == 503
        assert api.headers["content-type"] == "application/problem+json"
        assert api.headers["cache-control"] == page.headers["cache-control"] == "no-store"
    finally:
        clients.close()


def test_a_handler_named_in_the_environment() -> None:
    from redis_middleware import Settings

    settings = Settings.from_env({"REDIS_URL": "memory://", "REDIS_MIDDLEWARE_REFUSAL_HANDLER":
                                  "tests.test_refusal_responses:_handler"})
    assert settings.refusal_handler is _handler


def test_the_flask_adapter_answers_a_browser_with_a_page(tmp_path: Path) -> None:
    from flask import Flask, session

    from redis_middleware.flask import init_app

    server = start_redis_server(tmp_path)
    app = Flask(__name__)
    init_app(app, make_settings(server.url, breaker_cooldown=0.2))

    @app.get("/set")
    def set_value() -> str:
        session["a"] = "1"
        return "ok"

    @app.get("/get")
    def get_value() -> Any:
        return {"a": session.get("a")}

    client = app.test_client()
    try:
        assert client.get("/set").status_code == 200
        stop_redis_server(server)
        page = client.get("/get", headers={"Accept": BROWSER})
        assert page.status_code == 503 and page.headers["Retry-After"] == "1"
        assert page.mimetype == "text/html"
    finally:
        if server.proc.poll() is None:
            stop_redis_server(server)
