"""``flask.session`` backed by redis-middleware sessions (one cookie, set by the middleware).

Example::

    from flask import Flask
    from redis_middleware.flask import init_app

    app = Flask(__name__)
    init_app(app, settings)      # wraps app.wsgi_app and installs the session interface

Flask's test client ``session_transaction()`` is not supported: drive the session
through requests instead.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.sessions import SessionInterface

from .errors import SessionUnavailableError
from .settings import Settings
from .wsgi.sessions import ENVIRON_KEY, SessionMiddleware
from .wsgi.stack import RedisMiddleware

__all__ = ["RedisSessionInterface", "init_app", "init_stack"]


class RedisSessionInterface(SessionInterface):
    """Hands Flask the session the WSGI middleware opened; saving is the middleware's job."""

    def open_session(self, app: Flask, request: Any) -> Any:
        session = request.environ.get(ENVIRON_KEY)
        if session is None:
            raise RuntimeError(
                "redis_middleware.wsgi.SessionMiddleware is not installed: call "
                "redis_middleware.flask.init_app(app) or wrap app.wsgi_app"
            )
        return session

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        """Nothing to do: the middleware writes changes and sets the only cookie."""


def init_app(app: Flask, settings: Settings | None = None, **options: Any) -> SessionMiddleware:
    """Install sessions on a Flask app; returns the middleware (for its settings)."""
    middleware = SessionMiddleware(app.wsgi_app, settings, **options)
    _install(app, middleware)
    return middleware


def init_stack(app: Flask, settings: Settings | None = None, **options: Any) -> RedisMiddleware:
    """Install the whole stack (sessions, rate limiting, caching, presence) on a Flask app."""
    middleware = RedisMiddleware(app.wsgi_app, settings, **options)
    _install(app, middleware)
    return middleware


def _install(app: Flask, middleware: SessionMiddleware | RedisMiddleware) -> None:
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.session_interface = RedisSessionInterface()
    retry_after = str(max(1, round(middleware.settings.breaker_cooldown)))

    def unavailable(exc: SessionUnavailableError) -> Any:
        # Answer 503 here so Flask does not log a traceback for a Redis outage.
        return {"detail": "Session store unavailable, retry shortly."}, 503, {
            "Retry-After": retry_after}

    app.register_error_handler(SessionUnavailableError, unavailable)
