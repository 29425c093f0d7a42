"""Pure ASGI middleware (asyncio Redis client). Same names as :mod:`redis_middleware.wsgi`."""

from __future__ import annotations

from .cache import Cache, CacheMiddleware
from .ratelimit import RateLimiter, RateLimitMiddleware
from .sessions import SessionMiddleware, SessionStore

__all__ = [
    "Cache",
    "CacheMiddleware",
    "RateLimitMiddleware",
    "RateLimiter",
    "SessionMiddleware",
    "SessionStore",
]
