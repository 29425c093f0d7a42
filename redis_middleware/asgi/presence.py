"""Presence for ASGI apps: heartbeats from HTTP and WebSocket traffic, queries, events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import connections_for
from .._tasks import Every, finish
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.incidents import log_failure
from ..sansio.presence import EventFeed, PresenceCore, PresenceEvent
from ..sansio.request import from_scope, scope_user

__all__ = ["Presence", "PresenceMiddleware"]

logger = logging.getLogger("redis_middleware.presence")


class Presence:
    """Who is online (async).

    Example::

        presence = Presence(settings)
        await presence.heartbeat("42")
        await presence.online_count()
        async for event in presence.events():   # {"user", "status", "reason", "seq", ...}
            ...

    ``room`` scopes every call (default: the site-wide room).
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "presence", options)
        self.core = PresenceCore(self.settings)
        self.redis = connections_for(self.settings)

    async def heartbeat(self, user_id: str, *, room: str = "", conn: str = "http") -> bool:
        """Renew ``user_id``'s lease; True when they came online."""
        return await self.redis.arun(self.core.heartbeat_flow(str(user_id), conn, room))

    async def is_online(self, user_id: str, *, room: str = "") -> bool:
        return await self.redis.arun(self.core.is_online_flow(str(user_id), room))

    async def online_users(self, *, room: str = "", offset: int = 0,
                           limit: int | None = None) -> list[str]:
        """Online users in id order, paged with ``offset``/``limit``."""
        return await self.redis.arun(self.core.online_users_flow(room, offset, limit))

    async def online_count(self, *, room: str = "") -> int:
        return await self.redis.arun(self.core.online_count_flow(room))

    async def last_seen(self, user_id: str, *, room: str = "") -> float | None:
        """Epoch seconds of the user's last activity (kept after they go offline)."""
        return await self.redis.arun(self.core.last_seen_flow(str(user_id), room))

    async def remove(self, user_id: str, *, room: str = "") -> bool:
        """Take the user offline at once (logout); True when they were online."""
        self.core.forget(str(user_id), room)
        return await self.redis.arun(self.core.release_flow(str(user_id), "", room))

    async def sweep(self, *, room: str = "") -> int:
        """Publish 'offline' for users whose leases ran out (-1: another worker just did)."""
        return await self.redis.arun(self.core.sweep_flow(secrets.token_hex(8), room))

    async def events(self, timeout: float | None = None) -> AsyncIterator[PresenceEvent]:
        """Online/offline events as they are published; resubscribes after Redis failures;
        stops after ``timeout`` seconds without an event (None: never)."""
        feed = EventFeed(self.core.channel, timeout)
        while not feed.done():
            pubsub = self.redis.pubsub(asyncio_client=True)
            try:
                await pubsub.subscribe(feed.channel)
                while not feed.done():
                    event = feed.event(await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=feed.wait()))
                    if event is not None:
                        yield event
            except Exception as exc:
                if not feed.recoverable(exc):
                    raise
                await asyncio.sleep(feed.retry)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


class PresenceMiddleware:
    """Records a throttled heartbeat for each request by an identified user.

    The user comes from the session's ``user_field`` (put ``SessionMiddleware``
    outside this one) or ``scope["user"]``. A WebSocket holds its own lease while
    open, released with a grace period at disconnect. A background sweeper (started
    with the app's lifespan) publishes 'offline' when leases run out.

    Example::

        app = SessionMiddleware(PresenceMiddleware(app, settings), settings)
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.presence = Presence(settings, **options)
        self.settings = self.presence.settings
        self.core = self.presence.core
        self._sweeper: Every | None = None
        # A cancelled sweep or renewal ends when its round trip does: within the
        # connect and socket timeouts; one still running a second later is stuck.
        self._stop_within = self.settings.connect_timeout + self.settings.socket_timeout + 1.0

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self.watch_lifespan(receive), send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        user = self.core.identity(scope_user(scope, self.settings.user_field),
                                  lambda: from_scope(scope, None))
        # A due sweep and (for HTTP) a due heartbeat share one round trip.
        flow = self.core.request_flow(user if scope["type"] == "http" else None)
        if flow is not None:
            await self._safely(self.presence.redis.arun(flow))
        if user is None or scope["type"] == "http":
            await self.app(scope, receive, send)
        else:
            await self.websocket(scope, receive, send, user)

    async def _safely(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisMiddlewareError as exc:
            log_failure("presence", "presence skipped: %s", exc)
            return None

    async def websocket(self, scope: Scope, receive: ASGIReceiveCallable,
                         send: ASGISendCallable, user: str) -> None:
        """Run a WebSocket connection of ``user``: a lease while it lasts, renewed."""
        conn = "ws:" + secrets.token_hex(8)
        interval = self.settings.presence_heartbeat_interval
        last = 0.0

        async def renew() -> None:
            nonlocal last
            last = time.monotonic()
            await self._safely(self.presence.heartbeat(user, conn=conn))

        async def renewing_receive() -> Any:
            message = await receive()
            if message["type"] in ("websocket.connect", "websocket.receive") and (
                    time.monotonic() - last >= interval or message["type"] == "websocket.connect"):
                await renew()
            return message

        async def leave() -> None:  # run to its end, even if this handler is cancelled
            await renewal.stop(self._stop_within)
            await self._safely(self.presence.redis.arun(self.core.release_flow(user, conn)))

        renewal = Every(interval, renew, "presence renewal")
        try:
            await self.app(scope, renewing_receive, send)
        finally:
            await finish(leave())

    def watch_lifespan(self, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
        """A ``receive`` that starts the sweeper at startup and stops it at shutdown."""
        async def watching() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup" and self._sweeper is None:
                self._sweeper = Every(self.settings.presence_sweep_interval, self._sweep,
                                      "presence sweeper")
            elif message["type"] == "lifespan.shutdown" and self._sweeper is not None:
                sweeper, self._sweeper = self._sweeper, None
                await sweeper.stop(self._stop_within)
            return message

        return watching

    async def _sweep(self) -> None:
        self.core.mark_swept()
        await self._safely(self.presence.sweep())
