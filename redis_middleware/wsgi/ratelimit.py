"""Rate limiting for WSGI apps: 429 before the app runs, X-RateLimit-* headers after."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._redis.connections import connections_for
from .._redis.strategies import LimitsStrategy
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.ratelimit.core import Check, Decision, RateLimitCore, Usage
from ..sansio.request import environ_user, from_environ
from ..sansio.responses import Refusals
from ._respond import start

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


class RateLimitMiddleware:
    """Per-IP or per-user rate limits for WSGI apps (see the ASGI twin for options).

    Example::

        app.wsgi_app = RateLimitMiddleware(app.wsgi_app, settings, limit="100/minute")
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.limiter = RateLimiter(settings, **options)
        self.settings = self.limiter.settings
        self.core = self.limiter.core

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = from_environ(environ, self.settings.user_field)
        check = self.core.prepare(request, lambda: environ_user(environ, self.settings.user_field))
        decision = None if check is None else self.limiter.check(check)
        if decision is None:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        if not decision.allowed:
            return start(start_response, self.limiter.refusals.rate_limited(
                request, decision.status, decision.detail, decision.headers))
        extra = list(decision.headers)

        def limited_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        result = self.app(environ, limited_start_response)
        return result
