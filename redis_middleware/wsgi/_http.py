"""Small WSGI helpers shared by the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..sansio.request import NO_COOKIES, cookies_of

ENVIRON_KEY = "redis_middleware.session"  # where the WSGI session is (SPEC)


def request_cookies(environ: dict[str, Any]) -> Mapping[str, str]:
    """The request's cookies (shared: read only)."""
    header = environ.get("HTTP_COOKIE", "")
    return cookies_of([header]) if header else NO_COOKIES
