"""The WSGI stacks under test: one Flask app, wrapped per ``BENCH_STACK`` (same endpoints
as the ASGI app)."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, session

STACK = os.environ.get("BENCH_STACK", "bare")
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
if os.environ.get("BENCH_METRICS"):  # the "stack+metrics" stack: Prometheus recording on
    from redis_middleware import prometheus

    prometheus.enable()
LIMIT = "1000000/minute"
SECRET = "bench-secret-" + "x" * 40


def build() -> Any:
    app = Flask(__name__)
    app.secret_key = SECRET
    cached: Any = lambda f: f  # noqa: E731

    if STACK == "peer-ratelimit":  # Flask-Limiter alone
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address

        Limiter(get_remote_address, app=app, default_limits=[LIMIT], storage_uri=URL,
                headers_enabled=True)
    if STACK == "peer-cache":  # Flask-Caching alone
        from flask_caching import Cache

        cached = Cache(app, config={"CACHE_TYPE": "RedisCache",
                                    "CACHE_REDIS_URL": URL}).cached(timeout=60)
    if STACK == "peers":
        import redis
        from flask_caching import Cache
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address
        from flask_session import Session

        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.from_url(URL),
                          SESSION_PERMANENT=True)
        Session(app)
        Limiter(get_remote_address, app=app, default_limits=[LIMIT], storage_uri=URL,
                headers_enabled=True)
        cache = Cache(app, config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": URL})
        cached = cache.cached(timeout=60)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.post("/login")
    def login() -> dict[str, bool]:
        if hasattr(session, "regenerate"):
            session.regenerate()
        session.update({"user_id": "u42", "name": "Ada", "role": "admin"})
        return {"ok": True}

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"user": session.get("user_id"), "name": session.get("name")}

    @app.get("/item/<int:item_id>")
    @cached
    def item(item_id: int) -> dict[str, Any]:
        time.sleep(0.002)  # the database
        return {"id": item_id, "name": f"item {item_id}", "price": 9.5}

    if STACK in ("ours", "stack", "least"):
        from redis_middleware import Settings
        from redis_middleware.flask import RedisSessionInterface
        from redis_middleware.wsgi import (
            CacheMiddleware,
            PresenceMiddleware,
            RateLimitMiddleware,
            RedisMiddleware,
            SessionMiddleware,
        )

        settings = Settings(redis_url=URL, secret_key=SECRET, key_prefix="rmw")
        routes = {"/item/{id}": 60}
        app.session_interface = RedisSessionInterface()
        if STACK == "stack":
            app.wsgi_app = RedisMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, settings, limit=LIMIT, key="ip", routes=routes)
            return app
        if STACK == "least":  # bench/stacks/least.py; the login goes through the stack
            from least import LeastWsgi, least_sessions

            app.session_interface = least_sessions()
            app.wsgi_app = LeastWsgi(RedisMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, settings, limit=LIMIT, key="ip", routes=routes))
            return app
        wrapped: Any = CacheMiddleware(app.wsgi_app, settings, routes=routes)
        wrapped = RateLimitMiddleware(wrapped, settings, limit=LIMIT, key="ip")
        wrapped = PresenceMiddleware(wrapped, settings)
        app.wsgi_app = SessionMiddleware(wrapped, settings)  # type: ignore[method-assign]
        return app
    if STACK in ("our-ratelimit", "our-cache"):
        from redis_middleware import Settings
        from redis_middleware.wsgi import CacheMiddleware, RateLimitMiddleware

        settings = Settings(redis_url=URL, secret_key=SECRET, key_prefix="rmw")
        if STACK == "our-ratelimit":
            app.wsgi_app = RateLimitMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, settings, limit=LIMIT, key="ip")
        else:
            app.wsgi_app = CacheMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, settings, routes={"/item/{id}": 60})
        return app
    if STACK == "floor":
        from redis_middleware import Settings
        from redis_middleware._redis.connections import connections_for
        from redis_middleware.sansio.flow import Call

        # Exactly one round trip per request through the client our middleware uses.
        conns = connections_for(Settings(redis_url=URL, secret_key=SECRET, key_prefix="rmw"))
        inner = app.wsgi_app

        def one_get() -> Any:
            return (yield (Call.of("GET", "bench:floor"),))

        def floor(environ: Any, start_response: Any) -> Any:
            conns.run(one_get())
            return inner(environ, start_response)

        app.wsgi_app = floor  # type: ignore[method-assign]
        return app
    if STACK in ("bare", "peers", "peer-ratelimit", "peer-cache"):
        return app
    raise SystemExit(f"unknown BENCH_STACK {STACK!r}")


app = build()
