"""Apps served by real worker processes in tests/test_workers.py (settings from env)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from redis_middleware import Settings
from redis_middleware.asgi._http import answer_lifespan

OPTIONS: dict[str, Any] = {
    "rules": {"/hit": "20/minute"},
    "key": "ip",
    "routes": {"/slow": 60, "/swr": 60},
    "presence_heartbeat_interval": 0.2,
}
settings = Settings.from_env()
calls_key = f"{settings.key_prefix}:cache:{{calls}}:slow"
swr_key = f"{settings.key_prefix}:cache:{{calls}}:swr"
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
if os.environ.get("WORKER_READY_DIR"):  # this worker has loaded the app: tell the test
    open(os.path.join(os.environ["WORKER_READY_DIR"], str(os.getpid())), "w").close()


def _count_call(key: str = calls_key) -> int:
    n = int(_redis.incr(key))
    _redis.expire(key, 60)
    return n


def _handle(path: str, session: Any, query: str = "") -> tuple[int, Any]:
    if path in ("/put", "/slowput"):  # sets ?k=v; /slowput reads first, then takes 0.6 s
        key, _, value = query.partition("=")
        session.get(key)
        if path == "/slowput":
            time.sleep(0.6)
        session[key] = value
        return 200, {"pid": os.getpid()}
    if path == "/hit":
        return 200, {"pid": os.getpid()}
    if path == "/login":
        session.regenerate()
        session["user_id"] = "worker-user"
        return 200, {"pid": os.getpid()}
    if path == "/get":
        return 200, {"pid": os.getpid(), "session": dict(session)}
    if path == "/slow":
        time.sleep(0.5)
        return 200, {"calls": _count_call()}
    if path == "/swr":  # fresh for 2 s, then served stale while one worker refreshes (1 s)
        time.sleep(1.0)
        return 200, {"calls": _count_call(swr_key)}
    return 404, {}


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    status, payload = _handle(environ["PATH_INFO"], environ.get("redis_middleware.session"),
                              environ.get("QUERY_STRING", ""))
    body = json.dumps(payload).encode()
    start_response(f"{status} X", [("Content-Type", "application/json"), *_cache(environ[
        "PATH_INFO"])])
    return [body]


def _cache(path: str) -> list[tuple[str, str]]:
    return [("Cache-Control", "max-age=2, stale-while-revalidate=30")] if path == "/swr" else []


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    query = scope.get("query_string", b"").decode()
    if scope["path"] in ("/slow", "/slowput", "/swr"):  # the sync sleep would block: in a thread
        import anyio

        status, payload = await anyio.to_thread.run_sync(
            _handle, scope["path"], scope.get("session"), query)
    else:
        status, payload = _handle(scope["path"], scope.get("session"), query)
    body = json.dumps(payload).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in _cache(scope["path"])]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *extra]})
    await send({"type": "http.response.body", "body": body})


def _build() -> tuple[Any, Any]:
    from redis_middleware.asgi import RedisMiddleware as AsgiStack
    from redis_middleware.wsgi import RedisMiddleware as WsgiStack

    return AsgiStack(_asgi, settings, **OPTIONS), WsgiStack(wsgi_app, settings, **OPTIONS)


asgi, wsgi = _build()
