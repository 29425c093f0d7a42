"""A circuit breaker that also makes failure logging once-per-incident."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import RedisUnavailableError
from ..sansio import metrics

logger = logging.getLogger("redis_middleware")


class Breaker:
    """Fail fast for ``cooldown`` seconds after a connection failure, then let one probe through.

    While Redis is down, requests do not each wait for a socket timeout: only one
    probe per cooldown period touches the network. The first failure of an incident
    and the recovery are logged once each.
    """

    # A failure this soon after recovering (a command that was in flight when Redis came
    # back, say) belongs to the same incident: it is not logged again.
    SAME_INCIDENT = 5.0

    def __init__(self, cooldown: float, name: str) -> None:
        self.cooldown = cooldown
        self.name = name
        self.failing = False
        self._open_until = 0.0
        self._recovered_at = float("-inf")
        self._reported = False
        # Told when the breaker opens (True) and closes (False): the near cache empties
        # itself when Redis fails, since it can no longer hear what changes there.
        self.listeners: list[Callable[[bool], None]] = []

    def check(self) -> None:
        """Raise RedisUnavailableError while open; otherwise let the call (or probe) go."""
        if not self.failing:
            return
        now = time.monotonic()
        if now < self._open_until:
            raise RedisUnavailableError(f"Redis at {self.name} is unavailable (circuit open)")
        self._open_until = now + self.cooldown  # this caller is the probe

    def failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        if not self.failing:
            self.failing = True
            if metrics.hook is not None:
                metrics.hook.breaker(self.name, True)
            for listener in self.listeners:
                listener(True)
            if now - self._recovered_at > self.SAME_INCIDENT:
                self._reported = True
                logger.warning(
                    "Redis at %s is unavailable (%s: %s); failing fast for %.1fs between probes",
                    self.name, type(exc).__name__, exc, self.cooldown,
                )
        self._open_until = now + self.cooldown

    def success(self) -> None:
        if self.failing:
            self.failing = False
            if metrics.hook is not None:
                metrics.hook.breaker(self.name, False)
            for listener in self.listeners:
                listener(False)
            self._open_until = 0.0
            self._recovered_at = time.monotonic()
            if self._reported:
                self._reported = False
                logger.warning("Redis at %s is available again", self.name)
