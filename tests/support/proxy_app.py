"""A per-IP limited app served by a real uvicorn in tests/test_front_proxies.py."""

from __future__ import annotations

from typing import Any

from redis_middleware import Settings
from redis_middleware.asgi import RedisMiddleware
from redis_middleware.asgi._http import answer_lifespan


async def _peer(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    host = (scope.get("client") or ("?", 0))[0]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": host.encode()})


app = RedisMiddleware(_peer, Settings.from_env(), limit="3/minute", key="ip",
                      session_enabled=False, presence_enabled=False)
