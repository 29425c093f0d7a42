"""Sessions for WSGI apps: ``environ["redis_middleware.session"]`` (and ``flask.session``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..sansio.exchange import Exchange, SessionPart
from ..sansio.request import from_environ
from ..sansio.responses import Refusals
from ..sansio.sessions.cookies import IncomingCookie
from ..sansio.sessions.core import SessionCore, SessionInfo
from ..sansio.sessions.mapping import Session
from ._http import request_cookies
from ._respond import respond

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "SessionStore"]

ENVIRON_KEY = "redis_middleware.session"
WSGIApp = Any


class SessionMiddleware:
    """Server-side sessions in Redis behind a signed cookie, for WSGI apps.

    The session is ``environ["redis_middleware.session"]``, loaded on first access
    (one round trip), saved when the app calls ``start_response`` (only changed keys).
    Flask apps use it as ``flask.session`` through :mod:`redis_middleware.flask`.

    Example::

        app.wsgi_app = SessionMiddleware(app.wsgi_app, settings)

    Security: Redis never holds the cookie, only a one-way hash of the id.
    """

    def __init__(self, app: WSGIApp, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = resolve_settings(settings, "session", options)
        self.core = SessionCore(self.settings)
        self.redis = connections_for(self.settings)
        self.refusals = Refusals(self.settings.refusal_handler, self.settings.breaker_cooldown)

    def open(self, environ: dict[str, Any]) -> tuple[Session, IncomingCookie]:
        incoming = self.core.read_cookie(request_cookies(environ))
        session_id = incoming.session_id
        if session_id is None:
            return self.core.session_for(incoming), incoming
        return self.core.session_for(
            incoming, lambda: self.redis.run(self.core.load_flow(session_id))), incoming

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session, incoming = self.open(environ)
        environ[ENVIRON_KEY] = session
        https = environ.get("wsgi.url_scheme") == "https"
        refusals, field = self.refusals, self.settings.user_field
        exchange = Exchange((SessionPart(self.core, session, incoming, https, lambda: (
            refusals.session_unavailable(from_environ(environ, field)))),))
        return respond(self.app, environ, start_response, exchange, self.redis)


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
