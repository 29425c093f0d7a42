"""``RedisMiddleware`` for WSGI: sessions, rate limiting, caching and presence in one line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._redis.breaker import log_incident
from .._redis.connections import connections_for
from .._redis.strategies import LimitsStrategy
from ..errors import RedisMiddlewareError, SessionUnavailableError
from ..sansio.cache import Capture
from ..sansio.flow import Flow, gather
from ..sansio.request import from_environ
from ..sansio.stack import Before, StackCore, resolve_stack_settings
from ..settings import Settings
from ._http import close_iter, json_response, request_cookies, status_line
from .cache import CacheMiddleware
from .sessions import ENVIRON_KEY, _add_vary_cookie

__all__ = ["RedisMiddleware"]

_UNAVAILABLE = {"detail": "Session store unavailable, retry shortly."}


class RedisMiddleware:
    """Sessions, rate limiting, response caching and presence, in the right order (WSGI).

    Example::

        app.wsgi_app = RedisMiddleware(app.wsgi_app, settings, limit="100/minute")

    Flask users add ``app.session_interface = RedisSessionInterface()`` (or call
    :func:`redis_middleware.flask.init_stack`) so ``flask.session`` is this session.
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = resolve_stack_settings(settings, options)
        self.core = StackCore(self.settings)
        self.redis = connections_for(self.settings)
        self._cache = CacheMiddleware(app, self.settings) if self.core.cache else None
        self._strategy = (LimitsStrategy(self.core.ratelimit, self.redis)
                          if self.core.ratelimit and not self.core.fixed_window else None)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = from_environ(environ, self.settings.user_field)
        if self.core.is_exempt(request.path):
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        before: Before = self.redis.run(self.core.before_flow(
            request, request_cookies(environ), environ.get("REMOTE_USER") or None, True))
        if before.session is not None:
            environ[ENVIRON_KEY] = before.session
        decision = before.decision
        if before.check is not None and self._strategy is not None:
            try:
                decision = self._strategy.check(before.check)
            except RedisMiddlewareError:
                decision = self.core.ratelimit.unavailable(before.check)  # type: ignore[union-attr]
        extra = list(decision.headers) if decision is not None else []
        if decision is not None and not decision.allowed:
            if before.lookup is not None and before.plan is not None and self.core.cache:
                self._quietly(self.core.cache.release_flow(before.plan, before.lookup))
            assert self.core.ratelimit is not None
            body = self.core.ratelimit.blocked_body(decision)
            start_response(status_line(decision.status), [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                *extra])
            return [body]
        head = environ.get("REQUEST_METHOD") == "HEAD"
        served = self._from_cache(start_response, before, extra, head)
        if served is not None:
            return served
        return self._compute(environ, start_response, before, extra, head)

    def _quietly(self, flow: Flow[Any]) -> Any:
        try:
            return self.redis.run(flow)
        except RedisMiddlewareError as exc:
            log_incident("stack", "redis-middleware skipped a write: %s", exc)
            return None

    def _from_cache(self, start_response: Any, before: Before, extra: list[tuple[str, str]],
                    head: bool) -> list[bytes] | None:
        cache, plan, lookup = self.core.cache, before.plan, before.lookup
        if cache is None or self._cache is None or plan is None or lookup is None or \
                plan.invalidate:
            return None
        entry, before.lookup = self._cache.resolve(plan, lookup)
        if entry is None:
            return None
        status, headers, body = cache.hit(plan, entry, head)
        start_response(status_line(status), [*headers, *extra])
        return [body]

    def _compute(self, environ: dict[str, Any], start_response: Any, before: Before,
                 extra: list[tuple[str, str]], head: bool) -> Iterable[bytes]:
        cache, plan, session = self.core.cache, before.plan, before.session
        https = environ.get("wsgi.url_scheme") == "https"
        capture = None
        if cache is not None and plan is not None and not plan.invalidate:
            entry = before.lookup.entry if before.lookup else None
            stale = entry if cache.usable_if_error(entry, time.time()) else None
            capture = Capture(cache, plan, before.lookup, stale)
        state = {"failed": False, "stale": False}

        def serve_stale() -> list[bytes]:
            assert cache is not None and plan is not None and capture is not None
            assert capture.stale is not None
            status, headers, body = cache.hit(plan, capture.stale, head)
            start_response(status_line(status), [*headers, *extra])
            return [body]

        def stack_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            code = int(status.split(" ", 1)[0])
            if capture is not None and capture.stale is not None and code >= 500:
                state["stale"] = True  # stale-if-error: the stored copy answers instead
                return lambda data: None
            if session is not None and session.unavailable_raised and code == 500:
                state["failed"] = True
                return self._unavailable(start_response, exc_info)
            headers = list(headers)
            flows: list[Flow[Any]] = []
            if capture is not None:
                headers += capture.start(code, list(headers), bool(
                    session is not None and session.accessed)) or []
                if not capture.storing:
                    flows.append(capture.finish_flow())
                    capture.lookup = None
            if plan is not None and plan.invalidate and cache is not None and 200 <= code < 400:
                flows.append(cache.invalidate_flow(plan.url))
            if session is not None:
                if session.accessed:
                    _add_vary_cookie(headers)
                assert self.core.sessions is not None and before.incoming is not None
                flows.insert(0, self.core.sessions.save_flow(session, before.incoming, https))
            if flows:
                results = self.redis.run(gather(*flows, return_exceptions=True))
                if session is not None:
                    if isinstance(results[0], RedisMiddlewareError):
                        state["failed"] = True
                        return self._unavailable(start_response, exc_info)
                    if results[0].set_cookie:
                        headers.append(("Set-Cookie", results[0].set_cookie))
            headers += extra  # after the cache saw the response: never stored
            return start_response(status, headers, exc_info)

        try:
            app_iter = self.app(environ, stack_start_response)
        except SessionUnavailableError:
            self._unavailable(start_response)
            return [_body_of_503()]
        except Exception:
            if capture is None or capture.stale is None:
                raise
            if capture.lookup is not None:
                self._quietly(capture.finish_flow())
            return serve_stale()
        return _Body(self, app_iter, capture, state, serve_stale)

    def _unavailable(self, start_response: Any, exc_info: Any = None) -> Any:
        retry_after = str(max(1, round(self.settings.breaker_cooldown)))
        json_response(lambda s, h: start_response(s, h, exc_info), 503, _UNAVAILABLE,
                      [("Retry-After", retry_after)])
        return lambda data: None


def _body_of_503() -> bytes:
    import json

    return json.dumps(_UNAVAILABLE, separators=(",", ":")).encode()


class _Body:
    """The app's body: copied for the cache, replaced by the 503 body, always closed."""

    def __init__(self, middleware: RedisMiddleware, app_iter: Iterable[bytes],
                 capture: Capture | None, state: dict[str, bool],
                 serve_stale: Callable[[], list[bytes]]) -> None:
        self._middleware = middleware
        self._app_iter = app_iter
        self._capture = capture
        self._state = state
        self._serve_stale = serve_stale
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._app_iter:
            if self._state["failed"] or self._state["stale"]:
                break
            if self._capture is not None:
                self._capture.body(chunk, True)
            yield chunk
        if self._state["failed"]:
            yield _body_of_503()
        elif self._state["stale"]:
            yield from self._serve_stale()
        elif self._capture is not None:
            self._capture.body(b"", False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close_iter(self._app_iter)
        finally:
            if self._capture is not None and self._capture.lookup is not None:
                self._middleware._quietly(self._capture.finish_flow())



