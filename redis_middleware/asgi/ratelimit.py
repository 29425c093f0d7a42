"""Rate limiting for ASGI apps: 429 before the app runs, X-RateLimit-* headers after."""

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


def _raw(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class RateLimiter:
    """Counts requests against limits (async); also reads and resets an identity's usage.

    Identities are ``"ip:<address>"``, ``"user:<id>"`` or ``"custom:<value>"``.
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "ratelimit", options)
        self.core = RateLimitCore(self.settings)
        self.redis = connections_for(self.settings)
        self.strategy = None if self.core.fixed_window else LimitsStrategy(self.core, self.redis)
        self.refusals = Refusals(self.settings.refusal_handler, self.settings.breaker_cooldown)

    async def check(self, check: Check) -> Decision | None:
        """Count ``check``; None when Redis failed and the rule fails open."""
        try:
            if self.strategy is not None:
                return await self.strategy.acheck(check)
            return await self.redis.arun(self.core.fixed_window_flow(check))
        except RedisMiddlewareError as exc:
            return self.core.unavailable(check, exc)

    async def usage(self, identity: str) -> dict[str, list[Usage]]:
        """Per rule, the fixed-window counters of ``identity``."""
        return await self.redis.arun(self.core.usage_flow(identity))

    async def reset(self, identity: str) -> int:
        """Forget every fixed-window counter of ``identity``."""
        return await self.redis.arun(self.core.reset_flow(identity))


class RateLimitMiddleware(Stack):
    """Per-IP or per-user rate limits, exact across processes sharing one Redis.

    Example::

        app = RateLimitMiddleware(app, settings, limit="100/minute", key="user_or_ip",
                                  rules={"/login": {"limit": "5/minute", "fail": "closed"}},
                                  exempt=["/health"])

    Over the limit: 429 with a JSON body, ``Retry-After`` and ``X-RateLimit-*``; the
    app is not called. WebSocket connections are limited at connect (close 1008).
    Security: ``X-Forwarded-For`` counts only from ``trusted_proxies``.
    """

    parts = ("ratelimit",)
