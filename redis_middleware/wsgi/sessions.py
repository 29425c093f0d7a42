"""Sessions for WSGI apps: ``environ["redis_middleware.session"]`` (and ``flask.session``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from .._options import resolve_settings
from .._redis.breaker import log_incident
from .._redis.connections import connections_for
from ..errors import RedisCommandError, RedisMiddlewareError, SessionUnavailableError
from ..sansio.cookies import IncomingCookie
from ..sansio.session import Session
from ..sansio.sessions import SessionCore, SessionInfo
from ..settings import Settings
from ._http import close_iter, json_response, request_cookies

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "SessionStore"]

ENVIRON_KEY = "redis_middleware.session"
_UNAVAILABLE = {"detail": "Session store unavailable, retry shortly."}
_UNAVAILABLE_BODY = json.dumps(_UNAVAILABLE, separators=(",", ":")).encode()
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

    def open(self, environ: dict[str, Any]) -> tuple[Session, IncomingCookie]:
        incoming = self.core.read_cookie(request_cookies(environ))
        session = self.core.session_for(incoming)
        if incoming.session_id is not None:
            session_id = incoming.session_id
            session._loader = lambda: self.redis.run(self.core.load_flow(session_id))
        return session, incoming

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session, incoming = self.open(environ)
        environ[ENVIRON_KEY] = session
        https = environ.get("wsgi.url_scheme") == "https"
        failed: list[BaseException] = []

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if session.unavailable_raised and status.startswith("500"):
                # The framework turned our SessionUnavailableError into a 500.
                failed.append(SessionUnavailableError("session store unavailable"))
                return self._unavailable(start_response, None, exc_info)
            headers = list(headers)
            if session.accessed:
                _add_vary_cookie(headers)
            try:
                result = self.redis.run(self.core.save_flow(session, incoming, https))
            except RedisMiddlewareError as exc:
                failed.append(exc)
                return self._unavailable(start_response, exc, exc_info)
            if result.set_cookie:
                headers.append(("Set-Cookie", result.set_cookie))
            return start_response(status, headers, exc_info)

        try:
            app_iter = self.app(environ, session_start_response)
        except SessionUnavailableError:
            body: Iterable[bytes] = self._unavailable(start_response, None)
            return body
        return _Body(app_iter, failed)

    def _unavailable(
        self, start_response: Any, exc: BaseException | None, exc_info: Any = None
    ) -> Any:
        if isinstance(exc, RedisCommandError):
            log_incident("session-command", "session store refused a command: %s", exc)
        retry_after = str(max(1, round(self.settings.breaker_cooldown)))
        return json_response(
            lambda status, headers: start_response(status, headers, exc_info), 503,
            _UNAVAILABLE, [("Retry-After", retry_after)],
        )


class _Body:
    """The app's body, or the 503 body when saving the session failed; always closed."""

    def __init__(self, app_iter: Iterable[bytes], failed: list[BaseException]) -> None:
        self._app_iter = app_iter
        self._failed = failed

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._app_iter:
            if self._failed:
                break
            yield chunk
        if self._failed:  # start_response answered 503: send its body, not the app's
            yield _UNAVAILABLE_BODY

    def close(self) -> None:
        close_iter(self._app_iter)


def _add_vary_cookie(headers: list[tuple[str, str]]) -> None:
    for i, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            if "cookie" not in value.lower() and value.strip() != "*":
                headers[i] = (name, f"{value}, Cookie")
            return
    headers.append(("Vary", "Cookie"))


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
