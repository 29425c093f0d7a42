"""Small ASGI helpers shared by the adapters."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from asgiref.typing import ASGISendCallable

from ..sansio.cookies import parse_cookies


def request_cookies(scope: Any) -> dict[str, str]:
    """The request's cookies (shared: read only). Several Cookie lines (HTTP/2) are
    joined, as RFC 9113 8.2.3 says."""
    lines = [v for k, v in scope.get("headers", ()) if k == b"cookie"]
    if not lines:
        return {}
    return parse_cookies(b"; ".join(lines).decode("latin-1"))


def response_headers(message: Any) -> list[tuple[bytes, bytes]]:
    """The ``http.response.start`` message's header list, ready to be added to in place."""
    headers = message["headers"] = list(message.get("headers", ()))
    return headers


def add_vary_cookie(headers: list[tuple[bytes, bytes]]) -> None:
    """Add ``Cookie`` to the response's Vary (once; never to ``Vary: *``)."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            if b"cookie" not in value.lower() and value.strip() != b"*":
                headers[i] = (name, value + b", Cookie")
            return
    headers.append((b"vary", b"Cookie"))


def raw_header(name: str, value: str) -> tuple[bytes, bytes]:
    return name.lower().encode("latin-1"), value.encode("latin-1")


async def send_json(
    send: ASGISendCallable,
    status: int,
    payload: object,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "trailers": False,
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


def with_headers(send: ASGISendCallable, headers: list[tuple[bytes, bytes]]) -> ASGISendCallable:
    """A ``send`` that appends ``headers`` to the response start (the body is untouched)."""
    if not headers:
        return send

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", ()), *headers]
        await send(message)

    return wrapped
