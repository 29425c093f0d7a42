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

import base64
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Literal

from ..errors import RedisMiddlewareError
from ..keys import KeySpace, digest
from ..settings import Settings
from .flow import Call, Flow, Pause, PausingFlow, Script
from .memo import Memo, Recent
from .patterns import RouteTable
from .request import RequestInfo
from .rules import CacheRouteSpec

__all__ = ["CacheCore", "CachePlan", "Capture", "Entry", "Lookup", "Verdict"]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "proxy-connection",
})
NOT_STORED = HOP_BY_HOP | {"set-cookie", "date", "age", "x-cache", "cache-status"}
# RFC 9110 15.4.5: what a 304 carries from the stored response.
NOT_MODIFIED_KEEP = ("cache-control", "content-location", "etag", "expires", "vary")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CACHEABLE = UNSAFE | {"GET", "HEAD"}
_MEMO_MAX_ENTRY = 32 * 1024  # larger entries are decoded per hit (the memo stays small)
NAME = "rmw"

# KEYS: vary names, entry, lock. ARGV: the vary names the entry key was computed
# for, now ms, lock ms (0: no guard), lock token. When the stored names differ,
# nothing is read and the caller retries with them (the rare second round trip).
_LOOKUP = Script("""
local names = redis.call('GET', KEYS[1]) or ''
if names ~= ARGV[1] then return {names, false, 0} end
local entry = redis.call('GET', KEYS[2])
local locked = 0
local fresh = entry and tonumber(string.match(entry, '^(%d+)')) >= tonumber(ARGV[2])
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


NextStep = Literal["serve", "wait", "compute"]  # what a request does after its lookup


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


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for part in (value or "").split(","):
        name, eq, arg = part.strip().partition("=")
        if name:
            out[name.lower()] = arg.strip('"') if eq else None
    return out


def _seconds(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value is not None else None
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What this request may do with the cache."""

    route: CacheRouteSpec
    url: str
    host: str
    lookup: bool  # may be answered from the cache
    store: bool  # its response may be stored
    invalidate: bool  # an unsafe method: a success purges the URL
    authorization: bool
    headers: tuple[tuple[str, str], ...]  # what the stored Vary names may select from
    # (the request's headers as they came, plus "cookie:<name>" for the route's cookies)
    if_none_match: str | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    fresh_until: float
    etag: str
    swr: int
    sie: int
    public: bool
    # The headers as an ASGI server wants them, encoded once per entry (not per hit).
    raw_headers: tuple[tuple[bytes, bytes], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.raw_headers:
            object.__setattr__(self, "raw_headers", tuple(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers))

    @property
    def has_etag(self) -> bool:
        return any(k == b"etag" for k, _ in self.raw_headers)

    def encode(self) -> bytes:
        meta = json.dumps({"s": self.status, "h": self.headers, "t": self.stored_at,
                           "e": self.etag, "w": self.swr, "i": self.sie, "p": self.public},
                          separators=(",", ":"))
        return f"{int(self.fresh_until * 1000)}\n{meta}\n".encode() + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        try:
            fresh, meta, body = raw.split(b"\n", 2)
            m = json.loads(meta)
            return cls(int(m["s"]), tuple((str(k), str(v)) for k, v in m["h"]), body,
                       float(m["t"]), int(fresh) / 1000, str(m["e"]), int(m["w"]), int(m["i"]),
                       bool(m["p"]))
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable entry is a miss


_last_date: tuple[int, str] = (0, "")


def http_date(now: float) -> str:
    """The Date header value, formatted once per second (not once per hit)."""
    global _last_date
    second = int(now)
    if _last_date[0] != second:
        _last_date = (second, formatdate(second, usegmt=True))
    return _last_date[1]


@dataclass(frozen=True, slots=True)
class Lookup:
    variant: str
    entry: Entry | None
    locked: bool
    token: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a response may be stored, and how long (or why not)."""

    store: bool
    reason: str = ""
    ttl: int = 0
    swr: int = 0
    sie: int = 0
    public: bool = False
    vary: tuple[str, ...] = ()


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
        self.session_cookie = settings.session_cookie_name
        # Per-process memos of pure computations, bounded (their keys come from requests).
        self._names: Recent[str, str] = Recent(10_000)  # url digest -> vary names, as last seen
        self._routes: Memo[str, CacheRouteSpec | None] = Memo(4096)  # path -> route
        self._urls: Memo[tuple[str, bytes], str] = Memo(4096)  # path, query -> url digest
        self._hosts: Memo[str, str] = Memo(256)  # host -> variant, for a URL without Vary
        self._lookup_keys: Memo[tuple[str, str], tuple[str, str, str]] = Memo(4096)
        # Decoding a stored entry (JSON metadata, headers) happens once per entry and
        # process, not per hit: small entries are remembered by their exact bytes.
        self._decoded: Memo[bytes, Entry | None] = Memo(128)
        self._tokens = itertools.count()
        self._token_prefix = secrets.token_hex(6) + "-"

    # -- planning -------------------------------------------------------------
    def url_digest(self, path: str, query: str) -> str:
        return digest(_lp(path, canonical_query(query)))

    def route(self, path: str) -> CacheRouteSpec | None:
        try:
            return self._routes[path]
        except KeyError:
            found = self.routes.match(path)
            return self._routes.put(path, found[1] if found is not None else None)

    def plan(self, request: RequestInfo) -> CachePlan | None:
        """None when the cache has nothing to do with this request."""
        method = request.method
        if method not in _CACHEABLE:
            return None
        route = self.route(request.path)
        if route is None:
            return None
        host = cache_control = pragma = authorization = if_none_match = None
        for k, v in request.headers:  # one pass; the first of a repeated header counts
            if k == "host":
                host = host if host is not None else v.lower()
            elif k == "cache-control":
                cache_control = cache_control if cache_control is not None else v
            elif k == "pragma":
                pragma = pragma if pragma is not None else v
            elif k == "authorization":
                authorization = authorization if authorization is not None else v
            elif k == "if-none-match":
                if_none_match = if_none_match if if_none_match is not None else v
        host = host or ""
        if self.allowed_hosts and host not in self.allowed_hosts:
            return None  # unknown Host: bypass (no poisoning through odd Host values)
        url_key = (request.path, request.query_string)
        url = self._urls.get(url_key)
        if url is None:
            url = self._urls.put(url_key, self.url_digest(
                request.path, request.query_string.decode("latin-1")))
        req_cc = parse_cache_control(cache_control) if cache_control else {}
        safe = method in ("GET", "HEAD")
        headers = request.headers
        if route.vary_cookies:
            jar = request.cookies
            headers += tuple((f"cookie:{name}", jar.get(name, "")) for name in route.vary_cookies)
        return CachePlan(
            route=route, url=url, host=host,
            lookup=safe and "no-cache" not in req_cc and pragma != "no-cache",
            store=method == "GET" and "no-store" not in req_cc,
            invalidate=not safe,
            authorization=authorization is not None,
            headers=headers,
            if_none_match=if_none_match,
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
            variant = self.variant(plan, tuple(n for n in names.split("\n") if n))
            keys = self._lookup_keys.get((plan.url, variant))
            if keys is None:
                keys = self._lookup_keys.put((plan.url, variant), (
                    self.keys.cache_vary(plan.url), self.keys.cache_entry(plan.url, variant),
                    self.keys.cache_lock(plan.url, variant)))
            (reply,) = yield (_LOOKUP(keys, [names, now_ms, self.lock_ms, token]),)
            stored = reply[0].decode("latin-1") if isinstance(reply[0], bytes) else str(reply[0])
            if stored == names:
                return Lookup(variant, self.decode(reply[1]) if reply[1] else None,
                              bool(reply[2]), token)
            names = self._remember(plan.url, stored)
        return Lookup(variant, None, False, token)  # names keep changing: treat as a miss

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

    def store_flow(
        self, plan: CachePlan, lookup: Lookup, verdict: Verdict, status: int,
        headers: list[tuple[str, str]], body: bytes, now: float | None = None,
    ) -> Flow[None]:
        """One round trip: the entry, the URL's vary names and indexes; releases the guard."""
        now = time.time() if now is None else now
        kept = tuple((k, v) for k, v in headers if k.lower() not in NOT_STORED)
        etag = next((v for k, v in kept if k.lower() == "etag"), "")
        if not etag:
            etag = '"' + base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:16]).decode()
            etag = etag.rstrip("=") + '"'
        entry = Entry(status, kept, body, now, now + verdict.ttl, etag, verdict.swr,
                      verdict.sie, verdict.public)
        px = (verdict.ttl + max(verdict.swr, verdict.sie)) * 1000
        # The lookup's variant came from the vary names stored before; this response
        # may vary on other headers, so the variant is computed for its own names.
        names = "\n".join(verdict.vary)
        variant = self.variant(plan, verdict.vary)
        self._remember(plan.url, names)
        # The URL registry and tag sets are ZSETs scored by expiry, pruned as they are
        # written, so they stay bounded by the live entries however long traffic lasts.
        expires = int((now + verdict.ttl + max(verdict.swr, verdict.sie)) * 1000)
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
                    Call.of("EXPIRE", index, self._max_life())]
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

    def invalidate_flow(self, url: str) -> Flow[int]:
        (n,) = yield (_INVALIDATE([self.keys.cache_variants(url), self.keys.cache_vary(url)], []),)
        return int(n)

    def purge_url_flow(self, path: str, query: str = "") -> Flow[int]:
        """Drop every stored variant of one URL."""
        return (yield from self.invalidate_flow(self.url_digest(path, query)))

    def _purge_set_flow(self, set_key: str) -> Flow[int]:
        (members,) = yield (Call.of("ZRANGE", set_key, 0, -1),)
        urls = sorted(m.decode() for m in members)
        # One script per URL: each URL's keys live in their own Cluster slot.
        ops = tuple(_INVALIDATE([self.keys.cache_variants(u), self.keys.cache_vary(u)], [])
                    for u in urls)
        answers = yield (*ops, Call.of("ZREM", set_key, *urls) if urls else Call.of(
            "EXISTS", set_key))
        return sum(int(a) for a in answers[:-1])

    def purge_tag_flow(self, tag: str) -> Flow[int]:
        """Drop every stored response of the routes carrying ``tag``."""
        return (yield from self._purge_set_flow(self.keys.cache_tag(tag)))

    def purge_all_flow(self) -> Flow[int]:
        """Drop every stored response (proportional to what is stored; no SCAN)."""
        return (yield from self._purge_set_flow(self.keys.cache_registry()))

    def _max_life(self) -> int:
        longest = max((spec.ttl for _, spec in self.settings.cache_routes), default=60)
        return longest * 2 + 60

    # -- decisions ----------------------------------------------------------------
    def verdict(
        self, plan: CachePlan, status: int, headers: list[tuple[str, str]],
        session_touched: bool = False,
    ) -> Verdict:
        """May this response be stored (RFC 9111 for a shared cache), and for how long?"""
        if not plan.store:
            return Verdict(False, "request")
        if status not in self.statuses:
            return Verdict(False, "status")
        names = {k.lower() for k, _ in headers}
        if "set-cookie" in names:
            return Verdict(False, "set-cookie")
        cc = parse_cache_control(", ".join(v for k, v in headers if k.lower() == "cache-control"))
        for directive in ("no-store", "private", "no-cache"):
            if directive in cc:
                return Verdict(False, directive)
        public = "public" in cc or "s-maxage" in cc
        if plan.authorization and not public:
            return Verdict(False, "authorization")
        vary = sorted({v.strip().lower() for k, val in headers if k.lower() == "vary"
                       for v in val.split(",") if v.strip()})
        if "*" in vary:
            return Verdict(False, "vary-star")
        if "cookie" in vary or session_touched:
            if not plan.route.vary_cookies:
                return Verdict(False, "session")
            vary = [v for v in vary if v != "cookie"]
            vary += [f"cookie:{c}" for c in plan.route.vary_cookies]
        ttl = plan.route.ttl
        limit = _seconds(cc.get("s-maxage")) if "s-maxage" in cc else _seconds(cc.get("max-age"))
        if limit is not None:
            ttl = min(ttl, limit)
        if ttl <= 0:
            return Verdict(False, "max-age")
        return Verdict(True, "", ttl, _seconds(cc.get("stale-while-revalidate")) or 0,
                       _seconds(cc.get("stale-if-error")) or 0, public, tuple(sorted(vary)))

    def servable(self, plan: CachePlan, entry: Entry | None, now: float) -> str | None:
        """``fresh``, ``stale`` (within stale-while-revalidate) or None."""
        if entry is None or not plan.lookup or (plan.authorization and not entry.public):
            return None
        if now <= entry.fresh_until:
            return "fresh"
        if now <= entry.fresh_until + entry.swr:
            return "stale"
        return None

    def next_step(self, plan: CachePlan, lookup: Lookup, now: float) -> NextStep:
        """``serve`` the entry, ``wait`` for another request computing it, or ``compute``."""
        state = self.servable(plan, lookup.entry, now)
        if state == "fresh" or (state == "stale" and not lookup.locked):
            return "serve"
        fresh_elsewhere = lookup.entry is not None and now <= lookup.entry.fresh_until
        if lookup.locked or self.lock_ms == 0 or not plan.lookup or fresh_elsewhere:
            return "compute"  # ours to compute (or this request may not use the entry)
        return "wait"  # missing or expired, and another request holds the guard

    def resolve_flow(self, plan: CachePlan, lookup: Lookup
                     ) -> PausingFlow[tuple[Entry | None, Lookup | None]]:
        """After a lookup: ``(entry to serve, lookup to compute with)``. The entry is None
        when this request computes the response; the lookup is None when it computes it
        uncached (another request holds the guard for longer than ``cache_lock_wait``).
        Costs nothing unless it must wait: then it polls every 20 ms."""
        step = self.next_step(plan, lookup, time.time())
        if step != "wait":
            return (lookup.entry if step == "serve" else None), lookup
        deadline = time.monotonic() + self.settings.cache_lock_wait
        while time.monotonic() < deadline:
            yield Pause(0.02)
            try:
                entry = yield from self.poll_flow(plan, lookup)
            except RedisMiddlewareError:
                break
            if self.servable(plan, entry, time.time()) == "fresh":
                return entry, lookup
        return None, None

    def usable_if_error(self, entry: Entry | None, now: float) -> bool:
        return entry is not None and now <= entry.fresh_until + entry.sie

    def hit(
        self, plan: CachePlan, entry: Entry, head: bool, now: float | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The stored response as served: status, headers and body (or a 304)."""
        status, kept, extra, body = self._served(plan, entry, head, now)
        return status, [*(entry.headers if kept is None else kept), *extra], body

    def hit_raw(
        self, plan: CachePlan, entry: Entry, head: bool, now: float | None = None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """:meth:`hit` with ASGI headers: the stored ones were encoded once, with the entry."""
        status, kept, extra, body = self._served(plan, entry, head, now)
        stored = entry.raw_headers if kept is None else encode_headers(kept)
        return status, [*stored, *encode_headers(extra)], body

    def _served(
        self, plan: CachePlan, entry: Entry, head: bool, now: float | None
    ) -> tuple[int, list[tuple[str, str]] | None, list[tuple[str, str]], bytes]:
        now = time.time() if now is None else now
        age = max(0, int(now - entry.stored_at))
        ttl = int(entry.fresh_until - now)
        extra = [("Date", http_date(now)), ("Age", str(age)), ("X-Cache", "HIT"),
                 ("Cache-Status", f"{NAME}; hit; ttl={ttl}")]
        if not entry.has_etag:
            extra.append(("ETag", entry.etag))
        if plan.if_none_match and _etag_matches(plan.if_none_match, entry.etag):
            kept = [(k, v) for k, v in entry.headers if k.lower() in NOT_MODIFIED_KEEP]
            return 304, kept, extra, b""
        return entry.status, None, extra, b"" if head else entry.body

    @staticmethod
    def miss_headers(verdict: Verdict | None, fwd: str = "uri-miss") -> list[tuple[str, str]]:
        status = f"{NAME}; fwd={fwd}"
        if verdict is not None:
            status += "; stored" if verdict.store else f'; detail="{verdict.reason}"'
        return [("X-Cache", "MISS"), ("Cache-Status", status)]


def encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs: lower-cased names, latin-1 bytes."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


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
                 stale: Entry | None) -> None:
        self.core = core
        self.plan = plan
        self.lookup = lookup
        self.stale = stale  # served instead of a 5xx (stale-if-error)
        self.verdict: Verdict | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = False

    def start(self, status: int, headers: list[tuple[str, str]], session_touched: bool
              ) -> list[tuple[str, str]] | None:
        """Headers to add to the response, or None: serve the stale entry instead."""
        if self.stale is not None and status >= 500:
            return None
        self.status, self.headers = status, headers
        if self.lookup is None:
            return self.core.miss_headers(None, "bypass")
        self.verdict = self.core.verdict(self.plan, status, headers, session_touched)
        return self.core.miss_headers(self.verdict)

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
        if not more:
            self.complete = True

    def finish_flow(self) -> Flow[None]:
        """Store a complete, storable response; otherwise release the stampede guard."""
        if self.lookup is None:
            return
        if self.complete and self.verdict is not None and self.verdict.store:
            yield from self.core.store_flow(self.plan, self.lookup, self.verdict, self.status,
                                            self.headers, b"".join(self._parts))
        else:
            yield from self.core.release_flow(self.plan, self.lookup)
