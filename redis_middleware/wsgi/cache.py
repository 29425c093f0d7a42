"""Response caching for WSGI apps: a shared, HTTP-correct cache in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.cache import CacheCore, CachePlan, Lookup, Resolved
from ..sansio.exchange import CachePart, Exchange
from ..sansio.incidents import log_failure
from ..sansio.request import from_environ
from ..sansio.responses import status_line
from ..sansio.sessions.mapping import session_use
from ._respond import refresh, respond, with_conditional
from .sessions import ENVIRON_KEY

__all__ = ["Cache", "CacheMiddleware"]




class Cache:
    """Purge stored responses (sync): one URL, a tag, or everything."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "cache", options)
        self.core = CacheCore(self.settings)
        self.redis = connections_for(self.settings)

    def purge_url(self, path: str, query: str = "") -> int:
        return self.redis.run(self.core.purge_url_flow(path, query))

    def purge_tag(self, tag: str) -> int:
        return self.redis.run(self.core.purge_tag_flow(tag))

    def purge_all(self) -> int:
        return self.redis.run(self.core.purge_all_flow())


class CacheMiddleware:
    """Caches GET responses of the configured routes in Redis (see the ASGI twin).

    Example::

        app.wsgi_app = CacheMiddleware(app.wsgi_app, settings, routes={"/items/{id}": 60})
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.cache = Cache(settings, **options)
        self.settings = self.cache.settings
        self.core = self.cache.core
        self.redis = self.cache.redis
        self.refreshers = refresh_workers(self.settings)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        plan = self.core.plan(from_environ(environ, self.settings.user_field))
        if plan is None:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        head = environ.get("REQUEST_METHOD") == "HEAD"
        now = time.time()
        lookup: Lookup | None = None
        bypass = "redis-unavailable"
        if not plan.invalidate:
            try:
                lookup = self.redis.run(self.core.lookup_flow(plan))
            except RedisMiddlewareError as exc:
                log_failure("cache", "cache bypassed: %s", exc)
            if lookup is not None:
                resolved = self.resolve(plan, lookup)
                lookup, bypass = resolved.lookup, resolved.bypass or bypass
                if resolved.serve is not None:
                    status, headers, body = self.core.hit(plan, resolved.serve, head)
                    start_response(status_line(status), headers)
                    if resolved.refresh:
                        refresh(self.app, environ, Exchange((CachePart(
                            self.core, plan, lookup, False, time.time(), lambda: ""),)),
                            self.redis, self.refreshers)
                    return [body]
        part = CachePart(self.core, plan, lookup, head, now,
                         lambda: session_use(environ.get(ENVIRON_KEY)), bypass)
        return respond(self.app, with_conditional(environ, part.conditional), start_response,
                       Exchange((part,)), self.redis)

    def resolve(self, plan: CachePlan, lookup: Lookup) -> Resolved:
        """Serve, refresh, wait for the guard's holder, or compute
        (:meth:`CacheCore.resolve_flow`)."""
        return self.redis.run(self.core.resolve_flow(plan, lookup))


def refresh_workers(settings: Settings) -> ThreadPoolExecutor:
    """The threads that run background refreshes (created lazily by the executor)."""
    return ThreadPoolExecutor(settings.cache_refresh_workers,
                              thread_name_prefix="redis-middleware-refresh")
