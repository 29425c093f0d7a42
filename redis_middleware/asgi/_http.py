"""Small ASGI helpers shared by the adapters."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from asgiref.typing import ASGISendCallable
from starlette.datastructures import Headers
from starlette.requests import cookie_parser


def request_cookies(headers: Headers) -> dict[str, str]:
    # Several Cookie header lines (HTTP/2) are joined, as RFC 9113 8.2.3 says.
    return cookie_parser("; ".join(headers.getlist("cookie")))


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
