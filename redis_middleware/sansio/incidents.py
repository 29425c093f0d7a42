"""One log line per incident, not one per request."""

from __future__ import annotations

import logging
import time

__all__ = ["log_failure", "log_incident"]

logger = logging.getLogger("redis_middleware")

_last_logged: dict[str, float] = {}


def log_incident(kind: str, message: str, *args: object, every: float = 60.0) -> None:
    """Log a WARNING for ``kind`` at most once per ``every`` seconds (one line per incident)."""
    now = time.monotonic()
    last = _last_logged.get(kind)
    if last is None or now - last >= every:
        _last_logged[kind] = now
        logger.warning(message, *args)


def log_failure(kind: str, message: str, exc: BaseException) -> None:
    """Log what a component did about a Redis error, once per incident: a refused
    command (OOM, NOPERM, a script error). An outage (``RedisUnavailableError``: refused
    connections, timeouts, the open circuit) is logged once by the circuit breaker for
    every component, so it is not logged again here."""
    from ..errors import RedisUnavailableError

    if not isinstance(exc, RedisUnavailableError):
        log_incident(kind, message, exc)
