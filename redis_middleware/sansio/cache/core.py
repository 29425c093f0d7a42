"""Response caching, decided without I/O: what may be served, what may be stored, and how.

Data layout (``docs/cache.md``), per URL (path + canonical query) digest ``U``:
``<prefix>:cache:{U}:vary`` (the request headers that the URL's responses vary
on, learned from ``Vary`` as Django does), ``<prefix>:cache:{U}:e:<variant>``
(one stored response; the variant is a SHA-1 of the scheme, the host and the values
of the varied headers; each process remembers a URL's vary names, so a hit costs one
round trip),
``<prefix>:cache:{U}:lock:<variant>`` (the stampede guard) and
``<prefix>:cache:{U}:variants`` (for purging a URL). Tag sets and the URL
registry (``<prefix>:cache:tag:{t}``, ``<prefix>:cache:{urls}``) make purges
proportional to what they purge.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Sequence
from typing import Any

from ..._memo import Memo, Recent
from ...config.patterns import RouteTable
from ...config.rules import CacheRouteSpec
from ...config.settings import Settings
from ...errors import RedisMiddlewareError
from ...keys import KeySpace, digest
from .. import metrics
from ..flow import Call, Flow, Pause, PausingFlow
from ..request import RequestInfo
from .cache_control import parse_cache_control
from .entry import (
    ANY_COOKIE,
    CachePlan,
    Entry,
    Lookup,
    NextStep,
    Outcome,
    Resolved,
    Verdict,
    canonical_query,
    encode_headers,
    lp,
    lpb,
)
from .near import MISS, NearView, Ticket, near_for
from .purge import Purging
from .scripts import LOOKUP, RELEASE, STORE
from .serve import servable, served, usable_if_error, validators
from .storing import Storing

__all__ = ["OWN_TARGET", "CacheCore"]

OWN_TARGET = "redismiddleware-cache-control"  # the targeted field aimed at this cache only
_MEMO_MAX_ENTRY = 32 * 1024  # larger entries are decoded per hit (the memo stays small)


class CacheCore(Purging, Storing):
    """Every caching decision; the ASGI and WSGI adapters only run its flows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.routes: RouteTable[CacheRouteSpec] = RouteTable(settings.cache_routes)
        self.statuses = frozenset(settings.cache_statuses)
        self.max_body = settings.cache_max_body
        self.lock_ms = int(settings.cache_lock_timeout * 1000)
        self.allowed_hosts = frozenset(settings.cache_allowed_hosts)
        self.targets = settings.cache_targets
        self.own_targets = frozenset({OWN_TARGET} & set(self.targets))
        self.keep_stale = settings.cache_keep_stale
        # Per-process memos of pure computations, bounded (their keys come from requests).
        self._names: Recent[str, str] = Recent(10_000)  # url digest -> vary names, as last seen
        self._routes: Memo[str, CacheRouteSpec | None] = Memo(4096)  # path -> route
        self._route_names = {id(spec): pattern for pattern, spec in settings.cache_routes}
        self._urls: Memo[tuple[str, bytes], str] = Memo(4096)  # path, query -> url digest
        self._origins: Memo[tuple[str, str], str] = Memo(256)  # scheme, host -> variant
        # (for a URL without Vary)
        # (scheme, host, vary names, each name's value) -> variant (for a URL with Vary)
        self._variants: Memo[tuple[Any, ...], str] = Memo(4096)
        self._split: Memo[str, tuple[str, ...]] = Memo(1024)  # stored vary names, split
        self._lookup_keys: Memo[tuple[str, str], tuple[str, str, str]] = Memo(4096)
        # Decoding a stored entry (JSON metadata, headers) happens once per entry and
        # process, not per hit: small entries are remembered by their exact bytes.
        self._decoded: Memo[bytes, Entry | None] = Memo(
            128, max_entry_chars=_MEMO_MAX_ENTRY, max_chars=128 * _MEMO_MAX_ENTRY)
        self._tokens = itertools.count()
        self._token_prefix = secrets.token_hex(6) + "-"
        self.session_marker = ANY_COOKIE + settings.session_cookie_name
        # The near cache (``near_cache_size``): a fresh entry whose vary names and entry
        # this process holds is served with no round trip (``lookup_flow``).
        self.near: NearView | None = near_for(settings)

    # -- planning -------------------------------------------------------------
    def url_digest(self, path: str, query: str) -> str:
        return digest(lp(path, canonical_query(query)))

    def route_name(self, plan: CachePlan) -> str:
        """The pattern of the plan's route, as configured (a bounded metric label)."""
        return str(self._route_names.get(id(plan.route), "?"))

    def route(self, path: str) -> CacheRouteSpec | None:
        try:
            return self._routes[path]
        except KeyError:
            found = self.routes.match(path)
            return self._routes.put(path, found[1] if found is not None else None)

    def plan(self, request: RequestInfo) -> CachePlan | None:
        """None when the cache has nothing to do with this request."""
        method = request.method
        if method in ("OPTIONS", "TRACE"):
            return None  # safe, never stored
        route = self.route(request.path)
        if route is None:
            return None
        host = cache_control = pragma = authorization = inm = ims = ranges = None
        if_range = False
        for k, v in request.headers:  # one pass; the first of a repeated header counts
            if k not in _PLAN_FIELDS:  # most headers: one set lookup, not eight compares
                continue
            if k == "host":
                host = host if host is not None else v.lower()
            elif k == "cache-control":
                cache_control = v if cache_control is None else f"{cache_control}, {v}"
            elif k == "pragma":
                pragma = pragma if pragma is not None else v
            elif k == "authorization":
                authorization = authorization if authorization is not None else v
            elif k == "if-none-match":
                inm = v if inm is None else f"{inm}, {v}"
            elif k == "if-modified-since":
                ims = ims if ims is not None else v
            elif k == "range":
                ranges = ranges if ranges is not None else v
            elif k == "if-range":
                if_range = True
        host = host or ""
        if self.allowed_hosts and host not in self.allowed_hosts:
            return None  # unknown Host: bypass (no poisoning through odd Host values)
        url_key = (request.path, request.query_string)
        url = self._urls.get(url_key)
        if url is None:
            url = self._urls.put(url_key, self.url_digest(
                request.path, request.query_string.decode("latin-1")))
        if not self.settings.cache_request_directives:
            cache_control = pragma = None  # as nginx and Varnish: clients cannot force misses
        req_cc = parse_cache_control(cache_control) if cache_control else {}
        safe = method in ("GET", "HEAD")
        headers = request.headers
        jar = request.cookies
        has_cookie, has_session = bool(jar), self.settings.session_cookie_name in jar
        headers += ((ANY_COOKIE, "1" if has_cookie else ""),
                    (self.session_marker, "1" if has_session else ""))
        if route.vary_cookies:
            headers += tuple((f"cookie:{name}", jar.get(name, "")) for name in route.vary_cookies)
        return CachePlan(
            route=route, url=url, host=host, scheme=request.scheme.lower(),
            # 5.2.1.4 and RFC 9111 5.4 (Pragma, when the request has no Cache-Control)
            lookup=safe and "no-cache" not in req_cc and (
                cache_control is not None or pragma != "no-cache"),
            store=method == "GET" and "no-store" not in req_cc,
            invalidate=not safe,
            authorization=authorization is not None,
            headers=headers,
            if_none_match=inm,
            if_modified_since=ims,
            directives=req_cc,
            path=request.path,
            range=None if if_range else ranges,  # If-Range: the whole entry (allowed)
            cookie=has_cookie,
            session_cookie=has_session,
        )

    # -- flows ------------------------------------------------------------------
    def lookup_flow(self, plan: CachePlan, now: float | None = None) -> Flow[Lookup]:
        """Find the entry for this request's variant and take the stampede guard.

        One round trip when this process knows the URL's vary names; two when it
        learns them (first request per URL, or after the app changed its Vary). None at
        all when the near cache holds a fresh entry (:meth:`near_hit`): the flow returns
        before its first batch. A lookup that goes to Redis keeps what it read there.
        """
        at = time.time() if now is None else now
        found = self.near_hit(plan, at)
        if found is not None:
            return found
        token = self._token_prefix + str(next(self._tokens))  # unique: owns the guard
        now_ms = int(at * 1000)
        names = self._names.get(plan.url, "")
        near = self.near
        for _ in range(3):
            variant, guarded, keys = self._variant_keys(plan, names)
            tickets: tuple[Ticket | None, Ticket | None] = (None, None)
            if near is not None:
                tickets = (near.ticket(keys[0]), near.ticket(keys[1]))
            try:
                (reply,) = yield (LOOKUP(keys, [names, now_ms, self.lock_ms if guarded else 0,
                                                 token]),)
            except BaseException:
                if near is not None:
                    near.drop(tickets[0])
                    near.drop(tickets[1])
                raise
            # The names were sent as UTF-8 (as every str argument is): read them back so.
            stored = reply[0].decode("utf-8", "replace") if isinstance(
                reply[0], bytes) else str(reply[0])
            if stored == names:
                entry = self.decode(reply[1]) if reply[1] else None
                if near is not None:
                    self._keep(near, tickets, stored, reply[1], entry, at)
                return Lookup(variant, entry, bool(reply[2]), token, now_ms / 1000, guarded)
            if near is not None:
                self._keep(near, tickets, stored, None, None, at)
            names = self._remember(plan.url, stored)
        # The names keep changing: a miss that holds no guard and waits for none.
        return Lookup(variant, None, False, token, guarded=False)

    def near_hit(self, plan: CachePlan, now: float | None = None) -> Lookup | None:
        """The lookup of a fresh entry the near cache holds, with the URL's vary names this
        process knows; None for anything else (missing, stale, other names, a request's
        directives asking for more), which Redis decides: its script takes the guard."""
        if self.near is None:
            return None
        at = time.time() if now is None else now
        found = self.near_entry(plan, at)
        if found is None:
            return None
        variant, guarded, entry = found
        return Lookup(variant, entry, False, self._token_prefix + str(next(self._tokens)), at,
                      guarded)

    def near_entry(self, plan: CachePlan, now: float) -> tuple[str, bool, Entry] | None:
        """:meth:`near_hit`'s variant, guard and entry, without building a lookup."""
        near = self.near
        if near is None:
            return None
        names = self._names.get(plan.url, "")
        variant, guarded, keys = self._variant_keys(plan, names)
        kept_names, entry = near.get_many(keys[:2])
        if entry is MISS or kept_names != names or self.servable(plan, entry, now) != "fresh":
            return None
        return variant, guarded, entry

    def _variant_keys(self, plan: CachePlan, names: str
                      ) -> tuple[str, bool, tuple[str, str, str]]:
        """The variant of ``names``, whether it is guarded, and its lookup keys."""
        split = self._split.get(names)
        if split is None:
            split = self._split.put(names, tuple(n for n in names.split("\n") if n))
        variant = self.variant(plan, split)
        # No guard where nothing can be stored: a request with the cookie that the URL's
        # entries vary on the absence of (signed-in users) computes its own response,
        # and such requests must not wait for each other.
        guarded = self.storable_variant(plan, split)
        keys = self._lookup_keys.get((plan.url, variant))
        if keys is None:
            keys = self._lookup_keys.put((plan.url, variant), (
                self.keys.cache_vary(plan.url), self.keys.cache_entry(plan.url, variant),
                self.keys.cache_lock(plan.url, variant)))
        return variant, guarded, keys

    @staticmethod
    def _keep(near: NearView, tickets: tuple[Ticket | None, Ticket | None], names: str,
              raw: bytes | None, entry: Entry | None, now: float) -> None:
        """Keep what a lookup read in the near cache: the vary names, and the entry while
        it is fresh (a decoded entry is shared: nothing changes it)."""
        near.put(tickets[0], names, len(names), copy=False)
        if raw and entry is not None and not entry.never_fresh and entry.fresh_until > now:
            near.put(tickets[1], entry, len(raw), (entry.fresh_until - now) * 1000, copy=False)
        else:
            near.drop(tickets[1])

    def storable_variant(self, plan: CachePlan, names: tuple[str, ...]) -> bool:
        """Whether a response to this request could be stored under ``names``: not when
        the entries vary on the absence of a cookie that the request carries."""
        return not ((plan.cookie and ANY_COOKIE in names) or (
            plan.session_cookie and self.session_marker in names))

    def decode(self, raw: bytes) -> Entry | None:
        """A stored entry, decoded once per process while it stays small and recent."""
        try:
            return self._decoded[raw]
        except KeyError:
            entry = Entry.decode(raw)
            return self._decoded.put(raw, entry)  # not kept when larger than _MEMO_MAX_ENTRY

    def _remember(self, url: str, names: str) -> str:
        return self._names.put(url, names)

    def poll_flow(self, plan: CachePlan, lookup: Lookup) -> Flow[Entry | None]:
        (raw,) = yield (Call.of("GET", self.keys.cache_entry(plan.url, lookup.variant)),)
        return self.decode(raw) if raw else None

    def release_flow(self, plan: CachePlan, lookup: Lookup) -> Flow[None]:
        if lookup.locked:
            yield (RELEASE([self.keys.cache_lock(plan.url, lookup.variant)], [lookup.token]),)

    def store_flow(self, plan: CachePlan, lookup: Lookup, verdict: Verdict, entry: Entry,
                   now: float | None = None) -> Flow[None]:
        """One round trip: the entry, the URL's vary names and indexes; releases the guard.

        The entry stays in Redis while fresh, then while it may be served stale
        (stale-while-revalidate, stale-if-error) or, with a validator, revalidated
        (``cache_keep_stale``).
        """
        now = time.time() if now is None else now
        keep = max(entry.swr, entry.sie, self.keep_stale if entry.validated else 0)
        life = max(entry.fresh_until - now, 0.0) + keep
        px = max(1000, int(life * 1000))
        # The lookup's variant came from the vary names stored before; this response
        # may vary on other headers, so the variant is computed for its own names.
        names = "\n".join(verdict.vary)
        variant = self.variant(plan, verdict.vary)
        self._remember(plan.url, names)
        # The URL registry and tag sets are ZSETs scored by expiry, pruned as they are
        # written, so they stay bounded by the live entries however long traffic lasts.
        expires = int(now * 1000) + px
        encoded = entry.encode()
        self._decoded.put(encoded, entry)  # this process's next hit skips decoding
        vary_key, entry_key = self.keys.cache_vary(plan.url), self.keys.cache_entry(
            plan.url, variant)
        ops = [
            STORE([vary_key, self.keys.cache_variants(plan.url), entry_key,
                   self.keys.cache_lock(plan.url, lookup.variant)],
                  [names, encoded, px, lookup.token, int(now * 1000)]),
        ]
        tags = (self.keys.cache_tag(t) for t in plan.route.tags)
        for index in (self.keys.cache_registry(), *tags):
            ops += [Call.of("ZADD", index, "GT", expires, plan.url),
                    Call.of("ZREMRANGEBYSCORE", index, "-inf", int(now * 1000)),
                    Call.of("EXPIRE", index, max(self._max_life(), px // 1000 + 60))]
        yield from self._writing((vary_key, entry_key), tuple(ops))

    def _writing(self, keys: Sequence[str], batch: tuple[Call, ...]) -> Flow[list[Any]]:
        """Send a batch that writes ``keys``: this process's near cache forgets them
        before and after, so that it never serves what the write replaced (Redis tells
        it too, but the other processes' way: by the next drain)."""
        near = self.near
        if near is None:
            return (yield batch)
        near.forget(*keys)
        try:
            return (yield batch)
        finally:
            near.forget(*keys)

    def variant(self, plan: CachePlan, names: tuple[str, ...]) -> str:
        """The entry of this request among the URL's variants, for the given vary names.

        The one place that tells a URL's entries apart: by origin (the scheme and the
        host, RFC 9111 2: the target URI is the key), then by the varied headers. The
        URL digest leaves both out, so purging a URL drops every origin's entries.
        """
        origin = (plan.scheme, plan.host)
        if not names:  # the common case: a URL whose responses vary on nothing
            found = self._origins.get(origin)
            if found is None:
                found = self._origins.put(origin, hashlib.sha1(
                    lpb(plan.scheme) + lpb(plan.host)).hexdigest())
            return found
        # The varied headers' values (repeated ones joined with ", ", RFC 9110 5.3); the
        # Cookie and Host headers select nothing here (the cookie markers and the origin do).
        values: dict[str, str] = {}
        for k, v in plan.headers:
            if k in names and k != "cookie" and k != "host":
                values[k] = f"{values[k]}, {v}" if k in values else v
        key = (plan.scheme, plan.host, names, *[values.get(n, "") for n in names])
        found = self._variants.get(key)
        if found is None:
            material = lpb(plan.scheme) + lpb(plan.host) + b"".join(
                lpb(n) + lpb(values.get(n, "")) for n in names)
            found = self._variants.put(key, hashlib.sha1(material).hexdigest())
        return found

    def _max_life(self) -> int:
        longest = max((spec.ttl for _, spec in self.settings.cache_routes), default=60)
        return longest * 2 + 60 + self.keep_stale

    # -- decisions ----------------------------------------------------------------
    # Pure rules of serving a stored entry (``serve.py``), kept reachable from here.
    servable = staticmethod(servable)
    conditional = staticmethod(validators)
    usable_if_error = staticmethod(usable_if_error)

    def next_step(self, plan: CachePlan, lookup: Lookup, now: float) -> NextStep:
        """``serve`` the entry, serve it and ``refresh`` it in the background, ``wait``
        for another request computing it, or ``compute``."""
        state = self.servable(plan, lookup.entry, now)
        if state == "fresh":
            return "serve"
        if state == "stale":  # stale-while-revalidate: the guard's holder refreshes
            return "refresh" if lookup.locked and plan.store else "serve"
        entry = lookup.entry
        fresh_elsewhere = entry is not None and now < entry.fresh_until
        # An entry that is never fresh (no-cache) is revalidated by every request: waiting
        # for another request's revalidation would never end in a fresh entry.
        if lookup.locked or not lookup.guarded or self.lock_ms == 0 or not plan.lookup or (
                fresh_elsewhere or (entry is not None and entry.never_fresh)):
            return "compute"  # ours to compute (or this request may not use the entry)
        return "wait"  # missing or expired, and another request holds the guard

    def resolve_flow(self, plan: CachePlan, lookup: Lookup) -> PausingFlow[Resolved]:
        """After a lookup: serve, refresh, wait for the guard's holder, or compute.

        Costs nothing unless it must wait: then it polls every 20 ms; after
        ``cache_lock_wait`` it computes uncached (``Resolved.lookup`` is None).
        """
        # Judged by the clock the script used, so both agree on whether it was fresh.
        step = self.next_step(plan, lookup, lookup.at or time.time())
        if step in ("serve", "refresh"):
            return Resolved(lookup.entry, lookup, step == "refresh")
        if step == "compute":
            return Resolved(None, lookup)
        deadline = time.monotonic() + self.settings.cache_lock_wait
        while time.monotonic() < deadline:
            yield Pause(0.02)
            try:
                entry = yield from self.poll_flow(plan, lookup)
            except RedisMiddlewareError:
                return Resolved(None, None, bypass="redis-unavailable")
            if self.servable(plan, entry, time.time()) == "fresh":
                return Resolved(entry, lookup)
        return Resolved(None, None, bypass="lock-timeout")

    # -- serving ------------------------------------------------------------------
    def hit(
        self, plan: CachePlan, entry: Entry, head: bool, now: float | None = None,
        outcome: Outcome = "hit",
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The stored response as served: status, headers and body (or a 304)."""
        code, kept, extra, body = self._served(plan, entry, head, now, outcome)
        return code, [*(entry.headers if kept is None else kept), *extra], body

    def hit_raw(
        self, plan: CachePlan, entry: Entry, head: bool, now: float | None = None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """:meth:`hit` with ASGI headers: the stored ones were encoded once, with the entry."""
        code, kept, extra, body = self._served(plan, entry, head, now, "hit")
        stored = entry.raw_headers if kept is None else encode_headers(kept)
        return code, [*stored, *encode_headers(extra)], body

    def _served(
        self, plan: CachePlan, entry: Entry, head: bool, now: float | None, outcome: Outcome,
    ) -> tuple[int, list[tuple[str, str]] | None, list[tuple[str, str]], bytes]:
        found = served(plan, entry, head, time.time() if now is None else now, outcome,
                       ANY_COOKIE in self._names.get(plan.url, ""))
        if metrics.hook is not None:
            x_cache = found[2][1][1]
            metrics.hook.cache(outcome if outcome != "hit" else x_cache.lower(),
                               self.route_name(plan), "")
        return found


# The request fields a plan reads (the rest of the headers only ride along for Vary).
_PLAN_FIELDS = frozenset({"host", "cache-control", "pragma", "authorization", "if-none-match",
                          "if-modified-since", "range", "if-range"})

