"""Sessions for WSGI apps: ``environ["redis_middleware.session"]`` (and ``flask.session``)."""

from __future__ import annotations

from .._redis.connections import connections_for
from ..config.settings import Settings
from ..sansio.sessions.core import SessionCore, SessionInfo
from ._http import ENVIRON_KEY
from .stack import Stack

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "SessionStore"]


class SessionMiddleware(Stack):
    """Server-side sessions in Redis behind a signed cookie, for WSGI apps.

    The session is ``environ["redis_middleware.session"]``, loaded on first access
    (one round trip), saved when the app calls ``start_response`` (only changed keys).
    Flask apps use it as ``flask.session`` through :mod:`redis_middleware.flask`.

    Example::

        app.wsgi_app = SessionMiddleware(app.wsgi_app, settings)

    Options are session settings without the ``session_`` prefix. Security: Redis never
    holds the cookie, only a one-way hash of the id.
    """

    parts = ("session",)


class SessionStore:
    """Inspect and revoke a user's sessions (sync), e.g. "log out everywhere"."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = Settings.from_env() if settings is None else settings
        self.core = SessionCore(self.settings)
        self.redis = connections_for(self.settings)

    def list(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, most recently written first."""
        return self.redis.run(self.core.list_flow(str(user_id)))

    def revoke(self, user_id: str, ref: str) -> bool:
        """End one session (by its ``SessionInfo.ref``) at once."""
        return self.redis.run(self.core.revoke_flow(str(user_id), ref))

    def revoke_all(self, user_id: str) -> int:
        """End every session of the user; returns how many were live."""
        return self.redis.run(self.core.revoke_all_flow(str(user_id)))
