"""Runs an app under an :class:`~redis_middleware.sansio.exchange.Exchange` (ASGI side).

Only translation: ASGI messages in, the exchange's decisions out.
"""

from __future__ import annotations

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import RedisConnections
from ..sansio.exchange import Exchange
from ..sansio.responses import Response

__all__ = ["respond", "send_response"]

_NOTHING_SENT, _PASSED, _REPLACED = 0, 1, 2


async def send_response(send: ASGISendCallable, response: Response,
                        raw: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a whole response (``raw``: its headers already encoded)."""
    await send({"type": "http.response.start", "status": response.status,
                "headers": response.raw_headers() if raw is None else raw, "trailers": False})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


def _decode(headers: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


async def respond(app: Any, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                  exchange: Exchange, redis: RedisConnections) -> None:
    """Call ``app``; its response goes out as ``exchange`` decides."""
    state = _NOTHING_SENT

    async def send_wrapper(message: Any) -> None:
        nonlocal state
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", ())
            reply = await redis.arun(exchange.start_flow(message["status"], _decode(headers)))
            if reply.replace is not None:
                state = _REPLACED
                await send_response(send, reply.replace)
                return
            state = _PASSED
            message = {**message, "headers": reply.apply_raw(headers)}
        elif state == _REPLACED:
            return  # the app's body is replaced by the response already sent
        elif kind == "http.response.body":
            exchange.body(message.get("body", b""), message.get("more_body", False))
        await send(message)

    try:
        await app(scope, receive, send_wrapper)
    except Exception as exc:
        response = exchange.on_app_error(exc, state == _PASSED)
        if response is None:
            raise
        if state == _NOTHING_SENT:
            await send_response(send, response)
    finally:
        await redis.arun(exchange.finish_flow())
