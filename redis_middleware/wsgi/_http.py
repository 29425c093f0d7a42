"""Small WSGI helpers shared by the adapters."""

from __future__ import annotations

from typing import Any

from ..sansio.cookies import parse_cookies


def request_cookies(environ: dict[str, Any]) -> dict[str, str]:
    """The request's cookies (shared: read only)."""
    header = environ.get("HTTP_COOKIE", "")
    return parse_cookies(header) if header else {}
