"""A thin reverse proxy to the HTTP caching test suite's origin, behind the cache.

ASGI (``proxy:asgi_app``, under uvicorn) and WSGI (``proxy:wsgi_app``, under waitress)
forward every request to ``ORIGIN`` (default http://127.0.0.1:8000) and return the
origin's response as it came, so the cache alone decides. Only what a server or PEP
3333 forbids is dropped: ``Transfer-Encoding`` on both sides, and on WSGI the
hop-by-hop fields an app may not send. Environment: ``REDIS_URL``, ``FRESHNESS``
(``default`` or ``origin``), ``STALE_IF_ERROR`` (seconds).
"""

from __future__ import annotations

import http.client
import os
from typing import Any
from urllib.parse import urlsplit

import httpx

from redis_middleware import Settings
from redis_middleware.asgi import CacheMiddleware as AsgiCache
from redis_middleware.asgi._http import answer_lifespan
from redis_middleware.wsgi import CacheMiddleware as WsgiCache

ORIGIN = os.environ.get("ORIGIN", "http://127.0.0.1:8000")
_REQUEST_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host"}
_WSGI_FORBIDDEN = {"transfer-encoding", "connection", "keep-alive", "te", "trailer",
                   "upgrade", "proxy-authenticate", "proxy-authorization"}


def _settings() -> Settings:
    route: dict[str, Any] = {"ttl": 31536000, "freshness": os.environ.get("FRESHNESS",
                                                                          "origin")}
    return Settings(redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0"),
                    key_prefix="conformance", cache_routes={"/*": route},
                    cache_stale_if_error=int(os.environ.get("STALE_IF_ERROR", "0")),
                    secret_key="conformance-runs-only-conformance-runs-only")


_client = httpx.AsyncClient(base_url=ORIGIN, timeout=30)


async def _forward(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(k, v) for k, v in scope["headers"] if k not in _REQUEST_HOP]
    query = scope["query_string"].decode()
    request = _client.build_request(scope["method"], scope["path"] + ("?" + query if query
                                                                      else ""),
                                    headers=headers, content=body)
    for name in ("user-agent", "accept-encoding", "accept"):  # httpx's own defaults
        if not any(k == name.encode() for k, _ in headers):
            request.headers.pop(name, None)
    response = await _client.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [(k, v) for k, v in response.headers.raw
                            if k.lower() != b"transfer-encoding"]})
    await send({"type": "http.response.body", "body": raw})


def _wsgi_forward(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    origin = urlsplit(ORIGIN)
    conn = http.client.HTTPConnection(origin.hostname or "127.0.0.1", origin.port or 80,
                                      timeout=30)
    path = environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    conn.putrequest(environ["REQUEST_METHOD"], path, skip_host=True,
                    skip_accept_encoding=True)
    conn.putheader("Host", environ.get("HTTP_HOST", "127.0.0.1"))
    for key, value in environ.items():
        if key.startswith("HTTP_") and key[5:] not in ("HOST", "CONNECTION", "KEEP_ALIVE"):
            conn.putheader(key[5:].replace("_", "-").lower(), value)
    if body:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    start_response(f"{response.status} {response.reason or 'Unknown'}",
                   [(k, v) for k, v in response.getheaders()
                    if k.lower() not in _WSGI_FORBIDDEN])
    return [data]


asgi_app = AsgiCache(_forward, _settings())
wsgi_app = WsgiCache(_wsgi_forward, _settings())
