"""Response caching for ASGI apps: a shared, HTTP-correct cache in Redis."""

from __future__ import annotations

import time
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._options import resolve_settings
from .._redis.breaker import log_incident
from .._redis.connections import connections_for
from ..errors import RedisMiddlewareError
from ..sansio.cache import CacheCore, CachePlan, Capture, Entry, Lookup, encode_headers
from ..sansio.request import from_scope
from ..settings import Settings

__all__ = ["Cache", "CacheMiddleware"]


def _decode(headers: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


def session_touched(scope: Any) -> bool:
    return bool(getattr(scope.get("session"), "accessed", False))


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
        if plan.invalidate:
            await self._unsafe(scope, receive, send, plan)
            return
        try:
            lookup: Lookup | None = await self.redis.arun(self.core.lookup_flow(plan))
        except RedisMiddlewareError as exc:
            log_incident("cache", "cache bypassed: %s", exc)
            lookup = None
        if lookup is not None:
            entry, lookup = await self.resolve(plan, lookup)
            if entry is not None:
                await self._serve(send, plan, entry, scope.get("method") == "HEAD")
                return
        await self._compute(scope, receive, send, plan, lookup)

    async def _serve(self, send: ASGISendCallable, plan: CachePlan, entry: Entry,
                     head: bool) -> None:
        status, headers, body = self.core.hit_raw(plan, entry, head)
        await send({"type": "http.response.start", "status": status,
                    "headers": headers, "trailers": False})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def resolve(self, plan: CachePlan, lookup: Lookup) -> tuple[Entry | None, Lookup | None]:
        """Serve, wait for the guard's holder, or compute (:meth:`CacheCore.resolve_flow`)."""
        return await self.redis.arun(self.core.resolve_flow(plan, lookup))

    async def _compute(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                       plan: CachePlan, lookup: Lookup | None) -> None:
        entry = lookup.entry if lookup else None
        stale = entry if self.core.usable_if_error(entry, time.time()) else None
        capture = Capture(self.core, plan, lookup, stale)
        use_stale = started = False

        async def send_wrapper(message: Any) -> None:
            nonlocal use_stale, started
            if message["type"] == "http.response.start":
                extra = capture.start(message["status"], _decode(message.get("headers", ())),
                                      session_touched(scope))
                if extra is None:
                    use_stale = True
                    return
                started = True
                headers = [*message.get("headers", ()), *encode_headers(extra)]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                if use_stale:
                    return
                capture.body(message.get("body", b""), message.get("more_body", False))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if stale is None or started:
                await self._finish(capture)
                raise
            use_stale = True
        if use_stale and stale is not None:
            await self._serve(send, plan, stale, scope.get("method") == "HEAD")
        await self._finish(capture)

    async def _finish(self, capture: Capture) -> None:
        try:
            await self.redis.arun(capture.finish_flow())
        except RedisMiddlewareError as exc:
            log_incident("cache", "response not stored: %s", exc)

    async def _unsafe(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                      plan: CachePlan) -> None:
        async def send_wrapper(message: Any) -> None:
            # RFC 9111 4.4: a successful unsafe request invalidates the URL; done
            # before the response leaves, so the client's next GET sees fresh data.
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                try:
                    await self.redis.arun(self.core.invalidate_flow(plan.url))
                except RedisMiddlewareError as exc:
                    log_incident("cache", "cache entry not invalidated: %s", exc)
            await send(message)

        await self.app(scope, receive, send_wrapper)
