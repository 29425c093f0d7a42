"""WSGI middleware (sync Redis client). Same names as :mod:`redis_middleware.asgi`."""

from __future__ import annotations

from .cache import Cache, CacheMiddleware
from .presence import Presence, PresenceMiddleware
from .ratelimit import RateLimiter, RateLimitMiddleware
from .sessions import ENVIRON_KEY, SessionMiddleware, SessionStore
from .stack import RedisMiddleware

__all__ = [
    "ENVIRON_KEY",
    "Cache",
    "CacheMiddleware",
    "Presence",
    "PresenceMiddleware",
    "RateLimitMiddleware",
    "RateLimiter",
    "RedisMiddleware",
    "SessionMiddleware",
    "SessionStore",
]
