"""Django middleware: sessions' 503s, rate limiting, presence and caching, configured from
Django's settings (:func:`~redis_middleware.django.conf.django_settings`).

Each class follows Django's middleware protocol and is sync and async capable: under
WSGI it runs on the sync Redis client, under ASGI on the asyncio one (``CacheMiddleware``
is sync only; Django runs it in a worker thread under ASGI). The user is Django's
``request.user``, so put ``RateLimitMiddleware`` and ``PresenceMiddleware`` after
``django.contrib.auth.middleware.AuthenticationMiddleware``.
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_conf
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.cache import patch_vary_headers

from ..asgi.presence import Presence as AsyncPresence
from ..asgi.ratelimit import RateLimiter as AsyncRateLimiter
from ..errors import RedisMiddlewareError, SessionUnavailableError
from ..sansio.cache import SessionUse
from ..sansio.incidents import log_failure, log_incident
from ..sansio.ratelimit.core import Check, Decision
from ..sansio.request import RequestInfo, from_environ
from ..sansio.responses import Refusals, Response, status_line
from ..sansio.sessions.mapping import Session
from ..wsgi.cache import CacheMiddleware as WSGICacheMiddleware
from ..wsgi.presence import PresenceMiddleware as WSGIPresenceMiddleware
from ..wsgi.ratelimit import RateLimiter
from ..wsgi.sessions import ENVIRON_KEY
from .conf import django_settings

__all__ = ["CacheMiddleware", "PresenceMiddleware", "RateLimitMiddleware",
           "SessionMiddleware", "django_auser", "django_session_use", "django_user"]

_UNAVAILABLE = "_redis_middleware_session_unavailable"
_REQUEST = "redis_middleware.django.request"  # environ key: the request being answered


def request_info(request: HttpRequest) -> RequestInfo:
    """The core's view of a Django request (its ``META`` is a WSGI environ on both sides)."""
    meta = request.META
    if "wsgi.url_scheme" not in meta:  # ASGI: Django knows the scheme from the scope
        meta["wsgi.url_scheme"] = request.scheme
    return from_environ(meta)


def django_user(user: Any) -> str | None:
    """The id of Django's authenticated user (``request.user``), or None. With the session
    store down nobody is known (the view that reads the session gets the 503)."""
    try:
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        pk = getattr(user, "pk", None)
    except RedisMiddlewareError:
        return None
    return None if pk is None else str(pk)


async def django_auser(request: HttpRequest) -> str | None:
    """:func:`django_user` of ``await request.auser()`` (Django's async user)."""
    auser = getattr(request, "auser", None)
    if auser is None:
        return None
    try:
        return django_user(await auser())
    except RedisMiddlewareError:
        return None


def to_django(response: Response, *, logged: bool) -> HttpResponse:
    """A response the middleware answers itself, as Django's. ``logged``: the answer to
    an incident we log once ourselves, which Django's ``django.request`` logger must not
    log again for every request; a 429 is left to Django (its WARNING per refusal)."""
    out = HttpResponse(response.body, status=response.status)
    for name, value in response.headers:
        out.headers[name] = value
    if logged:
        out._has_been_logged = True  # read by Django's log_response
    return out


class _Middleware:
    """Django's middleware protocol, sync or async as ``get_response`` is."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.settings = django_settings()
        self.refusals = Refusals(self.settings.refusal_handler, self.settings.breaker_cooldown)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.acall(request)
        return self.call(request)

    def call(self, request: HttpRequest) -> HttpResponseBase:
        raise NotImplementedError

    async def acall(self, request: HttpRequest) -> HttpResponseBase:
        raise NotImplementedError


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``, answering 503 (with ``Retry-After``, one log line
    per incident) instead of a 500 and a traceback when the session store is down.

    Use it in place of ``django.contrib.sessions.middleware.SessionMiddleware``;
    everything else is Django's own.
    """

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        settings = django_settings()
        self.refusals = Refusals(settings.refusal_handler, settings.breaker_cooldown)

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if not isinstance(exception, SessionUnavailableError):
            return None
        log_incident("session-load", "session store unavailable, answered 503: %s", exception)
        setattr(request, _UNAVAILABLE, True)
        return to_django(self.refusals.session_unavailable(request_info(request)), logged=True)

    def process_response(self, request: HttpRequest, response: Any) -> Any:
        if getattr(request, _UNAVAILABLE, False):
            return response  # the session was never read: keep the cookie as it is
        session: Any = getattr(request, "session", None)
        if getattr(session, "read_only", False) and session.session_key is not None:
            # Redis failed under the "readonly" policy: nothing was saved, so the browser
            # keeps its cookie (a logout, which empties the key, still deletes it).
            if session.accessed:
                patch_vary_headers(response, ("Cookie",))
            return response
        try:
            return super().process_response(request, response)
        except RedisMiddlewareError as exc:
            log_failure("session-save", "session changes not saved, answered 503: %s", exc)
            return to_django(self.refusals.session_unavailable(request_info(request)), logged=True)


class RateLimitMiddleware(_Middleware):
    """Rate limits (``REDIS_MIDDLEWARE["ratelimit_*"]``) for a Django app: a 429 before
    the view, ``X-RateLimit-*`` (or ``RateLimit-*``) headers after it. ``key="user"``
    and ``"user_or_ip"`` count Django's authenticated ``request.user`` by its id."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        self.limiter = RateLimiter(self.settings)
        self.core = self.limiter.core
        self.alimiter = AsyncRateLimiter(self.settings) if self.is_async else None

    def call(self, request: HttpRequest) -> HttpResponseBase:
        info = request_info(request)
        check = self.core.prepare(info, lambda: django_user(getattr(request, "user", None)))
        return self._finish(request, info, None if check is None else self.limiter.check(check))

    async def acall(self, request: HttpRequest) -> HttpResponseBase:
        info = request_info(request)
        user = await django_auser(request) if self.core.needs_user(info) else None
        check: Check | None = self.core.prepare(info, lambda: user)
        assert self.alimiter is not None
        decision = None if check is None else await self.alimiter.check(check)
        if decision is not None and not decision.allowed:
            return self._refused(info, decision)
        response: HttpResponseBase = await self.get_response(request)
        return _with_headers(response, decision)

    def _finish(self, request: HttpRequest, info: RequestInfo, decision: Decision | None
                ) -> HttpResponseBase:
        if decision is not None and not decision.allowed:
            return self._refused(info, decision)
        return _with_headers(self.get_response(request), decision)

    def _refused(self, info: RequestInfo, decision: Decision) -> HttpResponse:
        # A fail-closed limiter's 503 is an incident, logged once by the limiter.
        return to_django(self.refusals.rate_limited(info, decision.status, decision.detail,
                                                    decision.headers),
                         logged=decision.status != 429)


def _with_headers(response: HttpResponseBase, decision: Decision | None) -> HttpResponseBase:
    if decision is not None:
        for name, value in decision.headers:
            if name not in response.headers:  # the view's own headers win
                response.headers[name] = value
    return response


class PresenceMiddleware(_Middleware):
    """A throttled heartbeat for each request of an authenticated ``request.user``; a
    daemon thread sweeps expired leases (online/offline events) while no request comes."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        # The WSGI middleware owns the sweeper; it never calls its app here.
        self.sync = WSGIPresenceMiddleware(None, self.settings)
        self.core = self.sync.core
        self.apresence = AsyncPresence(self.settings) if self.is_async else None

    def call(self, request: HttpRequest) -> HttpResponseBase:
        self.sync.start_sweeper()
        flow = self.core.request_flow(self.core.identity(
            django_user(getattr(request, "user", None)), lambda: request_info(request)))
        if flow is not None:
            try:
                self.sync.presence.redis.run(flow)
            except RedisMiddlewareError as exc:
                log_failure("presence", "presence skipped: %s", exc)
        response: HttpResponseBase = self.get_response(request)
        return response

    async def acall(self, request: HttpRequest) -> HttpResponseBase:
        self.sync.start_sweeper()
        credential = self.core.identity(None, lambda: request_info(request))
        flow = self.core.request_flow(credential or await django_auser(request))
        if flow is not None:
            assert self.apresence is not None
            try:
                await self.apresence.redis.arun(flow)
            except RedisMiddlewareError as exc:
                log_failure("presence", "presence skipped: %s", exc)
        response: HttpResponseBase = await self.get_response(request)
        return response


class CacheMiddleware:
    """The response cache (``REDIS_MIDDLEWARE["cache_routes"]``) for a Django app: the
    WSGI ``CacheMiddleware`` run around the rest of Django's middleware and the view.

    Sync only: under ASGI, Django runs it in a worker thread. Place it after the
    middleware that sets what views read (sessions, auth), so a revalidation or a
    background refresh runs the view with the same request attributes.

    The cache is told what the view did with Django's ``request.session``
    (:func:`django_session_use`), as the WSGI stack is told of its own session: a page
    that read the session is kept only for requests without the session cookie (a
    signed-in user computes her own), unless the route says ``per_user: False``; a page
    after which the session changed is never kept.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.settings = django_settings()
        self.cache = WSGICacheMiddleware(self._app, self.settings)
        self._current = threading.local()  # the request this thread is answering

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        sent = _Sent()
        # In the environ, so that a background refresh (another thread, a copy of the
        # environ) still finds the request it repeats.
        request.META[_REQUEST] = request
        self._current.request, self._current.response = request, None
        try:
            body = self.cache(request.META, sent.start_response)
            view_response: HttpResponseBase | None = self._current.response
        finally:
            self._current.request = self._current.response = None
            request.META.pop(ENVIRON_KEY, None)
        # The WSGI respond() hands back the app's body, marked when the cache replaced
        # it (a 304 revalidation answered from the entry, a stale entry on an error).
        if view_response is not None and getattr(body, "replaced", None) is None:
            return sent.pass_through(view_response, body)
        return sent.replacement(body)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """The rest of Django, as a WSGI app (what the WSGI cache middleware wraps)."""
        request = environ.get(_REQUEST)
        if request is None or environ is not request.META:
            request = _request_for(request, environ)  # a revalidation or a refresh
        response = self.get_response(request)
        current = getattr(self._current, "request", None)
        if current is not None:
            self._current.response = response
            # Where the WSGI stack reads the session of an outer layer, when the response
            # starts: what the view did with Django's session, in the core's terms.
            current.META[ENVIRON_KEY] = _SessionUseOf(request)
        start_response(status_line(response.status_code), _wsgi_headers(response))
        if response.streaming:
            # The chunks are taken now: pass_through() replaces the response's content
            # with what the cache hands back, which reads from these.
            return _closing(iter(response))
        content: bytes = response.content
        return [content]


def django_session_use(request: HttpRequest) -> SessionUse:
    """What the view did with Django's ``request.session``, for the response cache:
    ``""`` (not read), ``"read"``, or ``"written"`` (changed: Django's middleware will
    save it and set, or delete, the cookie). A change that writes nothing, to the empty
    session of a visitor without a session cookie, counts as a read: that visitor's page
    is still the one every such visitor shares."""
    session: Any = getattr(request, "session", None)
    if session is None or not getattr(session, "accessed", False):
        return ""
    if getattr(session, "modified", False) and (
            not session.is_empty() or django_conf.SESSION_COOKIE_NAME in request.COOKIES):
        return "written"
    return "read"


class _SessionUseOf(Session):
    """What the view did with Django's session, as the response cache reads the session
    of an outer layer (``accessed``, ``modified``); it holds no data. Made when the view
    has answered: Django's session no longer changes before the cache decides."""

    def __init__(self, request: HttpRequest) -> None:
        dict.__init__(self)
        self._use = django_session_use(request)

    @property
    def accessed(self) -> bool:
        return self._use != ""

    @accessed.setter
    def accessed(self, value: bool) -> None:
        """Ignored: Django's session says."""

    @property
    def modified(self) -> bool:
        return self._use == "written"

    @modified.setter
    def modified(self, value: bool) -> None:
        """Ignored: Django's session says."""


def _request_for(original: HttpRequest | None, environ: dict[str, Any]) -> HttpRequest:
    """The request a revalidation or background refresh runs the view with: a copy of
    the original (its user, its session) with the environ the cache chose."""
    if original is None:
        from django.core.handlers.wsgi import WSGIRequest

        return WSGIRequest(environ)
    request = copy.copy(original)
    request.META = {k: v for k, v in environ.items() if k != _REQUEST}
    request.__dict__.pop("headers", None)  # HttpRequest.headers is cached from META
    if environ.get("REQUEST_METHOD") == "GET" and original.method != "GET":
        request.method = "GET"
    if isinstance(environ.get("wsgi.input"), io.BytesIO):
        request._stream = environ["wsgi.input"]
    return request


def _wsgi_headers(response: HttpResponseBase) -> list[tuple[str, str]]:
    """The header lines Django's WSGI handler would send (its cookies included)."""
    return [*response.items(),
            *(("Set-Cookie", c.output(header="").strip()) for c in response.cookies.values())]


def _closing(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A streaming response's chunks (closing is left to the outer handler)."""
    yield from chunks


class _Sent:
    """What the WSGI cache middleware sent: the status line and headers."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        self.status, self.headers = status, list(headers)
        return _ignore

    def pass_through(self, response: HttpResponseBase, body: Iterable[bytes]
                     ) -> HttpResponseBase:
        """The view's own response object, with the cache's header changes."""
        if response.streaming:
            assert isinstance(response, StreamingHttpResponse)
            response.streaming_content = _drain(body)
        else:
            _drain_now(body)
        final = [(k, v) for k, v in self.headers if k.lower() != "set-cookie"]
        names = {k.lower() for k, _ in final}
        for name in [k for k in response.headers if k.lower() not in names]:
            del response.headers[name]
        for name, value in final:
            response.headers[name] = value
        return response

    def replacement(self, body: Iterable[bytes]) -> HttpResponse:
        """A response the cache answered itself (a hit, a 304, a stale entry)."""
        content = _drain_now(body)
        out = HttpResponse(content, status=int(self.status.split(" ", 1)[0]))
        for name, value in self.headers:
            out.headers[name] = value
        return out


def _ignore(data: bytes) -> None:
    """``write()`` of the start_response above: the body comes back as the iterable."""


def _drain_now(body: Iterable[bytes]) -> bytes:
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()  # the cache stores the entry when its body is complete


def _drain(body: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
