"""Sessions for ASGI apps: ``scope["session"]``, so Starlette's ``request.session`` works."""

from __future__ import annotations

from typing import Any

from .._redis.connections import connections_for
from ..config.settings import Settings
from ..sansio.sessions.core import SessionCore, SessionInfo
from .stack import Stack

__all__ = ["SessionMiddleware", "SessionStore"]

ASGIApp = Any


class SessionMiddleware(Stack):
    """Server-side sessions in Redis behind a signed cookie.

    ``scope["session"]`` is a mutable mapping of JSON values, loaded (one round trip)
    when the request carries a validly signed cookie; only changed keys are written
    back. Call ``session.regenerate()`` at login and ``session.clear()`` at logout.

    Example::

        app = SessionMiddleware(app, settings, idle_timeout=3600)

    Options are session settings without the ``session_`` prefix (``cookie_name``,
    ``idle_timeout``, ...). Security: Redis never holds the cookie, only a one-way
    hash of the id; a forged or unknown cookie is simply no session.
    """

    parts = ("session",)


class SessionStore:
    """Inspect and revoke a user's sessions (async), e.g. "log out everywhere".

    Example::

        store = SessionStore(settings)
        for info in await store.list(user_id): ...
        await store.revoke_all(user_id)
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = Settings.from_env() if settings is None else settings
        self.core = SessionCore(self.settings)
        self.redis = connections_for(self.settings)

    async def list(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, most recently written first."""
        return await self.redis.arun(self.core.list_flow(str(user_id)))

    async def revoke(self, user_id: str, ref: str) -> bool:
        """End one session (by its ``SessionInfo.ref``) at once."""
        return await self.redis.arun(self.core.revoke_flow(str(user_id), ref))

    async def revoke_all(self, user_id: str) -> int:
        """End every session of the user; returns how many were live."""
        return await self.redis.arun(self.core.revoke_all_flow(str(user_id)))
