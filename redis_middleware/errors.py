"""The exceptions redis-middleware raises, under one base class."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "RedisCommandError",
    "RedisMiddlewareError",
    "RedisUnavailableError",
    "SessionError",
    "SessionLimitError",
    "SessionUnavailableError",
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
    """Redis answered a command with an error (e.g. ``OOM`` under ``noeviction``)."""


class SessionError(RedisMiddlewareError):
    """Base class of session errors."""


class SessionUnavailableError(SessionError):
    """The request's session could not be loaded or saved because Redis failed."""


class SessionLimitError(SessionError, ValueError):
    """A session mutation exceeded a configured size limit, or stored a non-JSON value."""
