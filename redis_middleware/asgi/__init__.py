"""Pure ASGI middleware (asyncio Redis client). Same names as :mod:`redis_middleware.wsgi`."""

from __future__ import annotations

from .ratelimit import RateLimiter, RateLimitMiddleware
from .sessions import SessionMiddleware, SessionStore

__all__ = ["RateLimitMiddleware", "RateLimiter", "SessionMiddleware", "SessionStore"]
