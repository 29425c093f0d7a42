"""Response caching for ASGI apps: a shared, HTTP-correct cache in Redis."""

from __future__ import annotations

import time
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.cache import CacheCore, CachePlan, Entry, Lookup, Resolved, SessionUse
from ..sansio.exchange import CachePart, Exchange
from ..sansio.incidents import log_failure
from ..sansio.request import from_scope
from ..sansio.sessions.mapping import session_use
from ._respond import refresh, respond, with_conditional

__all__ = ["Cache", "CacheMiddleware"]


def session_touched(scope: Any) -> SessionUse:
    return session_use(scope.get("session"))


class Cache:
    """Purge stored responses (async): one URL, a tag, or everything."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "cache", options)
        self.core = CacheCore(self.settings)
        self.redis = connections_for(self.settings)

    async def purge_url(self, path: str, query: str = "") -> int:
        return await self.redis.arun(self.core.purge_url_flow(path, query))

    async def purge_tag(self, tag: str) -> int:
        return await self.redis.arun(self.core.purge_tag_flow(tag))

    async def purge_all(self) -> int:
        return await self.redis.arun(self.core.purge_all_flow())


class CacheMiddleware:
    """Caches GET responses of the configured routes in Redis, by HTTP's rules.

    Example::

        app = CacheMiddleware(app, settings, routes={"/items/{id}": 60,
                                                     "/products": {"ttl": 30, "tags": ["p"]}})

    A hit costs one round trip and never calls the app; concurrent misses compute
    once (stampede guard). Responses with Set-Cookie, ``private``/``no-store``, or
    that touched the session are never stored. Redis down: the cache is bypassed.
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.cache = Cache(settings, **options)
        self.settings = self.cache.settings
        self.core = self.cache.core
        self.redis = self.cache.redis

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        plan = self.core.plan(from_scope(scope, None))  # the cache needs no user
        if plan is None:
            await self.app(scope, receive, send)
            return
        head = scope.get("method") == "HEAD"
        now = time.time()
        lookup: Lookup | None = None
        bypass = "redis-unavailable"
        if not plan.invalidate:
            try:
                lookup = await self.redis.arun(self.core.lookup_flow(plan))
            except RedisMiddlewareError as exc:
                log_failure("cache", "cache bypassed: %s", exc)
            if lookup is not None:
                resolved = await self.resolve(plan, lookup)
                lookup, bypass = resolved.lookup, resolved.bypass or bypass
                if resolved.serve is not None:
                    await self._serve(send, plan, resolved.serve, head)
                    if resolved.refresh:
                        refresh(self.app, scope, Exchange((CachePart(
                            self.core, plan, lookup, False, time.time(), lambda: ""),)),
                            self.redis)
                    return
        part = CachePart(self.core, plan, lookup, head, now, lambda: session_touched(scope),
                         bypass)
        await respond(self.app, with_conditional(scope, part.conditional), receive, send,
                      Exchange((part,)), self.redis)

    async def _serve(self, send: ASGISendCallable, plan: CachePlan, entry: Entry,
                     head: bool) -> None:
        status, headers, body = self.core.hit_raw(plan, entry, head)
        await send({"type": "http.response.start", "status": status,
                    "headers": headers, "trailers": False})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def resolve(self, plan: CachePlan, lookup: Lookup) -> Resolved:
        """Serve, refresh, wait for the guard's holder, or compute
        (:meth:`CacheCore.resolve_flow`)."""
        return await self.redis.arun(self.core.resolve_flow(plan, lookup))
