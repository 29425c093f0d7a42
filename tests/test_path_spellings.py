"""No spelling of a path that reaches a handler escapes the rule written for it, and no
spelling of an exempt path makes another path exempt — through real Starlette and Flask
routers, with paths sent as raw as a client can send them (no URL library in between)."""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from redis_middleware import Settings
from redis_middleware.asgi import RedisMiddleware as AsgiStack
from redis_middleware.wsgi import RedisMiddleware as WsgiStack

from .support.clients import make_settings

OPTIONS: dict[str, Any] = {"rules": {"/limited": "3/minute", "/items/{id}": "4/minute",
                                     "/files/*": "5/minute"},
                           "limit": "1000/minute", "exempt": ["/health"], "key": "ip"}
HANDLERS = ("limited", "item", "health", "files")
LIMITS = {"limited": "3", "item": "4", "files": "5"}
BASES = ["/limited", "/items/7", "/health", "/files/a"]


def spellings(base: str) -> st.SearchStrategy[str]:
    """``base`` with repeated slashes, dot segments, a detour and a trailing slash."""
    segments = base.strip("/").split("/")

    @st.composite
    def build(draw: Any) -> str:
        out = ""
        for segment in segments:
            out += "/" * draw(st.integers(1, 3))
            if draw(st.booleans()):
                out += "./"
            if draw(st.booleans()):
                out += draw(st.sampled_from(["x", "health", "limited", "files"])) + "/../"
            out += segment
        return out + draw(st.sampled_from(["", "/", "//", "/."]))

    return build()


def _settings() -> Settings:
    return make_settings("memory://")


# -- ASGI: Starlette ----------------------------------------------------------------
def _starlette() -> Starlette:
    def handler(name: str) -> Any:
        async def endpoint(request: Any) -> PlainTextResponse:
            return PlainTextResponse(name)
        return endpoint

    return Starlette(routes=[Route("/limited", handler("limited")),
                             Route("/items/{id}", handler("item")),
                             Route("/health", handler("health")),
                             Route("/files/{rest:path}", handler("files"))])


def _asgi_call(app: Any, path: str, loop: asyncio.AbstractEventLoop
               ) -> tuple[int, dict[str, str], str]:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path,
             "raw_path": path.encode("latin-1"), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"t.test")], "client": ("10.0.0.1", 5000),
             "server": ("t.test", 80)}
    loop.run_until_complete(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], headers, body.decode("latin-1")


_LOOP = asyncio.new_event_loop()
_BARE_ASGI = _starlette()
_ASGI = AsgiStack(_starlette(), _settings(), **OPTIONS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES).flatmap(spellings))
def test_starlette_every_routed_spelling_is_limited(path: str) -> None:
    _check(path, lambda p: _asgi_call(_BARE_ASGI, p, _LOOP), lambda p: _asgi_call(
        _ASGI, p, _LOOP))


# -- WSGI: Flask (Werkzeug's router merges repeated slashes) ---------------------------
def _flask() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/limited", "limited", lambda: "limited")
    app.add_url_rule("/items/<item_id>", "item", lambda item_id: "item")
    app.add_url_rule("/health", "health", lambda: "health")
    app.add_url_rule("/files/<path:rest>", "files", lambda rest: "files")
    return app


def _wsgi_call(app: Any, path: str) -> tuple[int, dict[str, str], str]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> Any:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
               "QUERY_STRING": "", "SERVER_NAME": "t.test", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1",
               "HTTP_HOST": "t.test", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
               "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen["status"], {k.lower(): v for k, v in seen["headers"].items()}, body.decode()


_BARE_FLASK = _flask()
_FLASK = _flask()
_FLASK.wsgi_app = WsgiStack(_FLASK.wsgi_app, _settings(), **OPTIONS)  # type: ignore[method-assign]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES).flatmap(spellings))
def test_flask_every_routed_spelling_is_limited(path: str) -> None:
    _check(path, lambda p: _wsgi_call(_BARE_FLASK, p), lambda p: _wsgi_call(_FLASK, p))


def test_flask_routes_a_doubled_slash_to_the_handler() -> None:
    """The finding this guards: Werkzeug answers ``//limited`` with ``/limited``'s
    handler, and the rule for ``/limited`` applies to it."""
    status, _, body = _wsgi_call(_BARE_FLASK, "//limited")
    assert (status, body) == (200, "limited")
    status, headers, _ = _wsgi_call(_FLASK, "//limited")
    assert headers["x-ratelimit-limit"] == "3"


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
@pytest.mark.parametrize(("path", "handler"), [
    ("/files/../health", "files"),     # not the exempt /health: its own rule counts it
    ("/files/../limited", "files"),    # not /limited's rule: the catch-all's
    ("/files/./a", "files"),
])
def test_dot_segments_are_routed_as_sent_and_limited_so(side: str, path: str, handler: str
                                                         ) -> None:
    """The finding this guards: no router resolves dot segments, so ``/files/../health``
    reaches the ``/files/*`` handler; resolved, it was matched as the exempt ``/health``
    and never counted."""
    if side == "asgi":
        bare, wrapped = (lambda p: _asgi_call(_BARE_ASGI, p, _LOOP),
                         lambda p: _asgi_call(_ASGI, p, _LOOP))
    else:
        bare, wrapped = lambda p: _wsgi_call(_BARE_FLASK, p), lambda p: _wsgi_call(_FLASK, p)
    assert bare(path)[2] == handler
    status, headers, _ = wrapped(path)
    assert headers.get("x-ratelimit-limit") == LIMITS[handler]
    assert status in (200, 429)  # the module's apps share one client's counters


def _check(path: str, bare: Any, wrapped: Any) -> None:
    status, _, body = bare(path)
    if status != 200 or body not in HANDLERS:
        return  # this spelling reaches no handler (a 404 or a redirect)
    status, headers, answer = wrapped(path)
    if body == "health":
        # The exempt handler: never counted, whatever the spelling.
        assert "x-ratelimit-limit" not in headers and answer == "health", path
    else:
        assert headers.get("x-ratelimit-limit") == LIMITS[body], path
        assert status in (200, 429), path
