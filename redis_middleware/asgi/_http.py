"""Small ASGI helpers shared by the adapters."""

from __future__ import annotations

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
