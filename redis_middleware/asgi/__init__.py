"""Pure ASGI middleware (asyncio Redis client). Same names as :mod:`redis_middleware.wsgi`."""

from __future__ import annotations

from .cache import Cache, CacheMiddleware
from .presence import Presence, PresenceMiddleware
from .ratelimit import RateLimiter, RateLimitMiddleware
from .realtime import Broadcast, RoomSocket, join_room
from .sessions import SessionMiddleware, SessionStore
from .stack import RedisMiddleware

__all__ = [
    "Broadcast",
    "Cache",
    "CacheMiddleware",
    "Presence",
    "PresenceMiddleware",
    "RateLimitMiddleware",
    "RateLimiter",
    "RedisMiddleware",
    "RoomSocket",
    "SessionMiddleware",
    "SessionStore",
    "join_room",
]
