"""One tiny application, served as ASGI (Starlette) and as bare WSGI, for scenarios
written once and run on both interfaces."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redis_middleware import SessionLimitError
from redis_middleware.wsgi import ENVIRON_KEY

Handler = Callable[[MutableMapping[str, Any] | None, dict[str, str], Any], tuple[int, Any]]
calls: dict[str, int] = {}


PATHS = ("/noop", "/get", "/set", "/mutate", "/del", "/clear", "/login")


class PlainSession(dict[str, Any]):
    def regenerate(self) -> None:
        pass


def handle(path: str, session: MutableMapping[str, Any] | None,
           query: dict[str, str], body: Any) -> tuple[int, Any]:
    """The app's behaviour, shared by both servings. Returns (status, JSON payload)."""
    calls[path] = calls.get(path, 0) + 1
    if path == "/noop":
        return 200, {"ok": True}
    if path not in PATHS:
        return 404, {"detail": "not found"}
    if session is None:  # served without SessionMiddleware (rate-limit and cache tests)
        session = PlainSession()
    if path == "/get":
        return 200, dict(session)
    if path == "/set":
        if "sleep" in query:  # a slow request that loaded its session before a logout
            len(session)
            time.sleep(float(query["sleep"]))
        try:
            session.update(body or {})
        except SessionLimitError as exc:
            return 413, {"detail": str(exc)}
        return 200, {"ok": True}
    if path == "/mutate":
        session[query["key"]].append(query["value"])
        return 200, {"ok": True}
    if path == "/del":
        del session[query["key"]]
        return 200, {"ok": True}
    if path == "/clear":
        session.clear()
        return 200, {"ok": True}
    if path == "/login":
        session.regenerate()  # type: ignore[attr-defined]
        session["user_id"] = query["user"]
        return 200, {"ok": True}
    return 404, {"detail": "not found"}


async def _asgi_endpoint(request: Request) -> Response:
    body = await request.json() if request.method == "POST" and await request.body() else None
    path = request.url.path
    session = request.session if "session" in request.scope and path != "/noop" else None
    if "sleep" in request.query_params:
        import anyio

        len(request.session) if "session" in request.scope else 0
        await anyio.sleep(float(request.query_params["sleep"]))
        query = {k: v for k, v in request.query_params.items() if k != "sleep"}
    else:
        query = dict(request.query_params)
    status, payload = handle(path, session, query, body)
    return JSONResponse(payload, status_code=status)


async def _stream(request: Request) -> Response:
    async def chunks() -> Any:
        for i in range(3):
            yield f"chunk{i};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def _text(request: Request) -> Response:
    return PlainTextResponse("hello")


def asgi_app() -> Starlette:
    routes = [Route(p, _asgi_endpoint, methods=["GET", "POST"]) for p in PATHS]
    routes += [Route("/stream", _stream), Route("/text", _text)]
    return Starlette(routes=routes)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk{i};".encode() for i in range(3))
    if path == "/text":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    body = json.loads(raw) if raw else None
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    session = environ.get(ENVIRON_KEY) if path != "/noop" else None
    status, payload = handle(path, session, query, body)
    data = json.dumps(payload).encode()
    start_response(f"{status} X", [("Content-Type", "application/json"),
                                   ("Content-Length", str(len(data)))])
    return [data]
