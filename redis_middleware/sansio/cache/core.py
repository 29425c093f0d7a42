"""Response caching, decided without I/O: what may be served, what may be stored, and how.

Data layout (``docs/cache.md``), per URL (path + canonical query) digest ``U``:
``<prefix>:cache:{U}:vary`` (the request headers that the URL's responses vary
on, learned from ``Vary`` as Django does), ``<prefix>:cache:{U}:e:<variant>``
(one stored response; the variant is a SHA-1 of the host and the values of the
varied headers; each process remembers a URL's vary names, so a hit costs one
round trip),
``<prefix>:cache:{U}:lock:<variant>`` (the stampede guard) and
``<prefix>:cache:{U}:variants`` (for purging a URL). Tag sets and the URL
registry (``<prefix>:cache:tag:{t}``, ``<prefix>:cache:{urls}``) make purges
proportional to what they purge.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ..._memo import Memo, Recent
from ...config.patterns import RouteTable
from ...config.rules import CacheRouteSpec
from ...config.settings import Settings
from ...errors import RedisMiddlewareError
from ...keys import KeySpace, digest
from .. import metrics
from ..flow import Call, Flow, Pause, PausingFlow, Script
from ..request import RequestInfo
from .cache_control import Directives, delta_seconds, parse_cache_control, split_tokens
from .freshness import Freshness, current_age, freshness, stored_fields, updated_fields
from .http_dates import parse_http_date

__all__ = ["CacheCore", "CachePlan", "Capture", "Entry", "Lookup", "Resolved", "SessionUse",
           "Verdict"]

# RFC 9110 15.4.5: what a 304 carries from the stored response.
NOT_MODIFIED_KEEP = ("cache-control", "content-location", "date", "etag", "expires", "vary")
# RFC 9110 9.2.1: safe methods never invalidate; any other method, known or not, does
# when it succeeds (RFC 9111 4.4).
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
OWN_TARGET = "redismiddleware-cache-control"  # the targeted field aimed at this cache only
CONDITIONAL = frozenset({"if-none-match", "if-modified-since", "if-match",
                         "if-unmodified-since", "if-range"})
_MEMO_MAX_ENTRY = 32 * 1024  # larger entries are decoded per hit (the memo stays small)
NAME = "rmw"
# What the request did with the session, as the response starts: nothing, read it, or
# changed it (something is written, or a cookie set). A framework-neutral value: the
# middleware's own session says it, and a framework's session says Vary: Cookie.
SessionUse = Literal["", "read", "written"]
# Request fields a session-dependent entry varies on. '?' is no token character (RFC 9110
# 5.6.2), so no request header has these names: "1" when the request carries a Cookie
# header at all / the session cookie, "" when not.
ANY_COOKIE = "cookie?"

# KEYS: vary names, entry, lock. ARGV: the vary names the entry key was computed
# for, now ms, lock ms (0: no guard), lock token. When the stored names differ,
# nothing is read and the caller retries with them (the rare second round trip).
_LOOKUP = Script("""
local names = redis.call('GET', KEYS[1]) or ''
if names ~= ARGV[1] then return {names, false, 0} end
local entry = redis.call('GET', KEYS[2])
local locked = 0
local fresh = entry and tonumber(string.match(entry, '^(%d+)')) > tonumber(ARGV[2])
if not fresh and tonumber(ARGV[3]) > 0 then
  if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[3]) then locked = 1 end
end
return {names, entry or false, locked}
""")

# KEYS: vary names, variants (a ZSET scored by expiry), entry, lock. ARGV: vary names,
# entry, px, lock token, now ms. The keys of one URL share a slot (the {U} hash tag).
_STORE = Script("""
local px, now = tonumber(ARGV[3]), tonumber(ARGV[5])
redis.call('SET', KEYS[3], ARGV[2], 'PX', px)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + px, KEYS[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < px then redis.call('PEXPIRE', KEYS[i], px) end
end
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
return 1
""")

_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS[1] = variants set, KEYS[2] = vary key: delete every stored variant of a URL.
_INVALIDATE = Script("""
local n = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do n = n + redis.call('DEL', key) end
redis.call('DEL', KEYS[1], KEYS[2])
return n
""")


NextStep = Literal["serve", "refresh", "wait", "compute"]  # what a request does next
Servable = Literal["fresh", "stale"]
Outcome = Literal["hit", "revalidated", "stale-if-error"]  # how a stored entry is served


def _lp(*parts: str) -> str:
    return "".join(f"{len(p)}:{p}" for p in parts)


def _lpb(text: str) -> bytes:
    raw = text.encode("latin-1")
    return b"%d:%s" % (len(raw), raw)


def canonical_query(query: str) -> str:
    """Pairs sorted; duplicates, empty values and the original encoding kept."""
    if not query:
        return ""
    pairs = [p.partition("=") for p in query.split("&") if p]
    return "&".join(k + s + v for k, s, v in sorted(pairs, key=lambda kvs: (kvs[0], kvs[2])))


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What this request may do with the cache."""

    route: CacheRouteSpec
    url: str
    host: str
    lookup: bool  # may be answered from the cache
    store: bool  # its response may be stored
    invalidate: bool  # not a safe method: a success purges the URL (RFC 9111 4.4)
    authorization: bool
    headers: tuple[tuple[str, str], ...]  # what the stored Vary names may select from
    # (the request's headers as they came, plus "cookie:<name>" for the route's cookies)
    if_none_match: str | None
    if_modified_since: str | None = None
    directives: Directives = field(default_factory=dict)  # the request's Cache-Control
    path: str = ""
    range: str | None = None  # a Range without If-Range (served from a complete entry)
    cookie: bool = False  # the request carries a Cookie header
    session_cookie: bool = False  # ... and the session cookie among them


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored response, with what its age and freshness are computed from."""

    status: int
    headers: tuple[tuple[str, str], ...]  # as the app sent them, but for what is not stored
    body: bytes
    stored_at: float  # the response time (RFC 9111 4.2.3)
    fresh_until: float
    initial_age: float = 0.0  # corrected initial age when it arrived
    swr: int = 0
    sie: int = 0
    public: bool = False
    revalidate: bool = False  # stale: must be revalidated before any use (5.2.2.2)
    # The headers as an ASGI server wants them, encoded once per entry (not per hit).
    raw_headers: tuple[tuple[bytes, bytes], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.raw_headers:
            object.__setattr__(self, "raw_headers", tuple(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers))

    def _field(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name), "")

    @property
    def etag(self) -> str:
        return self._field("etag")

    @property
    def last_modified(self) -> str:
        return self._field("last-modified")

    @property
    def validated(self) -> bool:
        """It carries a validator, so the app can confirm it with a 304."""
        return bool(self.etag or self.last_modified)

    @property
    def never_fresh(self) -> bool:
        """Stored with no lifetime (no-cache, max-age=0): every use is revalidated."""
        return self.revalidate and self.fresh_until <= self.stored_at

    def age(self, now: float) -> float:
        return current_age(self.initial_age, self.stored_at, now)

    def encode(self) -> bytes:
        meta = json.dumps({"s": self.status, "h": self.headers, "t": self.stored_at,
                           "a": self.initial_age, "w": self.swr, "i": self.sie,
                           "p": self.public, "r": self.revalidate}, separators=(",", ":"))
        return f"{int(self.fresh_until * 1000)}\n{meta}\n".encode() + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        try:
            fresh, meta, body = raw.split(b"\n", 2)
            m = json.loads(meta)
            return cls(int(m["s"]), tuple((str(k), str(v)) for k, v in m["h"]), body,
                       float(m["t"]), int(fresh) / 1000, float(m.get("a", 0)), int(m["w"]),
                       int(m["i"]), bool(m["p"]), bool(m.get("r", False)))
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable entry is a miss


@dataclass(frozen=True, slots=True)
class Lookup:
    variant: str
    entry: Entry | None
    locked: bool
    token: str
    at: float = 0.0  # the clock the lookup script judged freshness by (0: now)
    guarded: bool = True  # the stampede guard was asked for (not when nothing is storable)


@dataclass(frozen=True, slots=True)
class Resolved:
    """After a lookup: what the request does."""

    serve: Entry | None  # answer with this stored entry
    lookup: Lookup | None  # compute under it (None: compute uncached)
    refresh: bool = False  # also refresh the entry in the background (RFC 5861)
    bypass: str = ""  # why it computes uncached


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a response may be stored, and how (or why not)."""

    store: bool
    reason: str = ""
    fresh: Freshness | None = None
    vary: tuple[str, ...] = ()

    @property
    def ttl(self) -> int:
        """Whole seconds it stays fresh from its arrival (0 if stored stale)."""
        f = self.fresh
        return max(0, int(f.lifetime - f.initial_age)) if f is not None else 0


class CacheCore:
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
        self._hosts: Memo[str, str] = Memo(256)  # host -> variant, for a URL without Vary
        self._lookup_keys: Memo[tuple[str, str], tuple[str, str, str]] = Memo(4096)
        # Decoding a stored entry (JSON metadata, headers) happens once per entry and
        # process, not per hit: small entries are remembered by their exact bytes.
        self._decoded: Memo[bytes, Entry | None] = Memo(128)
        self._tokens = itertools.count()
        self._token_prefix = secrets.token_hex(6) + "-"
        self.session_marker = ANY_COOKIE + settings.session_cookie_name

    # -- planning -------------------------------------------------------------
    def url_digest(self, path: str, query: str) -> str:
        return digest(_lp(path, canonical_query(query)))

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
            route=route, url=url, host=host,
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
        learns them (first request per URL, or after the app changed its Vary).
        """
        token = self._token_prefix + str(next(self._tokens))  # unique: owns the guard
        now_ms = int((time.time() if now is None else now) * 1000)
        names = self._names.get(plan.url, "")
        for _ in range(3):
            split = tuple(n for n in names.split("\n") if n)
            variant = self.variant(plan, split)
            # No guard where nothing can be stored: a request with the cookie that the
            # URL's entries vary on the absence of (signed-in users) computes its own
            # response, and such requests must not wait for each other.
            guarded = self.storable_variant(plan, split)
            keys = self._lookup_keys.get((plan.url, variant))
            if keys is None:
                keys = self._lookup_keys.put((plan.url, variant), (
                    self.keys.cache_vary(plan.url), self.keys.cache_entry(plan.url, variant),
                    self.keys.cache_lock(plan.url, variant)))
            (reply,) = yield (_LOOKUP(keys, [names, now_ms, self.lock_ms if guarded else 0,
                                             token]),)
            stored = reply[0].decode("latin-1") if isinstance(reply[0], bytes) else str(reply[0])
            if stored == names:
                return Lookup(variant, self.decode(reply[1]) if reply[1] else None,
                              bool(reply[2]), token, now_ms / 1000, guarded)
            names = self._remember(plan.url, stored)
        return Lookup(variant, None, False, token)  # names keep changing: treat as a miss

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
            return self._decoded.put(raw, entry) if len(raw) <= _MEMO_MAX_ENTRY else entry

    def _remember(self, url: str, names: str) -> str:
        return self._names.put(url, names)

    def poll_flow(self, plan: CachePlan, lookup: Lookup) -> Flow[Entry | None]:
        (raw,) = yield (Call.of("GET", self.keys.cache_entry(plan.url, lookup.variant)),)
        return self.decode(raw) if raw else None

    def release_flow(self, plan: CachePlan, lookup: Lookup) -> Flow[None]:
        if lookup.locked:
            yield (_RELEASE([self.keys.cache_lock(plan.url, lookup.variant)], [lookup.token]),)

    def entry_of(self, verdict: Verdict, status: int, headers: Sequence[tuple[str, str]],
                 body: bytes, response_time: float) -> Entry:
        """The entry a storable response becomes."""
        f = verdict.fresh
        assert f is not None
        return Entry(status, stored_fields(headers, self.own_targets), body, response_time,
                     response_time - f.initial_age + f.lifetime, f.initial_age, f.swr, f.sie,
                     f.public, f.revalidate)

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
        if len(encoded) <= _MEMO_MAX_ENTRY:
            self._decoded.put(encoded, entry)  # this process's next hit skips decoding
        ops = [
            _STORE([self.keys.cache_vary(plan.url), self.keys.cache_variants(plan.url),
                    self.keys.cache_entry(plan.url, variant),
                    self.keys.cache_lock(plan.url, lookup.variant)],
                   [names, encoded, px, lookup.token, int(now * 1000)]),
        ]
        tags = (self.keys.cache_tag(t) for t in plan.route.tags)
        for index in (self.keys.cache_registry(), *tags):
            ops += [Call.of("ZADD", index, "GT", expires, plan.url),
                    Call.of("ZREMRANGEBYSCORE", index, "-inf", int(now * 1000)),
                    Call.of("EXPIRE", index, max(self._max_life(), px // 1000 + 60))]
        yield tuple(ops)

    def variant(self, plan: CachePlan, names: tuple[str, ...]) -> str:
        """The entry of this request among the URL's variants, for the given vary names."""
        if not names:  # the common case: a URL whose responses vary on nothing
            found = self._hosts.get(plan.host)
            if found is None:
                found = self._hosts.put(plan.host, hashlib.sha1(_lpb(plan.host)).hexdigest())
            return found
        values = dict(_joined([(k, v) for k, v in plan.headers if k not in ("cookie", "host")]))
        material = _lpb(plan.host) + b"".join(_lpb(n) + _lpb(values.get(n, "")) for n in names)
        return hashlib.sha1(material).hexdigest()

    def invalidate_flow(self, url: str, *more: str) -> Flow[int]:
        """Drop every stored variant of the URLs (digests)."""
        answers = yield tuple(
            _INVALIDATE([self.keys.cache_variants(u), self.keys.cache_vary(u)], [])
            for u in (url, *more))
        return sum(int(n) for n in answers)

    def invalidated_urls(self, plan: CachePlan, headers: Sequence[tuple[str, str]]
                         ) -> list[str]:
        """4.4: the URL itself, and the same-origin URLs in Location and Content-Location
        that a route caches."""
        urls = [plan.url]
        for name in ("location", "content-location"):
            for value in (v for k, v in headers if k.lower() == name):
                parts = urlsplit(value.strip())
                if parts.netloc and parts.netloc.lower() != plan.host:
                    continue  # another origin: never ours to invalidate (4.4)
                path = parts.path if parts.path.startswith("/") else None
                if path is None or self.route(path) is None:
                    continue
                url = self.url_digest(path, parts.query)
                if url not in urls:
                    urls.append(url)
        return urls

    def purge_url_flow(self, path: str, query: str = "") -> Flow[int]:
        """Drop every stored variant of one URL."""
        return (yield from self.invalidate_flow(self.url_digest(path, query)))

    def _purge_set_flow(self, set_key: str) -> Flow[int]:
        urls = yield from self.stored_urls_flow(set_key)
        return (yield from self.purge_urls_flow(urls, set_key))

    def stored_urls_flow(self, set_key: str | None = None) -> Flow[list[str]]:
        """The URL digests a registry (default: every stored URL) holds."""
        key = set_key or self.keys.cache_registry()
        (members,) = yield (Call.of("ZRANGE", key, 0, -1),)
        return sorted(m.decode() for m in members)

    def purge_urls_flow(self, urls: list[str], set_key: str | None = None) -> Flow[int]:
        """Drop the responses of ``urls`` (digests from :meth:`stored_urls_flow`) in one
        round trip and take them out of the registry; returns how many were stored.
        Callers with many URLs purge them in batches (the CLI shows the progress)."""
        key = set_key or self.keys.cache_registry()
        # One script per URL: each URL's keys live in their own Cluster slot.
        ops = tuple(_INVALIDATE([self.keys.cache_variants(u), self.keys.cache_vary(u)], [])
                    for u in urls)
        answers = yield (*ops, Call.of("ZREM", key, *urls) if urls else Call.of(
            "EXISTS", key))
        return sum(int(a) for a in answers[:-1])

    def purge_tag_flow(self, tag: str) -> Flow[int]:
        """Drop every stored response of the routes carrying ``tag``."""
        return (yield from self._purge_set_flow(self.keys.cache_tag(tag)))

    def purge_all_flow(self) -> Flow[int]:
        """Drop every stored response (proportional to what is stored; no SCAN)."""
        return (yield from self._purge_set_flow(self.keys.cache_registry()))

    def _max_life(self) -> int:
        longest = max((spec.ttl for _, spec in self.settings.cache_routes), default=60)
        return longest * 2 + 60 + self.keep_stale

    # -- decisions ----------------------------------------------------------------
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

    def servable(self, plan: CachePlan, entry: Entry | None, now: float) -> Servable | None:
        """``fresh``, ``stale`` (may be served stale) or None, for this request (4.2,
        5.2.1: a request's max-age, min-fresh and max-stale narrow or widen it)."""
        if entry is None or not plan.lookup or (plan.authorization and not entry.public):
            return None
        if entry.never_fresh:  # whatever the clock does meanwhile (it may step back)
            return None
        cc = plan.directives
        if cc:
            limit = delta_seconds(cc.get("max-age")) if "max-age" in cc else None
            if limit is not None and entry.age(now) > limit:
                return None
            min_fresh = delta_seconds(cc.get("min-fresh")) or 0
            if now + min_fresh < entry.fresh_until:
                return "fresh"
            if "max-stale" in cc and not entry.revalidate:
                allowed = delta_seconds(cc["max-stale"]) if cc["max-stale"] else None
                if allowed is None or now <= entry.fresh_until + allowed:
                    return "stale"
            if min_fresh and now < entry.fresh_until:
                return None  # fresh, but not for as long as the request asks
        elif now < entry.fresh_until:  # 4.2: fresh while its lifetime exceeds its age
            return "fresh"
        if entry.swr and not entry.revalidate and now <= entry.fresh_until + entry.swr:
            return "stale"
        return None

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

    def conditional(self, entry: Entry | None) -> tuple[tuple[str, str], ...]:
        """4.3.1: the validators to send the app with a request that revalidates
        ``entry`` (they replace the client's own conditional fields)."""
        if entry is None:
            return ()
        out: list[tuple[str, str]] = []
        if entry.etag:
            out.append(("if-none-match", entry.etag))
        if entry.last_modified:
            out.append(("if-modified-since", entry.last_modified))
        return tuple(out)

    def usable_if_error(self, entry: Entry | None, now: float) -> bool:
        """RFC 5861 4: stale-if-error still allows serving ``entry``."""
        return entry is not None and not entry.revalidate and (
            now <= entry.fresh_until + entry.sie)

    def freshened(self, plan: CachePlan, entry: Entry, headers: Sequence[tuple[str, str]],
                  request_time: float, response_time: float, session: SessionUse = ""
                  ) -> tuple[Entry, Verdict] | None:
        """4.3.4: ``entry`` updated by the app's 304, and its verdict (None: the 304 is
        for another representation, or the updated response may not be stored)."""
        etag = next((v for k, v in headers if k.lower() == "etag"), "")
        if etag and entry.etag and not _weak_equal(etag, entry.etag):
            return None
        merged = updated_fields(entry.headers, headers, self.own_targets)
        ages = tuple((k, v) for k, v in headers if k.lower() == "age")
        verdict = self.verdict(plan, entry.status, (*merged, *ages), session,
                               request_time, response_time)
        if not verdict.store:
            return None
        return self.entry_of(verdict, entry.status, merged, entry.body, response_time), verdict

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
        now = time.time() if now is None else now
        left = entry.fresh_until - now
        ttl = int(left) if left >= 0 else -int(-left + 0.999)  # RFC 9211 2.3: negative: stale
        if outcome == "revalidated":
            x_cache, detail = "REVALIDATED", f"{NAME}; fwd=stale; fwd-status=304; stored"
        else:
            x_cache = "HIT" if ttl >= 0 else "STALE"
            detail = f"{NAME}; hit; ttl={ttl}"
            if outcome == "stale-if-error":
                detail += '; detail="stale-if-error"'
        extra = [("Age", str(int(entry.age(now)))), ("X-Cache", x_cache),
                 ("Cache-Status", detail)]
        if ANY_COOKIE in self._names.get(plan.url, "") and not any(
                k.lower() == "vary" and "cookie" in v.lower() for k, v in entry.headers):
            # Stored as the entry of requests without cookies: a cache in front must
            # not give it to one that has them (the app's response said so too).
            extra.append(("Vary", "Cookie"))
        if metrics.hook is not None:
            metrics.hook.cache(outcome if outcome != "hit" else x_cache.lower(),
                               self.route_name(plan), "")
        if _not_modified(plan, entry):
            kept = [(k, v) for k, v in entry.headers if k.lower() in NOT_MODIFIED_KEEP]
            return 304, kept, extra, b""
        span = byte_range(plan.range, len(entry.body)) if plan.range and (
            entry.status == 200) else None
        if span is not None:  # RFC 9110 14.2: a part of the complete stored response
            first, last = span
            kept = [(k, v) for k, v in entry.headers if k.lower() != "content-length"]
            kept += [("Content-Range", f"bytes {first}-{last}/{len(entry.body)}"),
                     ("Content-Length", str(last - first + 1))]
            return 206, kept, extra, b"" if head else entry.body[first:last + 1]
        return entry.status, None, extra, b"" if head else entry.body

    @staticmethod
    def miss_headers(verdict: Verdict | None, fwd: str = "uri-miss") -> list[tuple[str, str]]:
        status = f"{NAME}; fwd={fwd}"
        if verdict is not None:
            status += "; stored" if verdict.store else f'; detail="{verdict.reason}"'
        return [("X-Cache", "MISS"), ("Cache-Status", status)]


def encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs: lower-cased names, latin-1 bytes."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One satisfiable range of ``bytes=first-last``, ``first-`` or ``-suffix`` (RFC 9110
    14.1.2), as inclusive offsets; None for anything else (several ranges, another
    unit, unsatisfiable): the whole response is served, as a server may (14.2)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or size == 0:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text or last_text):
        return None
    if not (first_text.isdigit() or not first_text) or not (
            last_text.isdigit() or not last_text):
        return None
    if not first_text:  # the last N bytes
        suffix = int(last_text)
        return (max(0, size - suffix), size - 1) if suffix else None
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first > last or first >= size:
        return None
    return first, last


def _entity_tags(header: str) -> list[str]:
    """The entity-tags of an If-None-Match value (a tag may contain commas)."""
    tags: list[str] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        start = i
        if header.startswith("W/", i):
            i += 2
        if i < n and header[i] == '"':
            end = header.find('"', i + 1)
            i = n if end < 0 else end + 1
        else:
            while i < n and header[i] != ",":
                i += 1
        if header[start:i].strip():
            tags.append(header[start:i].strip())
    return tags


def _weak_equal(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def _not_modified(plan: CachePlan, entry: Entry) -> bool:
    """RFC 9110 13.1.2 and 13.1.3 for a stored response: If-None-Match (weak
    comparison) wins over If-Modified-Since."""
    if entry.status != 200:
        return False
    if plan.if_none_match is not None:
        if plan.if_none_match.strip() == "*":
            return True
        etag = entry.etag
        return bool(etag) and any(_weak_equal(t, etag) for t in _entity_tags(plan.if_none_match))
    if plan.if_modified_since is not None:
        since = parse_http_date(plan.if_modified_since)
        modified = entry.last_modified or next(
            (v for k, v in entry.headers if k.lower() == "date"), "")
        when = parse_http_date(modified) if modified else None
        return since is not None and when is not None and when <= since
    return False


def _joined(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Repeated request headers joined with ', ' (RFC 9110 5.3), in first-seen order."""
    out: dict[str, str] = {}
    for k, v in headers:
        out[k] = f"{out[k]}, {v}" if k in out else v
    return tuple(out.items())


class Capture:
    """Follows one computed response: decides at its start, copies its body, stores at the end.

    Both adapters feed it the same events, so the rules live here once.
    """

    def __init__(self, core: CacheCore, plan: CachePlan, lookup: Lookup | None,
                 stale: Entry | None, request_time: float | None = None,
                 bypass: str = "redis-unavailable") -> None:
        self.core = core
        self.bypass = bypass  # why there is no lookup (when there is none)
        self.plan = plan
        self.lookup = lookup
        self.stale = stale  # served instead of a 5xx (stale-if-error)
        self.request_time = time.time() if request_time is None else request_time
        self.response_time = self.request_time
        self.verdict: Verdict | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = False
        self.length: int | None = None  # the body's declared Content-Length

    @property
    def revalidating(self) -> Entry | None:
        """The stored entry this request asks the app to confirm (validators sent)."""
        entry = self.lookup.entry if self.lookup is not None else None
        return entry if entry is not None and entry.validated and self.plan.store else None

    def start(self, status: int, headers: list[tuple[str, str]], session: SessionUse
              ) -> list[tuple[str, str]] | None:
        """Headers to add to the response, or None: serve the stale entry instead."""
        if self.stale is not None and status >= 500:
            return None
        self.response_time = time.time()
        self.status, self.headers = status, headers
        if self.lookup is None:
            reason = self.bypass if self.plan.lookup else "request"
            if metrics.hook is not None:
                metrics.hook.cache("bypass", self.core.route_name(self.plan), reason)
            return [("X-Cache", "MISS"), ("Cache-Status", f'{NAME}; fwd=bypass; detail="{reason}"')]
        self.verdict = self.core.verdict(self.plan, status, headers, session,
                                         self.request_time, self.response_time)
        declared = [v for k, v in headers if k.lower() == "content-length"]
        if len(declared) == 1 and declared[0].strip().isdigit():
            self.length = int(declared[0])
        if metrics.hook is not None:
            metrics.hook.cache("miss", self.core.route_name(self.plan),
                               "stored" if self.verdict.store else self.verdict.reason)
        fwd = "stale" if self.lookup.entry is not None else "uri-miss"
        return self.core.miss_headers(self.verdict, fwd)

    @property
    def storing(self) -> bool:
        return self.verdict is not None and self.verdict.store

    def body(self, chunk: bytes, more: bool) -> None:
        if not self.storing:
            return
        self._size += len(chunk)
        if self._size > self.core.max_body:
            self.verdict = Verdict(False, "too-big")
            self._parts = []
            return
        self._parts.append(chunk)
        if not more or self._size == self.length:
            self.complete = True

    @property
    def wants_rest(self) -> bool:
        """Storable, but the body stopped before its declared length (the client went
        away, or never read it): reading the rest would complete the entry."""
        return self.storing and not self.complete and self.length is not None and (
            self.lookup is not None)

    def finish_flow(self) -> Flow[None]:
        """Store a complete, storable response; otherwise release the stampede guard."""
        if self.lookup is None:
            return
        verdict = self.verdict
        if self.complete and verdict is not None and verdict.store:
            entry = self.core.entry_of(verdict, self.status, self.headers,
                                       b"".join(self._parts), self.response_time)
            yield from self.core.store_flow(self.plan, self.lookup, verdict, entry)
        else:
            yield from self.core.release_flow(self.plan, self.lookup)

    def revalidated(self, headers: list[tuple[str, str]], session: SessionUse = ""
                    ) -> tuple[Entry, Flow[None]]:
        """The app confirmed the stored entry (304): the entry to serve, and the flow that
        stores its updated fields (or releases the guard: a 304 for another ETag, or one
        from a request that read the session, is served but not stored)."""
        entry = self.revalidating
        assert entry is not None and self.lookup is not None
        self.response_time = time.time()
        found = self.core.freshened(self.plan, entry, headers, self.request_time,
                                    self.response_time, session)
        lookup = self.lookup
        self.lookup = None  # decided now
        if found is None:
            return entry, self.core.release_flow(self.plan, lookup)
        fresh, verdict = found
        return fresh, self.core.store_flow(self.plan, lookup, verdict, fresh)
