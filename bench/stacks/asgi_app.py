"""The ASGI stacks under test: one FastAPI app, wrapped per ``BENCH_STACK``.

Endpoints (identical in every stack): ``GET /hello`` (plain JSON), ``POST /login``
(writes 3 session fields), ``GET /me`` (reads the session), ``GET /item/{id}`` (a
simulated 2 ms database call; cached by the stacks that cache).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI, Request

STACK = os.environ.get("BENCH_STACK", "bare")
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
if os.environ.get("BENCH_METRICS"):  # the "stack+metrics" stack: Prometheus recording on
    from redis_middleware import prometheus

    prometheus.enable()
LIMIT = "1000000/minute"  # counted on every request, never reached
SECRET = "bench-secret-" + "x" * 40


def build() -> Any:
    app = FastAPI()
    cached: Any = lambda f: f  # noqa: E731 - replaced by the peers' decorator

    if STACK == "peer-ratelimit":  # slowapi alone
        from slowapi import Limiter
        from slowapi.middleware import SlowAPIMiddleware
        from slowapi.util import get_remote_address

        app.state.limiter = Limiter(key_func=get_remote_address, default_limits=[LIMIT],
                                    storage_uri=URL, headers_enabled=True)
        app.add_middleware(SlowAPIMiddleware)
    if STACK == "peer-cache":  # fastapi-cache2 alone
        from fastapi_cache import FastAPICache
        from fastapi_cache.backends.redis import RedisBackend
        from fastapi_cache.decorator import cache as cache_decorator
        from redis import asyncio as aioredis

        cached = cache_decorator(expire=60)

        @app.on_event("startup")
        async def _cache_only_backend() -> None:
            FastAPICache.init(RedisBackend(aioredis.from_url(URL)), prefix="fastapi-cache")

    if STACK == "peers":
        from fastapi_cache import FastAPICache
        from fastapi_cache.backends.redis import RedisBackend
        from fastapi_cache.decorator import cache
        from redis import asyncio as aioredis
        from slowapi import Limiter
        from slowapi.middleware import SlowAPIMiddleware
        from slowapi.util import get_remote_address
        from starsessions import SessionAutoloadMiddleware, SessionMiddleware
        from starsessions.stores.redis import RedisStore

        limiter = Limiter(key_func=get_remote_address, default_limits=[LIMIT],
                          storage_uri=URL, headers_enabled=True)
        app.state.limiter = limiter
        app.add_middleware(SlowAPIMiddleware)
        app.add_middleware(SessionAutoloadMiddleware)
        app.add_middleware(SessionMiddleware, store=RedisStore(url=URL), lifetime=3600,
                           cookie_https_only=False)
        cached = cache(expire=60)

        @app.on_event("startup")
        async def _cache_backend() -> None:
            FastAPICache.init(RedisBackend(aioredis.from_url(URL)), prefix="fastapi-cache")

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    def session_of(request: Request) -> Any:
        # The stacks without sessions (bare, floor) write to a throwaway dict.
        return request.scope.get("session", {})

    @app.post("/login")
    async def login(request: Request) -> dict[str, bool]:
        session = session_of(request)
        if hasattr(session, "regenerate"):
            session.regenerate()
        session.update({"user_id": "u42", "name": "Ada", "role": "admin"})
        return {"ok": True}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        session = session_of(request)
        return {"user": session.get("user_id"), "name": session.get("name")}

    @app.get("/item/{item_id}")
    @cached
    async def item(item_id: int) -> dict[str, Any]:
        await asyncio.sleep(0.002)  # the database
        return {"id": item_id, "name": f"item {item_id}", "price": 9.5}

    if STACK in ("ours", "stack", "least"):
        from redis_middleware import Settings
        from redis_middleware.asgi import (
            CacheMiddleware,
            PresenceMiddleware,
            RateLimitMiddleware,
            RedisMiddleware,
            SessionMiddleware,
        )

        settings = Settings(redis_url=URL, secret_key=SECRET, key_prefix="rmw")
        routes = {"/item/{id}": 60}
        if STACK == "stack":
            return RedisMiddleware(app, settings, limit=LIMIT, key="ip", routes=routes)
        if STACK == "least":  # bench/stacks/least.py; the login goes through the stack
            from least import Least

            return Least(RedisMiddleware(app, settings, limit=LIMIT, key="ip", routes=routes))
        wrapped: Any = CacheMiddleware(app, settings, routes=routes)
        wrapped = RateLimitMiddleware(wrapped, settings, limit=LIMIT, key="ip")
        wrapped = PresenceMiddleware(wrapped, settings)
        return SessionMiddleware(wrapped, settings)
    if STACK in ("our-ratelimit", "our-cache"):
        from redis_middleware import Settings
        from redis_middleware.asgi import CacheMiddleware, RateLimitMiddleware

        settings = Settings(redis_url=URL, secret_key=SECRET, key_prefix="rmw")
        if STACK == "our-ratelimit":
            return RateLimitMiddleware(app, settings, limit=LIMIT, key="ip")
        return CacheMiddleware(app, settings, routes={"/item/{id}": 60})
    if STACK == "floor":
        return Floor(app)
    if STACK in ("bare", "peers", "peer-ratelimit", "peer-cache"):
        return app
    raise SystemExit(f"unknown BENCH_STACK {STACK!r}")


class Floor:
    """No middleware, but exactly one Redis round trip per request (the physical floor),
    through the client our middleware uses."""

    def __init__(self, app: Any) -> None:
        from redis_middleware import Settings
        from redis_middleware._redis.connections import connections_for

        self.app = app
        self.redis = connections_for(Settings(redis_url=URL, secret_key=SECRET,
                                              key_prefix="rmw"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.redis.arun(_one_get())
        await self.app(scope, receive, send)


def _one_get() -> Any:
    from redis_middleware.sansio.flow import Call

    return (yield (Call.of("GET", "bench:floor"),))


app = build()
