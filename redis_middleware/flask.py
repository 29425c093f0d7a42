"""``flask.session`` on redis-middleware sessions, with Flask's own session contract.

Example::

    from flask import Flask
    from redis_middleware.flask import init_app

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "a long random secret of 32+ characters"
    init_app(app)                # flask.session is now a Redis-backed session

``flask.session`` behaves as Flask's own wherever Flask opens a session: requests,
``app.test_request_context()``, ``test_client()`` and its ``session_transaction()``.
Values round-trip as Flask's tagged serializer makes them (tuples, bytes, ``Markup``,
``UUID``, ``datetime``), one hash field per key. The cookie, the signing keys and the
lifetime come from Flask's configuration; what ``Settings`` or the options set
explicitly wins (``docs/flask.md`` has the table).

:func:`init_stack` installs the whole stack (rate limiting, caching, presence) as WSGI
middleware; the session it opens before the app is the one ``flask.session`` shows.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, after_this_request, has_request_context
from flask import request as flask_request
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface, SessionMixin

from ._redis.connections import RedisConnections, connections_for
from .config.settings import Settings
from .errors import ConfigError, RedisMiddlewareError, SessionUnavailableError
from .flask_conf import base_settings, flask_settings, secret_text
from .sansio.incidents import log_failure, log_incident
from .sansio.request import from_environ
from .sansio.responses import Refusals, Response
from .sansio.sessions.cookies import IncomingCookie
from .sansio.sessions.core import CookieRules, SessionCore
from .sansio.sessions.mapping import Codec, Session
from .sansio.stack import stack_field
from .wsgi.sessions import ENVIRON_KEY
from .wsgi.stack import RedisMiddleware

if TYPE_CHECKING:
    from .flask_cache import FlaskCache

__all__ = ["FlaskCache", "RedisSessionInterface", "flask_settings", "init_app", "init_stack",
           "secret_text"]

_INCOMING = "redis_middleware.flask.incoming"  # environ: the cookie an own session came from


class _TaggedCodec:
    """Flask's tagged JSON, one value at a time (a value per hash field)."""

    def __init__(self) -> None:
        self._serializer = TaggedJSONSerializer()

    def dumps(self, value: Any) -> str:
        return self._serializer.dumps(value)

    def loads(self, text: str) -> Any:
        return self._serializer.loads(text)


FLASK_CODEC: Codec = _TaggedCodec()
# Flask-Login keeps the logged-in user's id under "_user_id": when the session has no
# ``user_field``, that id is the user for per-user limits, presence and the per-user
# session index (so "log out everywhere" covers Flask-Login logins).
FLASK_LOGIN_FIELD = ("_user_id",)


class FlaskSession(Session):
    """``flask.session``: a :class:`Session` whose ``modified`` has Flask's meaning.

    Something was assigned (``session[k] = v`` with an equal value too, ``del``, a ``pop``
    or ``setdefault`` that changed the keys, ``update``, ``clear``, ``permanent = ...``,
    or ``modified = True`` by hand), or something will be written (a list or dict changed
    in place). ``modified = False`` takes back the assignment's mark. Only what changed
    is written to Redis; the cookie is sent again as Flask's ``should_set_cookie`` says.
    """

    @property
    def modified(self) -> bool:
        return self.assigned or self._writes()

    @modified.setter
    def modified(self, value: bool) -> None:
        self._set_modified(value)

    @property
    def will_write(self) -> bool:
        return self._writes()

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        self._touch()  # an assignment, with nothing to assign too: the session is used
        super().update(other, **kwargs)


def cookie_rules(app: Flask) -> CookieRules:
    """Flask's rules for sending the cookie: persistent only for ``session.permanent``,
    re-sent when the session was modified (Flask's meaning: assigned to, an equal value
    too), and on every request of a permanent session while
    ``SESSION_REFRESH_EACH_REQUEST``."""
    return CookieRules(follow_permanent=True, resend_on_change=True,
                       refresh_each_request=bool(app.config["SESSION_REFRESH_EACH_REQUEST"]))


# The configuration the session follows, read on every request as Flask's own session
# interface does (test suites and app factories change it after init_app).
_CONFIG_KEYS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_COOKIE_NAME",
                "SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH", "APPLICATION_ROOT",
                "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE",
                "SESSION_COOKIE_PARTITIONED", "PERMANENT_SESSION_LIFETIME",
                "SESSION_REFRESH_EACH_REQUEST")


_read_config = operator.itemgetter(*_CONFIG_KEYS)  # half the cost of a loop of .get


def _snapshot(config: Any) -> tuple[Any, ...]:
    try:
        found: tuple[Any, ...] = _read_config(config)
    except KeyError:  # a key deleted from the configuration reads as unset
        found = tuple(map(config.get, _CONFIG_KEYS))
    return found


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, set)) else value


class RedisSessionInterface(SessionInterface):
    """Flask's session interface on Redis.

    When the WSGI middleware (:func:`init_stack`) opened the request's session, that one
    is ``flask.session`` and the middleware saves it; everywhere else (a request path the
    stack exempts, ``test_request_context()``, ``session_transaction()``, an app with no
    middleware) this interface opens and saves it itself.
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self._settings = settings
        self._options = options
        # Per app: the configuration last seen and its core, and the cores of the
        # configurations seen before (a test suite flips settings back and forth).
        self._bound: dict[int, tuple[tuple[Any, ...], SessionCore, RedisConnections]] = {}
        self._known: dict[Any, SessionCore] = {}

    def core_for(self, app: Flask) -> tuple[SessionCore, RedisConnections]:
        """The session core (Flask's codec and cookie rules) and connections of ``app``,
        for its configuration now: a request costs a tuple of dictionary reads and one
        comparison, and a new core is built only when the configuration changed."""
        snapshot = _snapshot(app.config)
        bound = self._bound.get(id(app))
        if bound is not None and bound[0] == snapshot:
            return bound[1], bound[2]
        key: Any = (id(app), tuple(map(_hashable, snapshot)))
        try:
            core = self._known.get(key)
        except TypeError:  # a value that cannot be a dictionary key: not remembered
            core, key = None, None
        if core is None:
            try:
                settings = flask_settings(app, self._settings, **self._options)
            except ConfigError as exc:
                if bound is None:
                    raise  # at init_app (or a first request): the error, at once
                # Changed after init_app into what cannot work (a SECRET_KEY too short
                # to sign with): the last configuration that could goes on, one log line
                # per incident rather than a traceback and a 500 per request.
                log_incident("session-config", "Flask's new session configuration is "
                             "ignored, the previous one kept: %s", exc)
                self._bound[id(app)] = (snapshot, bound[1], bound[2])
                return bound[1], bound[2]
            if settings.secret_generated and bound is not None:
                # memory:// and no secret anywhere: keep this process's random one, or a
                # configuration change would make every cookie unreadable.
                settings = settings.replace(secret_key=bound[1].settings.secret_key)
            core = SessionCore(settings, FLASK_CODEC, cookie_rules(app), FLASK_LOGIN_FIELD,
                               FlaskSession)
            if len(self._known) >= 16:
                self._known.clear()
            if key is not None:
                self._known[key] = core
        redis = connections_for(core.settings)
        self._bound[id(app)] = (snapshot, core, redis)
        return core, redis

    def open_session(self, app: Flask, request: Any) -> SessionMixin:
        opened = request.environ.get(ENVIRON_KEY)
        if isinstance(opened, Session):
            if opened.session_id is not None:
                _settle_after_the_view(opened)
            return cast(SessionMixin, opened)  # it has SessionMixin's attributes
        core, redis = self.core_for(app)
        incoming = core.read_cookie(request.cookies)
        request.environ[_INCOMING] = incoming
        session_id = incoming.session_id
        if session_id is None:  # nothing to load, so nothing that can fail
            return cast(SessionMixin, core.session_for(incoming))
        session = core.session_for(incoming, lambda: redis.run(core.load_flow(session_id)))
        _settle_after_the_view(session)
        return cast(SessionMixin, session)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        environ = flask_request.environ
        if environ.get(ENVIRON_KEY) is session:
            return  # the middleware writes it and sets the cookie
        incoming: IncomingCookie = environ.get(_INCOMING) or IncomingCookie(None)
        core, redis = self.core_for(app)
        if session.accessed:
            response.vary.add("Cookie")
        try:
            result = redis.run(core.save_flow(session, incoming, flask_request.is_secure))
        except RedisMiddlewareError as exc:
            log_failure("session-save", "session changes not saved, answered 503: %s", exc)
            _replace_with(response, _unavailable(core.settings))
            return
        if result.set_cookie:
            response.headers.add("Set-Cookie", result.set_cookie)
            response.vary.add("Cookie")


def _settle_after_the_view(session: Session) -> None:
    """Settle the session once the view (or the error handler) made the response: Flask
    runs this-request functions before every after_request hook, so an extension's hook
    that reads the session during an outage (Flask-Login's) gets an empty one instead of
    an error logged with its traceback and a 500 for a route that never used it."""
    if not has_request_context():
        return

    def settle(response: Any) -> Any:
        session.settle()
        return response

    after_this_request(settle)


def _unavailable(settings: Settings) -> Response:
    """The session store's 503 for this request (the app's refusal handler, or the
    default in the format the client prefers)."""
    request = from_environ(flask_request.environ)
    return Refusals(settings.refusal_handler, settings.breaker_cooldown).session_unavailable(
        request)


def _replace_with(response: Any, replacement: Response) -> None:
    """Make ``response`` the replacement, as the stack sends its 503: none of the view's
    headers stay (its Location, its Cache-Control that could let a shared cache keep the
    503, its ETag, the cookies it set for a login that was not saved)."""
    response.status_code = replacement.status
    response.headers.clear()
    response.set_data(replacement.body)
    for name, value in replacement.headers:
        response.headers[name] = value


def init_app(app: Flask, settings: Settings | None = None, **options: Any
             ) -> RedisSessionInterface:
    """Make ``flask.session`` a Redis session; returns the installed interface."""
    interface = RedisSessionInterface(settings, **options)
    _install(app, interface, interface.core_for(app)[0].settings)
    return interface


def init_stack(app: Flask, settings: Settings | None = None, **options: Any) -> RedisMiddleware:
    """Install the whole stack (sessions, rate limiting, caching, presence) on a Flask app.

    ``options`` are the stack's (``limit``, ``routes``, ``cookie_name``, ...); Flask's
    configuration fills the session cookie and secret as for :func:`init_app`, also for
    the other components (so ``SECRET_KEY`` alone is enough with a real ``REDIS_URL``).
    """
    middleware = RedisMiddleware(app.wsgi_app, base_settings(
        app.config, settings, {stack_field(k) for k in options}), **options)
    # The session follows Flask's configuration per request: its interface starts from
    # what was given (not from the stack's settings, where Flask's values are frozen).
    interface = RedisSessionInterface(settings, **{stack_field(k): v for k, v in options.items()})
    core, _ = interface.core_for(app)
    if middleware.core.sessions is not None:
        # The stack's sessions take Flask's settings, codec and cookie rules, so that
        # the session it opens before the app is exactly Flask's.
        middleware.core.sessions = core
        app.wsgi_app = _FollowConfig(app, middleware, interface)  # type: ignore[method-assign]
    else:
        app.wsgi_app = middleware  # type: ignore[method-assign]
    _install(app, interface, core.settings)
    return middleware


class _FollowConfig:
    """The stack under a Flask app: its sessions follow the app's configuration, read
    per request as :meth:`RedisSessionInterface.core_for` reads it."""

    def __init__(self, flask_app: Flask, app: RedisMiddleware,
                 interface: RedisSessionInterface) -> None:
        self.flask_app = flask_app
        self.app = app
        self.interface = interface

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        core = self.interface.core_for(self.flask_app)[0]
        stack = self.app.core
        if stack.sessions is not core:
            stack.sessions = core
        return self.app(environ, start_response)


def _install(app: Flask, interface: RedisSessionInterface, settings: Settings) -> None:
    app.session_interface = interface

    def answer_unavailable(exc: SessionUnavailableError) -> Any:
        # Answer 503 here so Flask does not log a traceback for a Redis outage.
        unavailable = _unavailable(settings)
        return unavailable.body, unavailable.status, list(unavailable.headers)

    app.register_error_handler(SessionUnavailableError, answer_unavailable)


def __getattr__(name: str) -> Any:
    # FlaskCache needs Flask-Caching, an optional dependency: imported when asked for
    # (Flask-Caching's CACHE_TYPE = "redis_middleware.flask.FlaskCache" does).
    if name == "FlaskCache":
        from .flask_cache import FlaskCache

        return FlaskCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
