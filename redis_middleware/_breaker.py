"""A circuit breaker that also makes failure logging once-per-incident."""

from __future__ import annotations

import logging
import time

from .errors import RedisUnavailableError

logger = logging.getLogger("redis_middleware")


class Breaker:
    """Fail fast for ``cooldown`` seconds after a connection failure, then let one probe through.

    While Redis is down, requests do not each wait for a socket timeout: only one
    probe per cooldown period touches the network. The first failure of an incident
    and the recovery are logged once each.
    """

    def __init__(self, cooldown: float, name: str) -> None:
        self.cooldown = cooldown
        self.name = name
        self.failing = False
        self._open_until = 0.0

    def check(self) -> None:
        """Raise RedisUnavailableError while open; otherwise let the call (or probe) go."""
        if not self.failing:
            return
        now = time.monotonic()
        if now < self._open_until:
            raise RedisUnavailableError(f"Redis at {self.name} is unavailable (circuit open)")
        self._open_until = now + self.cooldown  # this caller is the probe

    def failure(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            logger.warning(
                "Redis at %s is unavailable (%s: %s); failing fast for %.1fs between probes",
                self.name, type(exc).__name__, exc, self.cooldown,
            )
        self._open_until = time.monotonic() + self.cooldown

    def success(self) -> None:
        if self.failing:
            self.failing = False
            self._open_until = 0.0
            logger.warning("Redis at %s is available again", self.name)


_last_logged: dict[str, float] = {}


def log_incident(kind: str, message: str, *args: object, every: float = 60.0) -> None:
    """Log a WARNING for ``kind`` at most once per ``every`` seconds (one line per incident)."""
    now = time.monotonic()
    last = _last_logged.get(kind)
    if last is None or now - last >= every:
        _last_logged[kind] = now
        logger.warning(message, *args)
