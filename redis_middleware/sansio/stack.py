"""The one-line stack, decided without I/O: sessions, rate limiting, caching and presence
in the right order, sharing round trips, ending in one :class:`Action` per request.

Before the app, at most two round trips: the first carries everything that does not
depend on who the user is (session load, cache lookup, an IP rate limit, the
presence sweep); the second, only when a session was loaded, carries what does (a
per-user rate limit, the presence heartbeat). After the app, at most one: the
session's changes, or the cache entry. ``SessionMiddleware``, ``RateLimitMiddleware``
and ``CacheMiddleware`` are this stack with one part.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config.options import resolve_settings
from ..config.patterns import PathPattern
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from .cache import CacheCore, CachePlan, Entry, Lookup, SessionUse, encode_headers
from .exchange import CachePart, Exchange, Part, SessionPart, SocketSessionPart
from .flow import Delegate, Flow, PausingFlow, gather
from .incidents import log_failure
from .presence import PresenceCore
from .ratelimit.core import Check, Decision, RateLimitCore
from .request import RequestInfo
from .responses import Headers, Refusals, Response
from .sessions.cookies import IncomingCookie
from .sessions.core import SessionCore
from .sessions.mapping import Loader, Session, session_use

__all__ = ["ALL_PARTS", "Action", "Forward", "Incoming", "Pass", "Refuse", "Serve", "StackCore",
           "resolve_stack_settings", "stack_settings"]

ALL_PARTS = ("session", "ratelimit", "cache", "presence")  # in the order they run


def resolve_stack_settings(settings: Settings | None, options: dict[str, Any]) -> Settings:
    """Flat options: each goes to the first component whose setting it names."""
    mapped = {stack_field(name): value for name, value in options.items()}
    return resolve_settings(settings, "stack", mapped)


def stack_settings(settings: Settings | None, options: dict[str, Any],
                   parts: tuple[str, ...]) -> Settings:
    """The settings of a stack of ``parts``: the flat options of the whole stack, or a
    component's own options (without its prefix) when it runs alone."""
    if len(parts) == 1:
        return resolve_settings(settings, parts[0], options)
    return resolve_stack_settings(settings, options)


def stack_field(name: str) -> str:
    """The Settings field a flat stack option names (``limit`` -> ``ratelimit_limit``):
    the first component's field of that name, else ``name`` itself."""
    from dataclasses import fields

    names = {f.name for f in fields(Settings)}
    return next((f"{c}_{name}" for c in ALL_PARTS if f"{c}_{name}" in names), name)


class Before:
    """What the stack found out before the app runs (internal to :meth:`StackCore.decide`).

    Built for every request: its fields start as these class attributes, set on the
    instance only when found (no ``__init__`` to run, as for a session's flags).
    """

    session: Session | None = None
    incoming: IncomingCookie | None = None
    check: Check | None = None  # a rate-limit check not counted yet
    decision: Decision | None = None  # the rate-limit verdict (None: not limited)
    plan: CachePlan | None = None
    lookup: Lookup | None = None  # None: the cache is bypassed
    bypass: str = "redis-unavailable"  # why, when it is
    user: str | None = None


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
class Incoming:
    """A request as the adapter hands it to the stack (translated from scope or environ)."""

    request: RequestInfo
    http: bool = True  # False: a WebSocket
    https: bool = False
    head: bool = False
    raw: bool = False  # headers as ASGI wants them (bytes)
    # Who an outer layer says the user is (REMOTE_USER, an outer session's user field).
    outer_user: Callable[[], str | None] = lambda: None
    # The session an outer layer opened, for a cache without sessions of its own.
    outer_session: Callable[[], object] = lambda: None
    # WSGI: given a session id, what loads it on first access; used when nothing before
    # the app needs the session (sessions alone).
    load_later: Callable[[str], Loader] | None = None


@dataclass(slots=True, kw_only=True)
class Action:
    """What the adapter does with a request; it carries the session to put in the
    scope or environ, and the user."""

    session: Session | None = None
    user: str | None = None


@dataclass(slots=True, kw_only=True)
class Pass(Action):
    """Call the app as it is: nothing to add to its response."""


@dataclass(slots=True, kw_only=True)
class Refuse(Action):
    """Answer without the app: rate limited (a WebSocket is closed with ``reason``)."""

    response: Response
    reason: str


@dataclass(slots=True, kw_only=True)
class Serve(Action):
    """Answer from the cache: ``response`` (its status and body) with ``headers`` (bytes
    pairs when asked ``raw``); ``refresh``: then run the app again in the background
    under this exchange."""

    response: Response
    headers: list[Any]
    refresh: Exchange | None = None


@dataclass(slots=True, kw_only=True)
class Forward(Action):
    """Call the app under ``exchange``, which decides its response's way out (for a
    WebSocket: its finish flow runs when the socket ends)."""

    exchange: Exchange


class Limiter(Protocol):
    """Counts a check with a ``limits`` strategy (``_redis.strategies.LimitsStrategy``)."""

    def verdict(self, check: Check) -> Decision | None: ...

    async def averdict(self, check: Check) -> Decision | None: ...



class StackCore:
    """The enabled components' cores, and the flow that combines them.

    ``parts``: the components this stack runs; alone, a component runs whatever its
    ``*_enabled`` setting says (except rate limiting's, which always counts).
    """

    def __init__(self, settings: Settings, parts: tuple[str, ...] = ALL_PARTS) -> None:
        s = self.settings = settings
        alone = len(parts) == 1

        def on(part: str) -> bool:
            return part in parts and (alone or bool(getattr(s, f"{part}_enabled")))

        self.sessions = SessionCore(s) if on("session") else None
        self.ratelimit = RateLimitCore(s) if "ratelimit" in parts and s.ratelimit_enabled and (
            s.ratelimit_limit or s.ratelimit_rules) else None
        self.cache = CacheCore(s) if on("cache") and s.cache_routes else None
        self.presence = PresenceCore(s) if on("presence") else None
        # Exempt paths skip everything in the stack, and rate limiting alone.
        self.exempt = [PathPattern.compile(p) for p in s.ratelimit_exempt] if (
            "ratelimit" in parts) else []
        self.fixed_window = self.ratelimit is None or self.ratelimit.fixed_window
        self.refusals = Refusals(s.refusal_handler, s.breaker_cooldown)
        # Set by the adapter for strategies other than the fixed window (they need a
        # client of the limits library, which lives on the Redis floor).
        self.limiter: Limiter | None = None
        # The cache alone before the app, with a near cache: a fresh entry held in memory
        # is served before anything else is built (no flow, no round trip).
        self.near_first = self.cache is not None and self.cache.near is not None and (
            self.sessions is None and self.ratelimit is None and self.presence is None)

    def decide(self, incoming: Incoming, now: float) -> PausingFlow[Action]:
        """Everything before the app, in at most two round trips (plus a wait for the
        stampede guard's holder): what the adapter does with the request."""
        request = incoming.request
        if self.exempt and self.is_exempt(request.path):
            return Pass()
        if self.near_first and incoming.http:
            served = self._near_hit(incoming)
            if served is not None:
                return served
        before = yield from self.before_flow(incoming)
        session, user = before.session, before.user
        decision = before.decision
        if decision is not None and not decision.allowed:
            response = self.refusals.rate_limited(request, decision.status, decision.detail,
                                                  decision.headers)
            yield from self._release_flow(before)
            return Refuse(response=response, reason=decision.detail, session=session,
                          user=user)
        extra = decision.headers if decision is not None else ()
        if not incoming.http:
            return Forward(exchange=Exchange(self._socket_parts(before)), session=session,
                           user=user)
        cache, plan, lookup = self.cache, before.plan, before.lookup
        if cache is not None and plan is not None and lookup is not None and (
                not plan.invalidate):
            resolved = yield from cache.resolve_flow(plan, lookup)
            before.lookup, before.bypass = resolved.lookup, resolved.bypass or before.bypass
            if resolved.serve is not None:
                refresh = Exchange((CachePart(cache, plan, before.lookup, False, now,
                                              lambda: ""),)) if resolved.refresh else None
                return self._serve(cache, plan, resolved.serve, incoming, extra, refresh,
                                   session, user)
        exchange = self._exchange(before, incoming, now, extra)
        if not exchange.parts and not extra:
            return Pass(session=session, user=user)
        return Forward(exchange=exchange, session=session, user=user)

    @staticmethod
    def _serve(cache: CacheCore, plan: CachePlan, entry: Entry, incoming: Incoming,
               extra: Headers, refresh: Exchange | None, session: Session | None,
               user: str | None) -> Serve:
        if incoming.raw:
            status, raw, body = cache.hit_raw(plan, entry, incoming.head)
            headers: list[Any] = [*raw, *encode_headers(list(extra))] if extra else raw
        else:
            status, text, body = cache.hit(plan, entry, incoming.head)
            headers = [*text, *extra]
        return Serve(response=Response(status, (), body), headers=headers, refresh=refresh,
                     session=session, user=user)

    def _near_hit(self, incoming: Incoming) -> Serve | None:
        """A stack of the cache alone: a fresh entry the near cache holds (the rest of the
        way, a miss included, is :meth:`before_flow`'s)."""
        cache = self.cache
        assert cache is not None
        plan = cache.plan(incoming.request)
        if plan is None or not plan.lookup or plan.invalidate:
            return None
        found = cache.near_entry(plan, time.time())
        if found is None:
            return None
        return self._serve(cache, plan, found[2], incoming, (), None, None,
                           incoming.outer_user())

    def _exchange(self, before: Before, incoming: Incoming, now: float,
                  extra: Headers) -> Exchange:
        """The response half of a request the app answers (``extra``: rate-limit headers)."""
        parts: list[Part] = []
        session = before.session
        if self.cache is not None and before.plan is not None:
            used: Callable[[], SessionUse] = (lambda: session_use(session)) if (
                self.sessions is not None) else (lambda: session_use(incoming.outer_session()))
            parts.append(CachePart(self.cache, before.plan, before.lookup, incoming.head, now,
                                   used, before.bypass))
        if self.sessions is not None and session is not None and before.incoming is not None:
            request, refusals = incoming.request, self.refusals
            parts.append(SessionPart(self.sessions, session, before.incoming, incoming.https,
                                     lambda: refusals.session_unavailable(request)))
        return Exchange(parts, extra)

    def _socket_parts(self, before: Before) -> tuple[Part, ...]:
        """No cookie can be set on a socket: when it ends, only a live session's changes
        are written."""
        if self.sessions is None or before.session is None or before.incoming is None:
            return ()
        return (SocketSessionPart(self.sessions, before.session, before.incoming),)

    def _release_flow(self, before: Before) -> Flow[None]:
        if self.cache is not None and before.plan is not None and before.lookup is not None:
            try:
                yield from self.cache.release_flow(before.plan, before.lookup)
            except RedisMiddlewareError as exc:
                log_failure("cache", "stampede guard not released: %s", exc)

    def is_exempt(self, path: str) -> bool:
        return any(p.matches(path) for p in self.exempt)

    def before_flow(self, incoming: Incoming) -> PausingFlow[Before]:
        """Load, count, look up and heartbeat, in at most two round trips."""
        request, http, outer_user = incoming.request, incoming.http, incoming.outer_user
        out = Before()
        loading = lazy = False
        if self.sessions is not None:
            out.incoming = self.sessions.read_cookie(request.cookies)
            session_id = out.incoming.session_id
            later = incoming.load_later
            lazy = later is not None and session_id is not None and self.ratelimit is None and (
                self.presence is None and self.cache is None)
            if lazy and later is not None and session_id is not None:
                out.session = self.sessions.session_for(out.incoming, later(session_id))
            else:
                out.session = self.sessions.session_for(out.incoming)
                loading = session_id is not None
        out.plan = self.cache.plan(request) if self.cache is not None and http else None
        lookup = out.plan is not None and out.plan.lookup
        count_hits = self.settings.ratelimit_count_cache_hits or not lookup

        # Round trip 1: nothing here depends on who the user is.
        first: dict[str, Flow[Any]] = {}
        if loading and out.session is not None and out.incoming is not None:
            first["session"] = self.sessions.load_flow(out.incoming.session_id)  # type: ignore[union-attr, arg-type]
        early = self.ratelimit is not None and (
            not loading or not self.ratelimit.needs_user(request))
        if early and count_hits:
            self._add_check(first, out, request, outer_user)
        if lookup and out.plan is not None and self.cache is not None:
            first["cache"] = self.cache.lookup_flow(out.plan)
        if self.presence is not None and self.presence.sweep_due():
            first["sweep"] = self.presence.sweep_flow(secrets.token_hex(8))
        # An API client known by its credential needs no session: its heartbeat goes now.
        credential = self.presence.identity(None, lambda: request) if (
            self.presence is not None and http and self.presence.by_credential) else None
        if credential is not None and self.presence is not None and self.presence.due(
                credential):
            first["presence"] = self.presence.heartbeat_flow(credential)
        results = yield from self._gather(first)
        if "session" in results and out.session is not None:
            loaded = results["session"]
            if isinstance(loaded, RedisMiddlewareError):
                out.session.fail(loaded)
            else:
                out.session.set_loaded(loaded)
        self._take(results, out)
        if isinstance(results.get("cache"), RedisMiddlewareError):
            log_failure("cache", "cache bypassed: %s", results["cache"])
        elif "cache" in results:
            out.lookup = results["cache"]
        # Whether the entry found will be served (asked only when hits are not counted).
        hit = not count_hits and out.lookup is not None and out.plan is not None and (
            self.cache is not None and self.cache.servable(
                out.plan, out.lookup.entry, time.time()) is not None)

        # Round trip 2: what needs the user (only when a session was loaded).
        out.user = (out.session.identity() if out.session is not None and not lazy
                    else None) or outer_user()
        second: dict[str, Flow[Any]] = {}
        if self.ratelimit is not None and "ratelimit" not in results and out.check is None and (
                not early or not count_hits) and not hit:
            user = out.user
            self._add_check(second, out, request, lambda: user)
        if credential is None and out.user is not None and self.presence is not None and \
                self.presence.due(out.user):
            second["presence"] = self.presence.heartbeat_flow(out.user)
        if second:  # most requests: nothing needed the user
            results = yield from self._gather(second)
            self._take(results, out)
        if out.check is not None and self.limiter is not None:  # moving / sliding windows
            check, limiter = out.check, self.limiter
            decision: Decision | None = yield Delegate(lambda: limiter.verdict(check),
                                                       lambda: limiter.averdict(check))
            out.decision = decision
            out.check = None
        return out

    def _add_check(self, flows: dict[str, Flow[Any]], out: Before, request: RequestInfo,
                   user: Callable[[], str | None]) -> None:
        assert self.ratelimit is not None
        out.check = self.ratelimit.prepare(request, user)
        if out.check is not None and self.fixed_window:  # others: counted by the strategy
            flows["ratelimit"] = self.ratelimit.fixed_window_flow(out.check)

    def _take(self, results: dict[str, Any], out: Before) -> None:
        if "presence" in results or "sweep" in results:  # most requests: neither ran
            for name in ("presence", "sweep"):
                if isinstance(results.get(name), RedisMiddlewareError):
                    log_failure("presence", "presence skipped: %s", results[name])
        if "ratelimit" in results and self.ratelimit is not None and out.check is not None:
            verdict = results["ratelimit"]
            out.decision = (self.ratelimit.unavailable(out.check, verdict)
                            if isinstance(verdict, RedisMiddlewareError) else verdict)
            out.check = None

    @staticmethod
    def _gather(flows: dict[str, Flow[Any]]) -> Flow[dict[str, Any]]:
        if not flows:
            return {}
        if len(flows) == 1:  # the common case: no merging needed
            ((name, flow),) = flows.items()
            try:
                return {name: (yield from flow)}
            except RedisMiddlewareError as exc:
                return {name: exc}
        values = yield from gather(*flows.values(), return_exceptions=True)
        for value in values:
            if isinstance(value, Exception) and not isinstance(value, RedisMiddlewareError):
                raise value
        return dict(zip(flows, values, strict=True))
