"""The exceptions redis-middleware raises, under one base class."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LockNotAcquired",
    "RedisCommandError",
    "RedisMiddlewareError",
    "RedisUnavailableError",
    "SessionError",
    "SessionLimitError",
    "SessionUnavailableError",
    "SubscriberOverflow",
]


class RedisMiddlewareError(Exception):
    """Base class of every error raised by redis-middleware."""


class ConfigError(RedisMiddlewareError, ValueError):
    """Invalid configuration; the message names the setting or environment variable."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


class RedisUnavailableError(RedisMiddlewareError):
    """Redis could not be reached in time (or the circuit breaker is open).

    The original redis-py exception, when there is one, is attached as ``__cause__``.
    """


class RedisCommandError(RedisMiddlewareError):
    """Redis answered a command with an error (e.g. ``OOM`` under ``noeviction``).

    ``replies`` holds the whole round trip's replies, each failed one an exception in
    its place, when the error came from one: the components that shared the round trip
    and got no error go on with their own replies.
    """

    def __init__(self, message: str, replies: list[object] | None = None) -> None:
        super().__init__(message)
        self.replies = replies


class LockNotAcquired(RedisMiddlewareError, TimeoutError):
    """``with cache.lock(...)`` could not take the lock (``blocking=False``, or ``wait``
    seconds passed while another holder kept it)."""


class SessionError(RedisMiddlewareError):
    """Base class of session errors."""


class SessionUnavailableError(SessionError):
    """The request's session could not be loaded or saved because Redis failed."""


class SessionLimitError(SessionError, ValueError):
    """A session mutation exceeded a configured size limit, or stored a non-JSON value."""


class SubscriberOverflow(RedisMiddlewareError):
    """A real-time subscriber fell further behind than ``realtime_queue_size`` messages
    under the ``disconnect`` overflow policy: its subscription has ended."""
