"""Small WSGI helpers shared by the adapters."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

from ..sansio.cookies import parse_cookies


def request_cookies(environ: dict[str, Any]) -> dict[str, str]:
    """The request's cookies (shared: read only)."""
    header = environ.get("HTTP_COOKIE", "")
    return parse_cookies(header) if header else {}


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def json_response(
    start_response: Any, status: int, payload: object, headers: Iterable[tuple[str, str]] = ()
) -> list[bytes]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    start_response(status_line(status), [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


def close_iter(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


def closing_iter(app_iter: Iterable[bytes]) -> Iterator[bytes]:
    """Iterate ``app_iter`` and always call its ``close()`` (PEP 3333)."""
    try:
        yield from app_iter
    finally:
        close_iter(app_iter)
