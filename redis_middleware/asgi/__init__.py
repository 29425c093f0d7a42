"""Pure ASGI middleware (asyncio Redis client). Same names as :mod:`redis_middleware.wsgi`."""

from __future__ import annotations

from .sessions import SessionMiddleware, SessionStore

__all__ = ["SessionMiddleware", "SessionStore"]
