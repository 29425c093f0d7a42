"""Real-time publishing for sync apps (WSGI views, workers, scripts): the messages reach
the subscribers of every asyncio process (``redis_middleware.asgi.Broadcast``)."""

from __future__ import annotations

from typing import Any

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..sansio.realtime.core import Published, RealtimeCore
from ..sansio.realtime.messages import Message

__all__ = ["Broadcast"]


class Broadcast:
    """Publish to rooms from sync code (subscribing needs an event loop: use
    :class:`redis_middleware.asgi.Broadcast`).

    Example::

        broadcast = Broadcast(settings)
        broadcast.publish("room:123", {"text": "Hello!"})
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "realtime", options)
        self.core = RealtimeCore(self.settings)
        self.redis = connections_for(self.settings)

    def publish(self, room: str, message: Any) -> Published:
        """Send ``message`` (JSON) to every subscriber of ``room``. One round trip."""
        return self.redis.run(self.core.publish_flow(room, message))

    def history(self, room: str, limit: int = 50) -> list[Message]:
        """A durable room's latest ``limit`` messages, oldest first ([] for a plain room)."""
        if not self.core.durable(self.core.check_room(room)):
            return []
        return self.redis.run(self.core.history_flow(room, limit))
