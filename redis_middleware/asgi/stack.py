"""``RedisMiddleware`` for ASGI: sessions, rate limiting, caching and presence in one line."""

from __future__ import annotations

import time
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import connections_for
from .._redis.strategies import LimitsStrategy
from ..config.settings import Settings
from ..sansio.cache import encode_headers
from ..sansio.flow import step
from ..sansio.request import from_scope
from ..sansio.responses import Response
from ..sansio.stack import Before, StackCore, resolve_stack_settings
from ._respond import refresh, respond, send_response, with_conditional
from .presence import PresenceMiddleware
from .sessions import save_after_websocket

__all__ = ["RedisMiddleware"]


class RedisMiddleware:
    """Sessions, rate limiting, response caching and presence, in the right order.

    Example::

        app = RedisMiddleware(app)                       # everything from the environment
        app = RedisMiddleware(app, settings, limit="100/minute", key="user_or_ip",
                              routes={"/items/{id}": 60})

    Options are the components' settings without their prefix (``limit``, ``rules``,
    ``exempt``, ``routes``, ``cookie_name``, ...). The session is loaded first, so rate
    limiting and presence see the user; rate limiting runs before the cache; exempt
    paths skip everything. Before the app: at most two Redis round trips (one for an
    anonymous request); after it: at most one, only when something changed.
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = resolve_stack_settings(settings, options)
        self.core = StackCore(self.settings)
        self.redis = connections_for(self.settings)
        s = self.settings
        # Presence serves the rarer paths (websocket leases, the lifespan sweeper).
        self._presence = PresenceMiddleware(app, s) if self.core.presence else None
        if self.core.ratelimit is not None and not self.core.fixed_window:
            self.core.limiter = LimitsStrategy(self.core.ratelimit, self.redis)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan" and self._presence is not None:
            await self.app(scope, self._presence.watch_lifespan(receive), send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = from_scope(scope, self.settings.user_field)
        if self.core.is_exempt(request.path):
            await self.app(scope, receive, send)
            return
        http = scope["type"] == "http"
        before: Before = await self.redis.arun(self.core.before_flow(
            request, request.user, http))
        if before.session is not None:
            scope["session"] = before.session  # type: ignore[typeddict-unknown-key]
        decision = before.decision
        if decision is not None and not decision.allowed:
            response, release = self.core.rejection(before, decision)
            done, rest = step(release)
            if not done:
                await self.redis.arun(rest)
            if http:
                await send_response(send, response)
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": decision.detail})
            return
        extra = decision.headers if decision is not None else ()
        if not http:
            await self._websocket(scope, receive, send, before)
            return
        head = scope.get("method") == "HEAD"
        done, resolved = step(self.core.hit_flow(before))
        if not done:
            resolved = await self.redis.arun(resolved)
        if resolved is not None and resolved.serve is not None and \
                self.core.cache is not None and before.plan is not None:
            status, headers, body = self.core.cache.hit_raw(before.plan, resolved.serve, head)
            await send_response(send, Response(status, extra, body),
                                [*headers, *encode_headers(list(extra))])
            if resolved.refresh:
                refresh(self.app, scope, self.core.refresh_exchange(before, time.time()),
                        self.redis)
            return
        exchange = self.core.exchange(before, scope.get("scheme") == "https", head,
                                      time.time(), extra)
        await respond(self.app, with_conditional(scope, exchange.conditional), receive, send,
                      exchange, self.redis)

    async def _websocket(self, scope: Scope, receive: ASGIReceiveCallable,
                         send: ASGISendCallable, before: Before) -> None:
        if before.user is not None and self._presence is not None:
            await self._presence.websocket(scope, receive, send, before.user)
        else:
            await self.app(scope, receive, send)
        if before.session is not None and before.incoming is not None and \
                self.core.sessions is not None:
            await save_after_websocket(self.redis, self.core.sessions, before.session,
                                       before.incoming)
