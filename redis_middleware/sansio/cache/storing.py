"""Whether a computed response may be stored, and as what (RFC 9111 3 for a shared
cache, with this package's rule for pages that read the session)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from ...config.rules import CacheRouteSpec
from ...config.settings import Settings
from .cache_control import split_tokens
from .entry import ANY_COOKIE, CachePlan, Entry, SessionUse, Verdict
from .freshness import freshness, stored_fields, updated_fields
from .serve import weak_equal

__all__ = ["Storing"]

# RFC 9110 5.1 and 5.6.2: a field name is a token. A Vary member that is not one names no
# request header, so no later request could be matched with the response.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Storing:
    """The storing rules of :class:`~.core.CacheCore` (which provides the settings)."""

    settings: Settings
    statuses: frozenset[int]
    targets: tuple[str, ...]
    own_targets: frozenset[str]
    session_marker: str

    def entry_of(self, verdict: Verdict, status: int, headers: Sequence[tuple[str, str]],
                 body: bytes, response_time: float) -> Entry:
        """The entry a storable response becomes."""
        f = verdict.fresh
        assert f is not None
        return Entry(status, stored_fields(headers, self.own_targets), body, response_time,
                     response_time - f.initial_age + f.lifetime, f.initial_age, f.swr, f.sie,
                     f.public, f.revalidate)

    def _route_freshness(self, route: CacheRouteSpec) -> tuple[int, int]:
        """The route's default TTL (0 in origin mode) and cap (0: none)."""
        mode = route.freshness or self.settings.cache_freshness
        cap = route.max_ttl if route.max_ttl is not None else self.settings.cache_max_ttl
        return (route.ttl if mode == "default" else 0), cap

    def verdict(
        self, plan: CachePlan, status: int, headers: Sequence[tuple[str, str]],
        session: SessionUse | bool = "", request_time: float | None = None,
        response_time: float | None = None,
    ) -> Verdict:
        """May this response be stored (RFC 9111 for a shared cache), and for how long?

        ``session``: what the request did with the session (``True`` reads as
        ``"read"``). A response that depends on the session or on cookies (``Vary:
        Cookie``) is stored only as the entry of the requests without them, which every
        such request shares; a request that carries them computes its own response.
        The route's ``per_user=False`` says the page is the same for everyone (stored
        and served whoever asks), and its ``vary_cookies`` keep one entry per value of
        those cookies. A response after which the session is changed is never stored.
        """
        if not plan.store:
            return Verdict(False, "request")
        use = ("read" if session else "") if isinstance(session, bool) else session
        if use == "written":
            return Verdict(False, "session-written")
        names = {k.lower() for k, _ in headers}
        if "set-cookie" in names:
            return Verdict(False, "set-cookie")
        vary = sorted({t.lower() for t in split_tokens(
            [v for k, v in headers if k.lower() == "vary"])})
        if "*" in vary:
            return Verdict(False, "vary-star")
        if not all(_FIELD_NAME.fullmatch(name) for name in vary):
            return Verdict(False, "vary-invalid")
        if "cookie" in vary or use:
            cookies = "cookie" in vary  # the app's own word: it may mean any cookie
            vary = [v for v in vary if v != "cookie"]
            route = plan.route
            if route.vary_cookies:
                vary += [f"cookie:{c}" for c in route.vary_cookies]
            elif not route.per_user:
                pass  # the same page for everyone: cookies are not part of the key
            elif (plan.cookie if cookies else plan.session_cookie):
                return Verdict(False, "session")
            else:  # the entry of every request without them
                vary.append(ANY_COOKIE if cookies else self.session_marker)
        now = time.time()
        default_ttl, cap = self._route_freshness(plan.route)
        f = freshness(
            status, headers, request_time=request_time if request_time is not None else now,
            response_time=response_time if response_time is not None else now,
            default_ttl=default_ttl, default_statuses=self.statuses, max_ttl=cap,
            authorization=plan.authorization, targets=self.targets,
            default_sie=self.settings.cache_stale_if_error)
        if not f.store:
            return Verdict(False, f.reason)
        return Verdict(True, "", f, tuple(sorted(vary)))

    def freshened(self, plan: CachePlan, entry: Entry, headers: Sequence[tuple[str, str]],
                  request_time: float, response_time: float, session: SessionUse = ""
                  ) -> tuple[Entry, Verdict] | None:
        """4.3.4: ``entry`` updated by the app's 304, and its verdict (None: the 304 is
        for another representation, or the updated response may not be stored)."""
        etag = next((v for k, v in headers if k.lower() == "etag"), "")
        if etag and entry.etag and not weak_equal(etag, entry.etag):
            return None
        merged = updated_fields(entry.headers, headers, self.own_targets)
        ages = tuple((k, v) for k, v in headers if k.lower() == "age")
        verdict = self.verdict(plan, entry.status, (*merged, *ages), session,
                               request_time, response_time)
        if not verdict.store:
            return None
        return self.entry_of(verdict, entry.status, merged, entry.body, response_time), verdict
