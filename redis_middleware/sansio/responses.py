"""The responses the middleware answers itself (429, 503, a stored entry), as values.

Each is built here once; the adapters only translate a :class:`Response` into ASGI
messages or a WSGI ``start_response`` call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["Response", "json_response", "rate_limited", "status_line", "store_unavailable"]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Response:
    """A whole response: status, headers (names as sent) and body."""

    status: int
    headers: Headers
    body: bytes

    def with_headers(self, extra: Headers) -> Response:
        return self if not extra else Response(self.status, (*self.headers, *extra), self.body)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as an ASGI server wants them."""
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]


def status_line(status: int) -> str:
    """A WSGI status line; a code ``http.HTTPStatus`` does not know keeps a bare reason."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def json_response(status: int, payload: object, headers: Headers = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, (("Content-Type", "application/json"),
                             ("Content-Length", str(len(body))), *headers), body)


def store_unavailable(retry_after: float) -> Response:
    """503: the session store failed for a request that needs its session."""
    return json_response(503, {"detail": "Session store unavailable, retry shortly."},
                         (("Retry-After", str(max(1, round(retry_after)))),))


def rate_limited(status: int, detail: str, headers: Headers) -> Response:
    """429 (or 503 when a fail-closed limiter is unavailable), with its headers."""
    return json_response(status, {"detail": detail}, headers)
