"""One tiny application, served as ASGI (Starlette) and as bare WSGI, for scenarios
written once and run on both interfaces."""

from __future__ import annotations

import json
import threading
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
failing = ""  # "500" or "raise": the /c/ endpoints fail (stale-if-error scenarios)
# Set when a slow request (``?sleep=``) starts sleeping, its session loaded, its cache
# guard taken: a race test starts the other request then, not after a guessed delay
# (a busy machine may take longer).
sleeping = threading.Event()


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
            sleeping.set()
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
        if "user" not in query:  # a fuzzed request: the app's 400, never its KeyError's 500
            return 400, {"detail": "user missing"}
        session.regenerate()  # type: ignore[attr-defined]
        session["user_id"] = query["user"]
        return 200, {"ok": True}
    return 404, {"detail": "not found"}


async def _asgi_endpoint(request: Request) -> Response:
    body = await request.json() if request.method == "POST" and await request.body() else None
    path = request.scope["path"]  # not request.url: see below
    session = request.session if "session" in request.scope and path != "/noop" else None
    if "sleep" in request.query_params:
        import anyio

        len(request.session) if "session" in request.scope else 0
        sleeping.set()
        await anyio.sleep(float(request.query_params["sleep"]))
        query = {k: v for k, v in request.query_params.items() if k != "sleep"}
    else:
        query = dict(request.query_params)
    status, payload = handle(path, session, query, body)
    # ASCII-escaped JSON, as the WSGI serving sends: a session may hold a lone surrogate
    # (a hostile body's "\ud800"), which has no UTF-8 form.
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


async def _stream(request: Request) -> Response:
    async def chunks() -> Any:
        for i in range(3):
            yield f"chunk{i};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def _text(request: Request) -> Response:
    return PlainTextResponse("hello")


ignore_conditionals = False  # True: an app that always answers 200
write_session = False  # True: the /c/ endpoints write to the session


def cache_handle(path: str, query: dict[str, str], session: Any,
                 if_none_match: str | None = None
                 ) -> tuple[int, list[tuple[str, str]], list[bytes]]:
    """Endpoints under /c/ for caching scenarios; behaviour chosen by the query.

    ``etag=`` sends that ETag and answers a matching If-None-Match with a 304 carrying
    ``cc304=`` as its Cache-Control and ``x304=`` as an X-Updated field.
    """
    calls[path] = calls.get(path, 0) + 1
    n = calls[path]
    if write_session and session is not None:
        session["w"] = "1"
    if "etag" in query and if_none_match is not None and not ignore_conditionals and query[
            "etag"] in (
            t.strip() for t in if_none_match.split(",")):
        calls["304"] = calls.get("304", 0) + 1
        updated = [("ETag", query["etag"])]
        for name, key in (("Cache-Control", "cc304"), ("X-Updated", "x304")):
            if key in query:
                updated.append((name, query[key]))
        return 304, updated, []
    if "sleep" in query:
        sleeping.set()
        time.sleep(float(query["sleep"]))
    if "fail" in query or failing:
        if failing == "500":
            return 500, [("Content-Type", "text/plain")], [b"broken"]
        raise RuntimeError("app failure")
    if "touch" in query and session is not None:
        session.get("x")
    headers = [("Content-Type", "application/json"), ("X-Dup", "1"), ("X-Dup", "2")]
    for name, key in (("Cache-Control", "cc"), ("Vary", "vary"), ("ETag", "etag"),
                      ("Expires", "expires"), ("Age", "age"), ("Date", "date"),
                      ("Location", "location"), ("CDN-Cache-Control", "cdn"),
                      ("RedisMiddleware-Cache-Control", "own"), ("Retry-After", "retry")):
        if key in query:
            headers.append((name, query[key]))
    if "cookie" in query:
        headers.append(("Set-Cookie", "a=b; Path=/"))
    body = json.dumps({"n": n, "path": path}).encode()
    if "size" in query:
        body = body + b" " * (int(query["size"]) - len(body))
    if path == "/c/stream":
        return 200, headers, [b"part1;", b"part2;", b"part3;"]
    return int(query.get("status", 200)), headers, [body]


async def _cache_endpoint(request: Request) -> Response:
    import anyio

    query = dict(request.query_params)
    session = request.session if "session" in request.scope else None
    if request.method != "GET" and request.method != "HEAD":
        calls["unsafe"] = calls.get("unsafe", 0) + 1
        moved = {"Location": query["location"]} if "location" in query else None
        return JSONResponse({"ok": True}, status_code=int(query.get("status", 200)),
                            headers=moved)
    sleep = query.pop("sleep", None)
    if sleep:
        sleeping.set()
        await anyio.sleep(float(sleep))
    # scope["path"], not request.url: a hostile Host header makes older Starlette
    # releases fail to build the URL (the app's own error, which is not what we test).
    status, headers, chunks = cache_handle(request.scope["path"], query, session,
                                           request.headers.get("if-none-match"))

    async def body() -> Any:
        for chunk in chunks:
            yield chunk

    response = StreamingResponse(body(), status_code=status)
    response.raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers]
    return response


def asgi_app() -> Starlette:
    routes = [Route(p, _asgi_endpoint, methods=["GET", "POST"]) for p in PATHS]
    routes += [Route("/stream", _stream), Route("/text", _text),
               Route("/c/{rest:path}", _cache_endpoint,
                     methods=["GET", "HEAD", "POST", "PUT", "DELETE", "M-SEARCH"])]
    return Starlette(routes=routes)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk{i};".encode() for i in range(3))
    if path == "/text":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    if path.startswith("/c/"):
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            calls["unsafe"] = calls.get("unsafe", 0) + 1
            moved = [("Location", query["location"])] if "location" in query else []
            start_response(f"{query.get('status', 200)} X",
                           [("Content-Type", "application/json"), *moved])
            return [b'{"ok":true}']
        status, headers, chunks = cache_handle(path, query, environ.get(ENVIRON_KEY),
                                               environ.get("HTTP_IF_NONE_MATCH"))
        start_response(f"{status} X", headers)
        return iter(chunks) if path == "/c/stream" else chunks
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    body = json.loads(raw) if raw else None
    session = environ.get(ENVIRON_KEY) if path != "/noop" else None
    status, payload = handle(path, session, query, body)
    data = json.dumps(payload).encode()
    start_response(f"{status} X", [("Content-Type", "application/json"),
                                   ("Content-Length", str(len(data)))])
    return [data]
