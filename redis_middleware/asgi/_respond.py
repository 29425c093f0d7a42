"""Runs an app under an :class:`~redis_middleware.sansio.exchange.Exchange` (ASGI side).

Only translation: ASGI messages in, the exchange's decisions out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import RedisConnections
from ..sansio.cache import CONDITIONAL
from ..sansio.exchange import Exchange
from ..sansio.flow import step
from ..sansio.incidents import log_incident
from ..sansio.responses import Headers, Response

__all__ = ["refresh", "refuse", "respond", "respond_socket", "send_response", "with_conditional"]

_REFRESHING: set[asyncio.Task[None]] = set()  # held so a running refresh is not collected

_NOTHING_SENT, _PASSED, _REPLACED = 0, 1, 2


async def send_response(send: ASGISendCallable, response: Response,
                        raw: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a whole response (``raw``: its headers already encoded)."""
    await send({"type": "http.response.start", "status": response.status,
                "headers": response.raw_headers() if raw is None else raw, "trailers": False})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def refuse(send: ASGISendCallable, response: Response, reason: str, http: bool) -> None:
    """Send a refusal: ``response``, or for a WebSocket a close (1008) with ``reason``.

    The socket is accepted first: a close before the handshake ends is answered by the
    server with an HTTP 403, in which a browser sees neither the code nor the reason
    (only 1006)."""
    if http:
        await send_response(send, response)
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await send({"type": "websocket.close", "code": 1008, "reason": reason})


async def respond_socket(app: Any, scope: Scope, receive: ASGIReceiveCallable,
                         send: ASGISendCallable, exchange: Exchange, redis: RedisConnections,
                         presence: Any = None, user: str | None = None) -> None:
    """Call ``app`` for a WebSocket (under ``presence``'s lease when the user is known);
    ``exchange``'s finish flow runs when the socket ends."""
    if user is not None and presence is not None:
        await presence.websocket(scope, receive, send, user)
    else:
        await app(scope, receive, send)
    flow = exchange.finish_flow()
    done, first = step(flow)
    if not done:
        await redis.arun(flow, first)


class _Decoded(Sequence[tuple[str, str]]):
    """The app's ASGI headers as text, decoded only if a part reads them (most responses
    of a request whose session was not read, on an uncached route, are never decoded)."""

    __slots__ = ("_raw", "_text")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._text: list[tuple[str, str]] | None = None

    def _decoded(self) -> list[tuple[str, str]]:
        if self._text is None:
            self._text = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]
        return self._text

    def values_of(self, name: str) -> list[str]:
        """The values of one header, decoding only those."""
        raw = name.encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == raw]

    def __getitem__(self, index: Any) -> Any:
        return self._decoded()[index]

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._decoded())


async def respond(app: Any, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                  exchange: Exchange, redis: RedisConnections) -> None:
    """Call ``app``; its response goes out as ``exchange`` decides."""
    state = _NOTHING_SENT
    watching = exchange.watches_body

    async def send_wrapper(message: Any) -> None:
        nonlocal state
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", ())
            flow = exchange.start_flow(message["status"], _Decoded(headers))
            done, reply = step(flow)
            if not done:
                reply = await redis.arun(flow, reply)
            if reply.replace is not None:
                state = _REPLACED
                await send_response(send, reply.replace)
                return
            state = _PASSED
            message = {**message, "headers": reply.apply_raw(headers)}
        elif state == _REPLACED:
            return  # the app's body is replaced by the response already sent
        elif kind == "http.response.body" and watching:
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
        if watching:
            finish = exchange.finish_flow()
            done, first = step(finish)
            if not done:
                await redis.arun(finish, first)


def with_conditional(scope: Any, fields: Headers) -> Any:
    """The scope the app sees when the cache revalidates: the client's conditional
    fields replaced by ``fields`` (the scope itself when there are none)."""
    if not fields:
        return scope
    kept = [(k, v) for k, v in scope.get("headers", ()) if k.lower().decode(
        "latin-1") not in CONDITIONAL]
    added = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields]
    return {**scope, "headers": [*kept, *added]}


def _no_body() -> Any:
    """The ``receive`` of a background refresh: an empty request body, then nothing
    (the app may listen for a disconnect; none comes while it answers)."""
    sent = False

    async def receive() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # until the app stops listening (cancelled)

    return receive


async def _discard(message: Any) -> None:
    """The ``send`` of a background refresh: the client has its answer already."""


def refresh(app: Any, scope: Scope, exchange: Exchange, redis: RedisConnections) -> None:
    """Run ``app`` again in the background for a GET of this URL, under ``exchange``
    (stale-while-revalidate: the client was served the stale entry)."""
    background = with_conditional({**scope, "method": "GET"}, exchange.conditional)

    async def run() -> None:
        try:
            await respond(app, background, _no_body(), _discard, exchange, redis)
        except Exception as exc:  # the app's own error: nobody is waiting for this answer
            log_incident("cache-refresh", "background refresh failed: %r", exc)

    task = asyncio.get_running_loop().create_task(run())
    _REFRESHING.add(task)
    task.add_done_callback(_REFRESHING.discard)
