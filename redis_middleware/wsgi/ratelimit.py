"""Rate limiting for WSGI apps: 429 before the app runs, X-RateLimit-* headers after."""

from __future__ import annotations

from typing import Any

from .._redis.connections import connections_for
from .._redis.strategies import LimitsStrategy
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.ratelimit.core import Check, Decision, RateLimitCore, Usage
from ..sansio.responses import Refusals
from .stack import Stack

__all__ = ["RateLimitMiddleware", "RateLimiter"]


class RateLimiter:
    """Counts requests against limits (sync); also reads and resets an identity's usage."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "ratelimit", options)
        self.core = RateLimitCore(self.settings)
        self.redis = connections_for(self.settings)
        self.strategy = None if self.core.fixed_window else LimitsStrategy(self.core, self.redis)
        self.refusals = Refusals(self.settings.refusal_handler, self.settings.breaker_cooldown)

    def check(self, check: Check) -> Decision | None:
        """Count ``check``; None when Redis failed and the rule fails open."""
        try:
            if self.strategy is not None:
                return self.strategy.check(check)
            return self.redis.run(self.core.fixed_window_flow(check))
        except RedisMiddlewareError as exc:
            return self.core.unavailable(check, exc)

    def usage(self, identity: str) -> dict[str, list[Usage]]:
        """Per rule, the fixed-window counters of ``identity``."""
        return self.redis.run(self.core.usage_flow(identity))

    def reset(self, identity: str) -> int:
        """Forget every fixed-window counter of ``identity``."""
        return self.redis.run(self.core.reset_flow(identity))


class RateLimitMiddleware(Stack):
    """Per-IP or per-user rate limits for WSGI apps (see the ASGI twin for options).

    Example::

        app.wsgi_app = RateLimitMiddleware(app.wsgi_app, settings, limit="100/minute")
    """

    parts = ("ratelimit",)
