"""Small ASGI helpers shared by the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgiref.typing import ASGISendCallable

from ..sansio.request import cookies_of


def request_cookies(scope: Any) -> Mapping[str, str]:
    """The request's cookies (shared: read only)."""
    return cookies_of([v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"cookie"])


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


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Complete an ASGI lifespan (startup, then shutdown) for an app with nothing to start."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return
