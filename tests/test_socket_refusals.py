"""A refused WebSocket under a real server: the browser must see the code and the reason,
which a close before the handshake ends loses (servers answer it with an HTTP 403)."""

from __future__ import annotations

from typing import Any

import pytest

from redis_middleware import Settings

from .support.clients import make_settings


def limited_socket_app() -> Any:
    """A WebSocket app under a 1-per-minute limit, settings from the environment (for
    ``uvicorn --factory``; the server's readiness probe, /health, is exempt)."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from redis_middleware.asgi import RateLimitMiddleware

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    return RateLimitMiddleware(Starlette(routes=[WebSocketRoute("/ws", ws)]),
                               Settings.from_env(), limit="1/minute", exempt=["/health"])


@pytest.mark.real_redis
def test_a_limited_socket_sees_1008_and_the_reason_under_a_real_server(
    redis_server: Any, tmp_path: Any
) -> None:
    """uvicorn answers a close before the handshake ends with an HTTP 403, which a
    browser reports as 1006: the limited socket is accepted, then closed with 1008."""
    import asyncio

    import websockets

    from .support.clients import SECRET
    from .support.servers import Served

    settings = make_settings(redis_server.url)
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}

    async def twice(port: int) -> tuple[str, int | None, str]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as socket:
            first = await asyncio.wait_for(socket.recv(), 10)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 10)
        rcvd = closed.value.rcvd
        return str(first), None if rcvd is None else rcvd.code, "" if rcvd is None else (
            rcvd.reason)

    command = ["uvicorn", "--port", "{port}", "--factory",
               "tests.test_socket_refusals:limited_socket_app"]
    with Served(command, env, tmp_path / "uvicorn.log") as srv:
        first, code, reason = asyncio.run(twice(srv.port))
    assert first == "hi"
    assert code == 1008 and "Rate limit exceeded" in reason
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()
