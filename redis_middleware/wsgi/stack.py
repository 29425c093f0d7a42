"""The stack for WSGI: the core decides one Action per request; this carries it out."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from .._redis.connections import connections_for
from .._redis.strategies import limiter_for
from ..config.settings import Settings
from ..sansio.flow import step
from ..sansio.request import environ_user, from_environ
from ..sansio.responses import status_line
from ..sansio.stack import ALL_PARTS, Forward, Incoming, Refuse, Serve, StackCore, stack_settings
from ._http import ENVIRON_KEY
from ._respond import refresh, refresh_workers, respond, start, with_conditional

__all__ = ["RedisMiddleware", "Stack"]


class Stack:
    """WSGI middleware running the stack's ``parts`` (sync Redis client)."""

    parts: ClassVar[tuple[str, ...]] = ALL_PARTS

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = stack_settings(settings, options, self.parts)
        self.core = StackCore(self.settings, self.parts)
        self.redis = connections_for(self.settings)
        self.core.limiter = limiter_for(self.core.ratelimit, self.redis)
        self.refreshers = refresh_workers(self.settings) if self.core.cache else None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        field, redis = self.settings.user_field, self.redis
        flow = self.core.decide(Incoming(
            from_environ(environ), True, environ.get("wsgi.url_scheme") == "https",
            environ.get("REQUEST_METHOD") == "HEAD", False,
            lambda: environ_user(environ, field), lambda: environ.get(ENVIRON_KEY),
            self._loader), time.time())
        done, action = step(flow)
        if not done:  # most requests: their round trips (a near-cache hit needs none)
            action = redis.run(flow, action)
        if action.session is not None:
            environ[ENVIRON_KEY] = action.session
        match action:  # the most common first: each case tried costs a type check
            case Forward(exchange=exchange):
                return respond(self.app, with_conditional(environ, exchange.conditional),
                               start_response, exchange, redis)
            case Serve(response=response, headers=headers, refresh=again):
                start_response(status_line(response.status), headers)
                if again is not None and self.refreshers is not None:
                    refresh(self.app, environ, again, redis, self.refreshers)
                return [response.body]
            case Refuse(response=response):
                return start(start_response, response)
        result: Iterable[bytes] = self.app(environ, start_response)
        return result

    def _loader(self, session_id: str) -> Any:
        """What loads a session on its first access (sessions alone load lazily)."""
        sessions, redis = self.core.sessions, self.redis
        return lambda: redis.run(sessions.load_flow(session_id)) if sessions else None


class RedisMiddleware(Stack):
    """Sessions, rate limiting, response caching and presence, in the right order (WSGI).

    Example::

        app.wsgi_app = RedisMiddleware(app.wsgi_app, settings, limit="100/minute")

    Flask users add ``app.session_interface = RedisSessionInterface()`` (or call
    :func:`redis_middleware.flask.init_stack`) so ``flask.session`` is this session.
    """
