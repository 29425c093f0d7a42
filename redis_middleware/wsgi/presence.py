"""Presence for WSGI apps: heartbeats from HTTP traffic, queries, events."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.incidents import log_failure
from ..sansio.presence import EventFeed, PresenceCore, PresenceEvent
from ..sansio.request import environ_user, from_environ

__all__ = ["Presence", "PresenceMiddleware"]


class Presence:
    """Who is online (sync); the same methods as the async ``asgi.Presence``."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "presence", options)
        self.core = PresenceCore(self.settings)
        self.redis = connections_for(self.settings)

    def heartbeat(self, user_id: str, *, room: str = "", conn: str = "http") -> bool:
        """Renew ``user_id``'s lease; True when they came online."""
        return self.redis.run(self.core.heartbeat_flow(str(user_id), conn, room))

    def is_online(self, user_id: str, *, room: str = "") -> bool:
        return self.redis.run(self.core.is_online_flow(str(user_id), room))

    def online_users(self, *, room: str = "", offset: int = 0,
                     limit: int | None = None) -> list[str]:
        """Online users in id order, paged with ``offset``/``limit``."""
        return self.redis.run(self.core.online_users_flow(room, offset, limit))

    def online_count(self, *, room: str = "") -> int:
        return self.redis.run(self.core.online_count_flow(room))

    def last_seen(self, user_id: str, *, room: str = "") -> float | None:
        """Epoch seconds of the user's last activity (kept after they go offline)."""
        return self.redis.run(self.core.last_seen_flow(str(user_id), room))

    def remove(self, user_id: str, *, room: str = "") -> bool:
        """Take the user offline at once (logout); True when they were online."""
        self.core.forget(str(user_id), room)
        return self.redis.run(self.core.release_flow(str(user_id), "", room))

    def sweep(self, *, room: str = "") -> int:
        """Publish 'offline' for users whose leases ran out (-1: another worker just did)."""
        return self.redis.run(self.core.sweep_flow(secrets.token_hex(8), room))

    def events(self, timeout: float | None = None) -> Iterator[PresenceEvent]:
        """Online/offline events as they are published; resubscribes after Redis failures;
        stops after ``timeout`` seconds without an event (None: never)."""
        feed = EventFeed(self.core.channel, timeout)
        while not feed.done():
            pubsub = self.redis.pubsub(asyncio_client=False)
            try:
                pubsub.subscribe(feed.channel)
                while not feed.done():
                    event = feed.event(pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=feed.wait()))
                    if event is not None:
                        yield event
            except Exception as exc:
                if not feed.recoverable(exc):
                    raise
                time.sleep(feed.retry)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()


class PresenceMiddleware:
    """Records a throttled heartbeat for each request by an identified user (WSGI).

    The user comes from the session's ``user_field`` (put ``SessionMiddleware``
    outside this one) or ``REMOTE_USER``. A daemon thread sweeps expired leases (started
    by the first request; :meth:`close` stops it).
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.presence = Presence(settings, **options)
        self.settings = self.presence.settings
        self.core = self.presence.core
        self._forked()
        _live.add(self)

    def _forked(self) -> None:
        """The sweeper's state as built (and in a forked child: the parent's thread, and
        whoever held the lock, did not come along; the child's first request starts its
        own)."""
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.start_sweeper()
        # A due sweep and a due heartbeat share one round trip.
        flow = self.core.request_flow(self.core.identity(
            environ_user(environ, self.settings.user_field),
            lambda: from_environ(environ)))
        if flow is not None:
            try:
                self.presence.redis.run(flow)
            except RedisMiddlewareError as exc:
                log_failure("presence", "presence skipped: %s", exc)
        result: Iterable[bytes] = self.app(environ, start_response)
        return result

    def start_sweeper(self) -> None:
        """Start the sweeper thread once (the first request does)."""
        if self._sweeper is not None:
            return
        with self._lock:
            if self._sweeper is None:  # sweeps even while no request comes in
                self._stop = threading.Event()
                self._sweeper = threading.Thread(
                    target=_sweep_forever, args=(weakref.ref(self), self._stop), daemon=True,
                    name="redis-middleware-presence-sweeper")
                self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper thread and wait for a sweep in progress (a worker shutting
        down, a test ending); a later request starts it again."""
        with self._lock:
            sweeper, self._sweeper = self._sweeper, None
            self._stop.set()
        if sweeper is not None and sweeper is not threading.current_thread():
            sweeper.join(self.settings.socket_timeout + self.settings.connect_timeout + 1)

    def _sweep_once(self) -> None:
        try:
            self.presence.sweep()
        except RedisMiddlewareError as exc:
            log_failure("presence", "presence sweep skipped: %s", exc)



def _sweep_forever(ref: weakref.ref[PresenceMiddleware], stop: threading.Event) -> None:
    # Holds the middleware weakly: the thread ends once the app is gone, or when closed.
    while (middleware := ref()) is not None:
        interval = middleware.settings.presence_sweep_interval
        del middleware
        if stop.wait(interval):
            return
        middleware = ref()
        if middleware is None:
            return
        middleware.core.mark_swept()
        middleware._sweep_once()
        del middleware


_live: weakref.WeakSet[PresenceMiddleware] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for middleware in list(_live):
        middleware._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
