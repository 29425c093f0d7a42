"""``RedisMiddleware`` for ASGI: sessions, rate limiting, caching and presence in one line."""

from __future__ import annotations

import time
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.breaker import log_incident
from .._redis.connections import connections_for
from .._redis.strategies import LimitsStrategy
from ..errors import RedisMiddlewareError, SessionUnavailableError
from ..sansio.cache import Capture, encode_headers
from ..sansio.flow import Flow, gather
from ..sansio.request import from_scope
from ..sansio.stack import Before, StackCore, resolve_stack_settings
from ..settings import Settings
from ._http import (
    add_vary_cookie,
    raw_header,
    request_cookies,
    response_headers,
    send_json,
    with_headers,
)
from .cache import CacheMiddleware, _decode
from .presence import PresenceMiddleware
from .ratelimit import RateLimitMiddleware, _raw
from .sessions import SessionMiddleware

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
        # The single components serve the rarer paths (websockets, lifespan, helpers).
        self._sessions = SessionMiddleware(app, s) if self.core.sessions else None
        self._limiter = RateLimitMiddleware(app, s) if self.core.ratelimit else None
        self._cache = CacheMiddleware(app, s) if self.core.cache else None
        self._presence = PresenceMiddleware(app, s) if self.core.presence else None
        self._strategy = (LimitsStrategy(self.core.ratelimit, self.redis)
                          if self.core.ratelimit and not self.core.fixed_window else None)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan" and self._presence is not None:
            await self.app(scope, self._presence._watch_lifespan(receive), send)
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
            request, request_cookies(scope),
            request.user, http))
        if before.session is not None:
            scope["session"] = before.session  # type: ignore[typeddict-unknown-key]
        decision = before.decision
        if before.check is not None and self._strategy is not None:
            try:
                decision = await self._strategy.acheck(before.check)
            except RedisMiddlewareError:
                decision = self.core.ratelimit.unavailable(before.check)  # type: ignore[union-attr]
        if decision is not None and not decision.allowed:
            await self._release(before)
            assert self._limiter is not None
            await self._limiter.reject(scope, send, decision)
            return
        extra = _raw(decision.headers) if decision is not None else []
        if not http:
            await self._websocket(scope, receive, send, before)
        elif not await self._from_cache(send, before, extra, scope.get("method") == "HEAD"):
            await self._compute(scope, receive, send, before, extra)

    async def _release(self, before: Before) -> None:
        if before.lookup is not None and before.plan is not None and self.core.cache:
            await self._quietly(self.core.cache.release_flow(before.plan, before.lookup))

    async def _quietly(self, flow: Flow[Any]) -> Any:
        try:
            return await self.redis.arun(flow)
        except RedisMiddlewareError as exc:
            log_incident("stack", "redis-middleware skipped a write: %s", exc)
            return None

    async def _from_cache(self, send: ASGISendCallable, before: Before,
                          extra: list[tuple[bytes, bytes]], head: bool) -> bool:
        cache, plan, lookup = self.core.cache, before.plan, before.lookup
        if cache is None or self._cache is None or plan is None or lookup is None or \
                plan.invalidate:
            return False
        entry, before.lookup = await self._cache.resolve(plan, lookup)
        if entry is None:
            return False
        status, headers, body = cache.hit_raw(plan, entry, head)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, *extra], "trailers": False})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    async def _compute(self, scope: Scope, receive: ASGIReceiveCallable, app_send: ASGISendCallable,
                       before: Before, extra: list[tuple[bytes, bytes]]) -> None:
        # The app's response gets ``extra`` (rate-limit headers) in send_wrapper; what
        # the stack answers itself (a 503, a stale entry) gets them through ``send``.
        send = with_headers(app_send, extra)
        cache, plan, session = self.core.cache, before.plan, before.session
        https = scope.get("scheme") == "https"
        capture = None
        if cache is not None and plan is not None and not plan.invalidate:
            entry = before.lookup.entry if before.lookup else None
            stale = entry if cache.usable_if_error(entry, time.time()) else None
            capture = Capture(cache, plan, before.lookup, stale)
        started = failed = use_stale = False

        async def send_wrapper(message: Any) -> None:
            nonlocal started, failed, use_stale
            if message["type"] == "http.response.start":
                if capture is not None and capture.stale is not None and message["status"] >= 500:
                    use_stale = True  # stale-if-error: the stored copy answers instead
                    return
                started = True
                if session is not None and session.unavailable_raised and \
                        message["status"] == 500:
                    failed = True
                    await self._unavailable(send)
                    return
                headers = response_headers(message)
                flows: list[Flow[Any]] = []
                if capture is not None:
                    added = capture.start(message["status"], _decode(headers),
                                          session is not None and session.accessed)
                    headers += encode_headers(added or [])
                    if not capture.storing:  # decided now: free the guard with the rest
                        flows.append(capture.finish_flow())
                        capture.lookup = None
                if plan is not None and plan.invalidate and cache is not None and \
                        200 <= message["status"] < 400:
                    flows.append(cache.invalidate_flow(plan.url))
                if session is not None:
                    if session.accessed:
                        add_vary_cookie(headers)
                    assert self.core.sessions is not None and before.incoming is not None
                    flows.insert(0, self.core.sessions.save_flow(session, before.incoming, https))
                if flows:
                    results = await self.redis.arun(gather(*flows, return_exceptions=True))
                    if session is not None:
                        saved = results[0]
                        if isinstance(saved, RedisMiddlewareError):
                            failed = True
                            await self._unavailable(send)
                            return
                        if saved.set_cookie:
                            headers.append(raw_header("set-cookie", saved.set_cookie))
                headers += extra  # after the cache saw the response: never stored
            elif failed or use_stale:
                return
            elif message["type"] == "http.response.body" and capture is not None:
                capture.body(message.get("body", b""), message.get("more_body", False))
            await app_send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except SessionUnavailableError:
            if not started:
                await self._unavailable(send)
            elif not failed:
                raise
        except Exception:
            if capture is None or capture.stale is None or started:
                raise
            use_stale = True
        finally:
            if capture is not None and capture.lookup is not None:
                await self._quietly(capture.finish_flow())
        if use_stale and capture is not None and capture.stale is not None and cache and plan:
            status, headers, body = cache.hit_raw(plan, capture.stale,
                                                  scope.get("method") == "HEAD")
            await send({"type": "http.response.start", "status": status,
                        "headers": headers, "trailers": False})
            await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _unavailable(self, send: ASGISendCallable) -> None:
        retry_after = str(max(1, round(self.settings.breaker_cooldown)))
        await send_json(send, 503, {"detail": "Session store unavailable, retry shortly."},
                        [raw_header("retry-after", retry_after)])

    async def _websocket(self, scope: Scope, receive: ASGIReceiveCallable,
                         send: ASGISendCallable, before: Before) -> None:
        if before.user is not None and self._presence is not None:
            await self._presence._websocket(scope, receive, send, before.user)
        else:
            await self.app(scope, receive, send)
        session = before.session
        if session is not None and session.exists and self._sessions is not None:
            assert before.incoming is not None
            await self._quietly(self.core.sessions.save_flow(  # type: ignore[union-attr]
                session, before.incoming, False))
