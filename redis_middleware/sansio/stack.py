"""The one-line stack, decided without I/O: sessions, rate limiting, caching and presence
in the right order, sharing round trips.

Before the app, at most two round trips: the first carries everything that does not
depend on who the user is (session load, cache lookup, an IP rate limit, the
presence sweep); the second, only when a session was loaded, carries what does (a
per-user rate limit, the presence heartbeat). After the app, at most one: the
session's changes, or the cache entry.
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
from .cache import CacheCore, CachePlan, Lookup, Resolved
from .exchange import CachePart, Exchange, Part, SessionPart
from .flow import Delegate, Flow, PausingFlow, gather
from .incidents import log_failure
from .presence import PresenceCore
from .ratelimit.core import Check, Decision, RateLimitCore
from .request import RequestInfo
from .responses import Headers, Refusals, Response
from .sessions.cookies import IncomingCookie
from .sessions.core import SessionCore
from .sessions.mapping import Session, session_use

__all__ = ["Before", "StackCore", "resolve_stack_settings"]

_COMPONENTS = ("session", "ratelimit", "cache", "presence")


def resolve_stack_settings(settings: Settings | None, options: dict[str, Any]) -> Settings:
    """Flat options: each goes to the first component whose setting it names."""
    mapped = {stack_field(name): value for name, value in options.items()}
    return resolve_settings(settings, "stack", mapped)


def stack_field(name: str) -> str:
    """The Settings field a flat stack option names (``limit`` -> ``ratelimit_limit``):
    the first component's field of that name, else ``name`` itself."""
    from dataclasses import fields

    names = {f.name for f in fields(Settings)}
    return next((f"{c}_{name}" for c in _COMPONENTS if f"{c}_{name}" in names), name)


@dataclass
class Before:
    """What the stack decided before the app runs."""

    session: Session | None = None
    incoming: IncomingCookie | None = None
    check: Check | None = None  # a rate-limit check not counted yet
    decision: Decision | None = None  # the rate-limit verdict (None: not limited)
    plan: CachePlan | None = None
    lookup: Lookup | None = None  # None: the cache is bypassed
    bypass: str = "redis-unavailable"  # why, when it is
    user: str | None = None
    request: RequestInfo | None = None  # for the refusals (Accept, the app's handler)


class Limiter(Protocol):
    """Counts a check with a ``limits`` strategy (``_redis.strategies.LimitsStrategy``)."""

    def verdict(self, check: Check) -> Decision | None: ...

    async def averdict(self, check: Check) -> Decision | None: ...


class StackCore:
    """The enabled components' cores, and the flows that combine them."""

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.sessions = SessionCore(s) if s.session_enabled else None
        self.ratelimit = RateLimitCore(s) if s.ratelimit_enabled and (
            s.ratelimit_limit or s.ratelimit_rules) else None
        self.cache = CacheCore(s) if s.cache_enabled and s.cache_routes else None
        self.presence = PresenceCore(s) if s.presence_enabled else None
        self.exempt = [PathPattern.compile(p) for p in s.ratelimit_exempt]
        self.fixed_window = self.ratelimit is None or self.ratelimit.fixed_window
        self.refusals = Refusals(s.refusal_handler, s.breaker_cooldown)
        # Set by the adapter for strategies other than the fixed window (they need a
        # client of the limits library, which lives on the Redis floor).
        self.limiter: Limiter | None = None

    def exchange(self, before: Before, https: bool, head: bool, now: float,
                 extra: Headers) -> Exchange:
        """The response half of a request the app answers (``extra``: rate-limit headers)."""
        parts: list[Part] = []
        session = before.session
        if self.cache is not None and before.plan is not None:
            parts.append(CachePart(self.cache, before.plan, before.lookup, head, now,
                                   lambda: session_use(session),
                                   before.bypass))
        if self.sessions is not None and session is not None and before.incoming is not None:
            request, refusals = before.request, self.refusals
            parts.append(SessionPart(self.sessions, session, before.incoming, https,
                                     lambda: refusals.session_unavailable(request)))
        return Exchange(parts, extra)

    def hit_flow(self, before: Before) -> PausingFlow[Resolved | None]:
        """What the cache does with this request, after waiting for the guard's holder
        if needed (None, or nothing to serve: the app computes the response)."""
        cache, plan, lookup = self.cache, before.plan, before.lookup
        if cache is None or plan is None or lookup is None or plan.invalidate:
            return None
        resolved = yield from cache.resolve_flow(plan, lookup)
        before.lookup = resolved.lookup
        before.bypass = resolved.bypass or before.bypass
        return resolved

    def refresh_exchange(self, before: Before, now: float) -> Exchange:
        """The response half of a background refresh (stale-while-revalidate): the cache
        alone; what the app does to the session there is not saved."""
        assert self.cache is not None and before.plan is not None
        return Exchange((CachePart(self.cache, before.plan, before.lookup, False, now,
                                   lambda: ""),))

    def rejection(self, before: Before, decision: Decision) -> tuple[Response, Flow[None]]:
        """The 429 (or fail-closed 503) and the flow that frees what the request held."""
        response = self.refusals.rate_limited(before.request, decision.status,
                                              decision.detail, decision.headers)
        return response, self._release_flow(before)

    def _release_flow(self, before: Before) -> Flow[None]:
        if self.cache is not None and before.plan is not None and before.lookup is not None:
            try:
                yield from self.cache.release_flow(before.plan, before.lookup)
            except RedisMiddlewareError as exc:
                log_failure("cache", "stampede guard not released: %s", exc)

    def is_exempt(self, path: str) -> bool:
        return any(p.matches(path) for p in self.exempt)

    def before_flow(self, request: RequestInfo, outer_user: str | None, http: bool
                    ) -> PausingFlow[Before]:
        """Load, count, look up and heartbeat, in at most two round trips."""
        out = Before(request=request)
        if self.sessions is not None:
            out.incoming = self.sessions.read_cookie(request.cookies)
            out.session = self.sessions.session_for(out.incoming)
        loading = out.incoming is not None and out.incoming.session_id is not None
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
            self._add_check(first, out, request, lambda: outer_user)
        if lookup and out.plan is not None and self.cache is not None:
            first["cache"] = self.cache.lookup_flow(out.plan)
        if self.presence is not None and self.presence.sweep_due():
            first["sweep"] = self.presence.sweep_flow(secrets.token_hex(8))
        # An API client known by its credential needs no session: its heartbeat goes now.
        credential = self.presence.identity(None, lambda: request) if (
            self.presence is not None and http) else None
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
        hit = out.lookup is not None and out.plan is not None and self.cache is not None and \
            self.cache.servable(out.plan, out.lookup.entry, time.time()) is not None

        # Round trip 2: what needs the user (only when a session was loaded).
        out.user = (out.session.identity() if out.session is not None else None) or outer_user
        second: dict[str, Flow[Any]] = {}
        if self.ratelimit is not None and "ratelimit" not in results and out.check is None and (
                not early or not count_hits) and not (hit and not count_hits):
            self._add_check(second, out, request, lambda: out.user)
        if credential is None and out.user is not None and self.presence is not None and \
                self.presence.due(out.user):
            second["presence"] = self.presence.heartbeat_flow(out.user)
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
        check = self.ratelimit.prepare(request, user)
        if check is None:
            return
        if self.fixed_window:
            flows["ratelimit"] = self.ratelimit.fixed_window_flow(check)
            out.check = check
        else:
            out.check = check  # counted by the limits strategy, at the end of before_flow

    def _take(self, results: dict[str, Any], out: Before) -> None:
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
