"""Sessions for ASGI apps: ``scope["session"]``, so Starlette's ``request.session`` works."""

from __future__ import annotations

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

from .._options import resolve_settings
from .._redis.breaker import log_incident
from .._redis.connections import connections_for
from ..errors import RedisCommandError, RedisMiddlewareError, SessionUnavailableError
from ..sansio.cookies import IncomingCookie
from ..sansio.session import Session
from ..sansio.sessions import SessionCore, SessionInfo
from ..settings import Settings
from ._http import add_vary_cookie, raw_header, request_cookies, response_headers, send_json

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

    async def load(self, scope: Scope) -> tuple[Session, IncomingCookie]:
        incoming = self.core.read_cookie(request_cookies(scope))
        session = self.core.session_for(incoming)
        if incoming.session_id is not None:
            try:
                session.set_loaded(await self.redis.arun(self.core.load_flow(incoming.session_id)))
            except RedisMiddlewareError as exc:
                session.fail(exc)
        return session, incoming

    async def save(self, session: Session, incoming: IncomingCookie, https: bool) -> str | None:
        """Write changes; return the Set-Cookie value. Raises RedisMiddlewareError."""
        result = await self.redis.arun(self.core.save_flow(session, incoming, https))
        return result.set_cookie

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session, incoming = await self.load(scope)
        scope["session"] = session  # type: ignore[typeddict-unknown-key]
        https = scope.get("scheme") in ("https", "wss")
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, session, incoming)
            return
        started = failed = False

        async def send_wrapper(message: ASGISendEvent) -> None:
            nonlocal started, failed
            if message["type"] == "http.response.start":
                started = True
                if session.unavailable_raised and message["status"] == 500:
                    # The app (or its framework's error handler) turned our
                    # SessionUnavailableError into a 500: answer what it means.
                    failed = True
                    await self._unavailable(send, None)
                    return
                headers = response_headers(message)
                if session.accessed:
                    add_vary_cookie(headers)
                try:
                    cookie = await self.save(session, incoming, https)
                except RedisMiddlewareError as exc:
                    failed = True
                    await self._unavailable(send, exc)
                    return
                if cookie:
                    headers.append(raw_header("set-cookie", cookie))
            elif failed:
                return  # the app's body is replaced by the 503 already sent
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except SessionUnavailableError:
            if not started:
                await self._unavailable(send, None)
            elif not failed:
                raise

    async def _websocket(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        session: Session,
        incoming: IncomingCookie,
    ) -> None:
        await self.app(scope, receive, send)
        if session.exists:  # no cookie can be set on a socket: only update live sessions
            try:
                await self.save(session, incoming, False)
            except RedisMiddlewareError as exc:
                log_incident("session-save", "session changes of a websocket were lost: %s", exc)

    async def _unavailable(self, send: ASGISendCallable, exc: BaseException | None) -> None:
        if isinstance(exc, RedisCommandError):
            log_incident("session-command", "session store refused a command: %s", exc)
        retry_after = str(max(1, round(self.settings.breaker_cooldown)))
        await send_json(send, 503, {"detail": "Session store unavailable, retry shortly."},
                        [raw_header("retry-after", retry_after)])


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
