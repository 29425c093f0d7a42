"""The stack for ASGI: the core decides one Action per request; this carries it out."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import connections_for
from .._redis.strategies import limiter_for
from ..config.settings import Settings
from ..sansio.flow import step
from ..sansio.request import from_scope
from ..sansio.stack import ALL_PARTS, Forward, Incoming, Refuse, Serve, StackCore, stack_settings
from ._respond import refresh, refuse, respond, respond_socket, send_response, with_conditional
from .presence import PresenceMiddleware

__all__ = ["RedisMiddleware", "Stack"]


class Stack:
    """Pure ASGI middleware running the stack's ``parts``; other scopes pass through."""

    parts: ClassVar[tuple[str, ...]] = ALL_PARTS

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = stack_settings(settings, options, self.parts)
        self.core = StackCore(self.settings, self.parts)
        self.redis = connections_for(self.settings)
        self.core.limiter = limiter_for(self.core.ratelimit, self.redis)
        # Presence serves the rarer paths (websocket leases, the lifespan sweeper).
        self._presence = PresenceMiddleware(app, self.settings) if self.core.presence else None

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan" and self._presence is not None:
            receive = self._presence.watch_lifespan(receive)
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request, http = from_scope(scope, self.settings.user_field), scope["type"] == "http"
        flow = self.core.decide(Incoming(
            request, http, scope.get("scheme") == "https", scope.get("method") == "HEAD",
            True, lambda: request.user, lambda: scope.get("session")), time.time())
        done, action = step(flow)
        if not done:
            action = await self.redis.arun(flow, action)
        if action.session is not None:
            scope["session"] = action.session  # type: ignore[typeddict-unknown-key]
        match action:  # the most common first: each case tried costs a type check
            case Forward(exchange=exchange) if http:
                await respond(self.app, with_conditional(scope, exchange.conditional),
                              receive, send, exchange, self.redis)
            case Forward(exchange=exchange, user=user):
                await respond_socket(self.app, scope, receive, send, exchange, self.redis,
                                     self._presence, user)
            case Serve(response=response, headers=headers, refresh=again):
                await send_response(send, response, headers)
                if again is not None:
                    refresh(self.app, scope, again, self.redis)
            case Refuse(response=response, reason=reason):
                await refuse(send, response, reason, http)
            case _:
                await self.app(scope, receive, send)


class RedisMiddleware(Stack):
    """Sessions, rate limiting, response caching and presence, in the right order.

    Example::

        app = RedisMiddleware(app, settings, limit="100/minute", key="user_or_ip",
                              routes={"/items/{id}": 60})

    Options are the components' settings without their prefix (``limit``, ``routes``,
    ``cookie_name``, ...). The session loads first, so rate limiting and presence see the
    user; rate limiting runs before the cache; exempt paths skip everything. Before the
    app: at most two round trips (one when anonymous); after it, at most one.
    """
