"""The least Python that does the stack's work on a session read and an anonymous request.

A measuring instrument, not a middleware: ``bench/run.py --least`` serves it beside the
floor and the stack, to tell how close to the floor any middleware written in Python
can come on this machine, and so how much of the gap is the stack's own design.

On ``GET /me`` with a session cookie and ``GET /hello`` without, it does what the stack
does there, by the shortest path: the cookie checked (the stack's own memoized check),
one round trip through the stack's own client carrying the session's ``HGETALL`` and the
fixed-window script of the rate limit, the session decoded into a plain dict, and the
same four response headers (``Vary: Cookie`` and the rate limit's three). What it leaves
out is all the stack decides besides: sliding the idle expiry, saving changes, the
session mapping's change tracking, presence, the cache's lookup, exempt paths, the
breaker's and the metrics' bookkeeping, a limit reached, Redis failing. Every other
request (the login) goes to the stack itself. :class:`Least` wraps the ASGI stack;
:class:`LeastWsgi` the WSGI one, with :class:`LeastSessions` as Flask's session
interface (``flask.session`` is then the plain dict).
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from typing import Any

from redis_middleware.sansio.flow import Call
from redis_middleware.sansio.ratelimit.core import _FIXED_WINDOW
from redis_middleware.sansio.request import from_environ, from_scope
from redis_middleware.sansio.sessions.cookies import parse_cookies

_PATHS = ("/me", "/hello")


class _Shortest:
    """What both sides share: the stack's parts, and each client's counters."""

    def __init__(self, stack: Any) -> None:
        self.stack, self.app, self.redis = stack, stack.app, stack.redis
        self.sessions, self.limits = stack.core.sessions, stack.core.ratelimit
        self._counters: dict[str, tuple[Any, ...]] = {}  # client address -> keys, args, limit

    def _learn(self, address: str, request: Any) -> tuple[Any, ...]:
        """Once per client: the stack's own rule and keys for ``address``."""
        check = self.limits.prepare(request, lambda: None)
        found = self._counters[address] = (
            check.keys, check.rule.script_args, check.rule.items[0].amount)
        return found


class Least(_Shortest):
    """Serves :data:`_PATHS` by the shortest path; the rest through ``stack``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in _PATHS:
            await self.stack(scope, receive, send)
            return
        cookie = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie = value.decode("latin-1")
        incoming = self.sessions.read_cookie(parse_cookies(cookie) if cookie else {})
        address = scope["client"][0]
        keys, args, limit = self._counters.get(address) or self._learn(
            address, from_scope(scope, None))
        count = _FIXED_WINDOW(keys, args)
        extra = []
        if incoming.session_id is not None:
            key = self.sessions._ref_key(incoming.session_id)[1]
            raw, reply = await self.redis.arun(_round_trip(Call(("HGETALL", key)), count))
            scope["session"] = {f.decode(): json.loads(v) for f, v in raw.items()
                                if f[:1] != b"\x00"}
            extra.append((b"vary", b"Cookie"))
        else:
            (reply,) = await self.redis.arun(_round_trip(count))
        extra += [(b"x-ratelimit-limit", b"%d" % limit),
                  (b"x-ratelimit-remaining", b"%d" % max(0, limit - int(reply[1]))),
                  (b"x-ratelimit-reset", b"%d" % max(1, math.ceil(int(reply[2]) / 1000)))]

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class LeastWsgi(_Shortest):
    """:class:`Least` for WSGI: the session goes to Flask through :class:`LeastSessions`."""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if environ.get("PATH_INFO") not in _PATHS:
            return self.stack(environ, start_response)
        cookie = environ.get("HTTP_COOKIE")
        incoming = self.sessions.read_cookie(parse_cookies(cookie) if cookie else {})
        address = environ.get("REMOTE_ADDR", "")
        keys, args, limit = self._counters.get(address) or self._learn(
            address, from_environ(environ))
        count = _FIXED_WINDOW(keys, args)
        extra = []
        if incoming.session_id is not None:
            key = self.sessions._ref_key(incoming.session_id)[1]
            raw, reply = self.redis.run(_round_trip(Call(("HGETALL", key)), count))
            environ[LEAST_SESSION] = {f.decode(): json.loads(v) for f, v in raw.items()
                                      if f[:1] != b"\x00"}
            extra.append(("Vary", "Cookie"))
        else:
            (reply,) = self.redis.run(_round_trip(count))
            environ[LEAST_SESSION] = {}
        extra += [("X-RateLimit-Limit", str(limit)),
                  ("X-RateLimit-Remaining", str(max(0, limit - int(reply[1])))),
                  ("X-RateLimit-Reset", str(max(1, math.ceil(int(reply[2]) / 1000))))]

        def with_headers(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, with_headers)


LEAST_SESSION = "bench.least.session"


def least_sessions() -> Any:
    """Flask's session interface for :class:`LeastWsgi`: the plain dict it put in the
    environ, never saved; the stack's own interface for every other request."""
    from flask.sessions import SessionMixin

    from redis_middleware.flask import RedisSessionInterface

    class LeastSession(dict[str, Any], SessionMixin):
        pass

    class LeastSessions(RedisSessionInterface):
        def open_session(self, app: Any, request: Any) -> Any:
            data = request.environ.get(LEAST_SESSION)
            return super().open_session(app, request) if data is None else LeastSession(data)

        def save_session(self, app: Any, session: Any, response: Any) -> None:
            if not isinstance(session, LeastSession):
                super().save_session(app, session, response)

    return LeastSessions()


def _round_trip(*calls: Call) -> Generator[tuple[Call, ...], list[Any], list[Any]]:
    return (yield calls)
