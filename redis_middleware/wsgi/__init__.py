"""WSGI middleware (sync Redis client). Same names as :mod:`redis_middleware.asgi`."""

from __future__ import annotations

from .cache import Cache, CacheMiddleware
from .presence import Presence, PresenceMiddleware
from .ratelimit import RateLimiter, RateLimitMiddleware
from .realtime import Broadcast
from .sessions import ENVIRON_KEY, SessionMiddleware, SessionStore
from .stack import RedisMiddleware

__all__ = [
    "ENVIRON_KEY",
    "Broadcast",
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
