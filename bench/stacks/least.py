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
request (the login) goes to the stack itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from typing import Any

from redis_middleware.sansio.flow import Call
from redis_middleware.sansio.ratelimit.core import _FIXED_WINDOW
from redis_middleware.sansio.request import from_scope
from redis_middleware.sansio.sessions.cookies import parse_cookies

_PATHS = ("/me", "/hello")


class Least:
    """Serves :data:`_PATHS` by the shortest path; the rest through ``stack``."""

    def __init__(self, stack: Any) -> None:
        self.stack, self.app, self.redis = stack, stack.app, stack.redis
        self.sessions, self.limits = stack.core.sessions, stack.core.ratelimit
        self._counters: dict[str, tuple[Any, ...]] = {}  # client address -> keys, args, limit

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
        counters = self._counters.get(address)
        if counters is None:  # once per client: the stack's own rule and keys
            check = self.limits.prepare(from_scope(scope, None), lambda: None)
            counters = self._counters[address] = (
                check.keys, check.rule.script_args, check.rule.items[0].amount)
        keys, args, limit = counters
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


def _round_trip(*calls: Call) -> Generator[tuple[Call, ...], list[Any], list[Any]]:
    return (yield calls)
