"""redis-middleware: sessions, rate limiting, response caching and presence on Redis,
as pure ASGI middleware and thin WSGI twins.

The middleware lives in :mod:`redis_middleware.asgi` and :mod:`redis_middleware.wsgi`;
this package exports what both share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config.settings import Settings
from .errors import (
    ConfigError,
    LockNotAcquired,
    RedisCommandError,
    RedisMiddlewareError,
    RedisUnavailableError,
    SessionError,
    SessionLimitError,
    SessionUnavailableError,
    SubscriberOverflow,
)
from .keys import KeySpace

if TYPE_CHECKING:
    from .datacache import DataCache

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataCache",
    "KeySpace",
    "LockNotAcquired",
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


def __getattr__(name: str) -> Any:
    # DataCache needs the Redis clients: imported on first use, so that importing the
    # package (settings, the CLI's start) stays light.
    if name == "DataCache":
        from .datacache import DataCache

        return DataCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
