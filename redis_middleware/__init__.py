"""redis-middleware: sessions, rate limiting, response caching and presence on Redis,
as pure ASGI middleware and thin WSGI twins.

The middleware lives in :mod:`redis_middleware.asgi` and :mod:`redis_middleware.wsgi`;
this package exports what both share.
"""

from __future__ import annotations

from .config.settings import Settings
from .errors import (
    ConfigError,
    RedisCommandError,
    RedisMiddlewareError,
    RedisUnavailableError,
    SessionError,
    SessionLimitError,
    SessionUnavailableError,
    SubscriberOverflow,
)
from .keys import KeySpace

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "KeySpace",
    "RedisCommandError",
    "RedisMiddlewareError",
    "RedisUnavailableError",
    "SessionError",
    "SessionLimitError",
    "SessionUnavailableError",
    "Settings",
    "SubscriberOverflow",
    "__version__",
]
