"""Sessions for ASGI apps: ``scope["session"]``, so Starlette's ``request.session`` works."""

from __future__ import annotations

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .._redis.connections import RedisConnections, connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.exchange import Exchange, SessionPart
from ..sansio.incidents import log_incident
from ..sansio.request import from_scope
from ..sansio.responses import Refusals
from ..sansio.sessions.cookies import IncomingCookie
from ..sansio.sessions.core import SessionCore, SessionInfo
from ..sansio.sessions.mapping import Session
from ._http import request_cookies
from ._respond import respond

__all__ = ["SessionMiddleware", "SessionStore"]

ASGIApp = Any


class SessionMiddleware:
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

    def __init__(self, app: ASGIApp, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = resolve_settings(settings, "session", options)
        self.core = SessionCore(self.settings)
        self.redis = connections_for(self.settings)
        self.refusals = Refusals(self.settings.refusal_handler, self.settings.breaker_cooldown)

    async def load(self, scope: Scope) -> tuple[Session, IncomingCookie]:
        incoming = self.core.read_cookie(request_cookies(scope))
        session = self.core.session_for(incoming)
        if incoming.session_id is not None:
            try:
                session.set_loaded(await self.redis.arun(self.core.load_flow(incoming.session_id)))
            except RedisMiddlewareError as exc:
                session.fail(exc)
        return session, incoming

    def exchange(self, session: Session, incoming: IncomingCookie, https: bool,
                 scope: Any = None) -> Exchange:
        refusals = self.refusals
        return Exchange((SessionPart(self.core, session, incoming, https, lambda: (
            refusals.session_unavailable(from_scope(scope, None) if scope else None))),))

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session, incoming = await self.load(scope)
        scope["session"] = session  # type: ignore[typeddict-unknown-key]
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            await save_after_websocket(self.redis, self.core, session, incoming)
            return
        https = scope.get("scheme") == "https"
        await respond(self.app, scope, receive, send,
                      self.exchange(session, incoming, https, scope), self.redis)


async def save_after_websocket(redis: RedisConnections, core: SessionCore, session: Session,
                               incoming: IncomingCookie) -> None:
    """No cookie can be set on a socket: only a live session's changes are written."""
    if session.exists:
        try:
            await redis.arun(core.save_flow(session, incoming, False))
        except RedisMiddlewareError as exc:
            log_incident("session-save", "session changes of a websocket were lost: %s", exc)


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
