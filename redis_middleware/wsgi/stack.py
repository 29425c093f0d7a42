"""``RedisMiddleware`` for WSGI: sessions, rate limiting, caching and presence in one line."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .._redis.connections import connections_for
from .._redis.strategies import LimitsStrategy
from ..config.settings import Settings
from ..sansio.request import from_environ
from ..sansio.responses import status_line
from ..sansio.stack import Before, StackCore, resolve_stack_settings
from ._respond import refresh, respond, start, with_conditional
from .cache import refresh_workers
from .sessions import ENVIRON_KEY

__all__ = ["RedisMiddleware"]


class RedisMiddleware:
    """Sessions, rate limiting, response caching and presence, in the right order (WSGI).

    Example::

        app.wsgi_app = RedisMiddleware(app.wsgi_app, settings, limit="100/minute")

    Flask users add ``app.session_interface = RedisSessionInterface()`` (or call
    :func:`redis_middleware.flask.init_stack`) so ``flask.session`` is this session.
    """

    def __init__(self, app: Any, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self.settings = resolve_stack_settings(settings, options)
        self.core = StackCore(self.settings)
        self.redis = connections_for(self.settings)
        if self.core.ratelimit is not None and not self.core.fixed_window:
            self.core.limiter = LimitsStrategy(self.core.ratelimit, self.redis)
        self.refreshers = refresh_workers(self.settings)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = from_environ(environ, self.settings.user_field)
        if self.core.is_exempt(request.path):
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        before: Before = self.redis.run(self.core.before_flow(
            request, environ.get("REMOTE_USER") or None, True))
        if before.session is not None:
            environ[ENVIRON_KEY] = before.session
        decision = before.decision
        if decision is not None and not decision.allowed:
            response, release = self.core.rejection(before, decision)
            self.redis.run(release)
            return start(start_response, response)
        extra = decision.headers if decision is not None else ()
        head = environ.get("REQUEST_METHOD") == "HEAD"
        resolved = self.redis.run(self.core.hit_flow(before))
        if resolved is not None and resolved.serve is not None and \
                self.core.cache is not None and before.plan is not None:
            status, headers, body = self.core.cache.hit(before.plan, resolved.serve, head)
            start_response(status_line(status), [*headers, *extra])
            if resolved.refresh:
                refresh(self.app, environ, self.core.refresh_exchange(before, time.time()),
                        self.redis, self.refreshers)
            return [body]
        exchange = self.core.exchange(before, environ.get("wsgi.url_scheme") == "https", head,
                                      time.time(), extra)
        return respond(self.app, with_conditional(environ, exchange.conditional),
                       start_response, exchange, self.redis)
