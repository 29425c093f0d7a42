"""One log line per incident, not one per request."""

from __future__ import annotations

import logging
import time

__all__ = ["log_incident"]

logger = logging.getLogger("redis_middleware")

_last_logged: dict[str, float] = {}


def log_incident(kind: str, message: str, *args: object, every: float = 60.0) -> None:
    """Log a WARNING for ``kind`` at most once per ``every`` seconds (one line per incident)."""
    now = time.monotonic()
    last = _last_logged.get(kind)
    if last is None or now - last >= every:
        _last_logged[kind] = now
        logger.warning(message, *args)
