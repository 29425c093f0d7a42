"""Response caching for WSGI apps: a shared, HTTP-correct cache in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from .._options import resolve_settings
from .._redis.breaker import log_incident
from .._redis.connections import connections_for
from ..errors import RedisMiddlewareError
from ..sansio.cache import CacheCore, CachePlan, Capture, Entry, Lookup
from ..sansio.request import from_environ
from ..settings import Settings
from ._http import close_iter, status_line

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

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        plan = self.core.plan(from_environ(environ, self.settings.user_field))
        if plan is None:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        if plan.invalidate:
            return self._unsafe(environ, start_response, plan)
        try:
            lookup: Lookup | None = self.redis.run(self.core.lookup_flow(plan))
        except RedisMiddlewareError as exc:
            log_incident("cache", "cache bypassed: %s", exc)
            lookup = None
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if lookup is not None:
            entry, lookup = self.resolve(plan, lookup)
            if entry is not None:
                return self._serve(start_response, plan, entry, head)
        return self._compute(environ, start_response, plan, lookup, head)

    def _serve(self, start_response: Any, plan: CachePlan, entry: Entry,
               head: bool) -> list[bytes]:
        status, headers, body = self.core.hit(plan, entry, head)
        start_response(status_line(status), headers)
        return [body]

    def resolve(self, plan: CachePlan, lookup: Lookup) -> tuple[Entry | None, Lookup | None]:
        """Serve, wait for the guard's holder, or compute (:meth:`CacheCore.resolve_flow`)."""
        return self.redis.run(self.core.resolve_flow(plan, lookup))

    def _compute(self, environ: dict[str, Any], start_response: Any, plan: CachePlan,
                 lookup: Lookup | None, head: bool) -> Iterable[bytes]:
        entry = lookup.entry if lookup else None
        stale = entry if self.core.usable_if_error(entry, time.time()) else None
        capture = Capture(self.core, plan, lookup, stale)

        def cache_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            touched = bool(getattr(environ.get("redis_middleware.session"), "accessed", False))
            extra = capture.start(int(status.split(" ", 1)[0]), list(headers), touched)
            if extra is None:
                return lambda data: None  # a 5xx replaced by the stale entry
            return start_response(status, [*headers, *extra], exc_info)

        try:
            app_iter = self.app(environ, cache_start_response)
        except Exception:
            if stale is None or capture.status:
                self._finish(capture)
                raise
            self._finish(capture)
            return self._serve(start_response, plan, stale, head)
        return _Body(self, app_iter, capture, lambda: self._serve(
            start_response, plan, stale, head) if stale else [])

    def _finish(self, capture: Capture) -> None:
        try:
            self.redis.run(capture.finish_flow())
        except RedisMiddlewareError as exc:
            log_incident("cache", "response not stored: %s", exc)

    def _unsafe(self, environ: dict[str, Any], start_response: Any,
                plan: CachePlan) -> Iterable[bytes]:
        def invalidating_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            # RFC 9111 4.4: a successful unsafe request invalidates the URL, before
            # the response leaves, so the client's next GET sees fresh data.
            if 200 <= int(status.split(" ", 1)[0]) < 400:
                try:
                    self.redis.run(self.core.invalidate_flow(plan.url))
                except RedisMiddlewareError as exc:
                    log_incident("cache", "cache entry not invalidated: %s", exc)
            return start_response(status, headers, exc_info)

        result: Iterable[bytes] = self.app(environ, invalidating_start_response)
        return result


class _Body:
    """The computed body: copied for the cache, stored only when fully sent; always closed."""

    def __init__(self, middleware: CacheMiddleware, app_iter: Iterable[bytes],
                 capture: Capture, serve_stale: Any) -> None:
        self._middleware = middleware
        self._app_iter = app_iter
        self._capture = capture
        self._serve_stale = serve_stale
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        capture = self._capture
        for chunk in self._app_iter:
            if capture.status == 0 and capture.stale is not None:  # replaced by stale
                yield from self._serve_stale()
                return
            capture.body(chunk, True)
            yield chunk
        if capture.status == 0 and capture.stale is not None:
            yield from self._serve_stale()
            return
        capture.body(b"", False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                close_iter(self._app_iter)
            finally:
                self._middleware._finish(self._capture)
