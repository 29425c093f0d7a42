"""The response cache's values: a request's plan, a stored entry, a lookup and verdicts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ...config.rules import CacheRouteSpec
from .cache_control import Directives
from .freshness import Freshness, current_age

__all__ = ["ANY_COOKIE", "CONDITIONAL", "CachePlan", "Entry", "Lookup", "NextStep", "Outcome",
           "Resolved", "Servable", "SessionUse", "Verdict", "canonical_query", "encode_headers",
           "lp", "lpb"]

CONDITIONAL = frozenset({"if-none-match", "if-modified-since", "if-match",
                         "if-unmodified-since", "if-range"})
# What the request did with the session, as the response starts: nothing, read it, or
# changed it (something is written, or a cookie set). A framework-neutral value: the
# middleware's own session says it, and a framework's session says Vary: Cookie.
SessionUse = Literal["", "read", "written"]
# Request fields a session-dependent entry varies on. '?' is no token character (RFC 9110
# 5.6.2), so no request header has these names: "1" when the request carries a Cookie
# header at all / the session cookie, "" when not.
ANY_COOKIE = "cookie?"

NextStep = Literal["serve", "refresh", "wait", "compute"]  # what a request does next
Servable = Literal["fresh", "stale"]
Outcome = Literal["hit", "revalidated", "stale-if-error"]  # how a stored entry is served


def lp(*parts: str) -> str:
    return "".join(f"{len(p)}:{p}" for p in parts)


def lpb(text: str) -> bytes:
    """``text`` length-prefixed, as bytes: UTF-8 (surrogates passed), one-to-one for any
    str a server hands over (a WSGI server may break PEP 3333's latin-1 rule)."""
    raw = text.encode("utf-8", "surrogatepass")
    return b"%d:%s" % (len(raw), raw)


def canonical_query(query: str) -> str:
    """Pairs sorted; duplicates, empty values and the original encoding kept."""
    if not query:
        return ""
    pairs = [p.partition("=") for p in query.split("&") if p]
    return "&".join(k + s + v for k, s, v in sorted(pairs, key=lambda kvs: (kvs[0], kvs[2])))


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
class CachePlan:
    """What this request may do with the cache."""

    route: CacheRouteSpec
    url: str
    host: str
    scheme: str  # "http" or "https", as the adapter saw it (with any proxy fix applied)
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
    # A stored Vary line names Cookie: decided once per entry, not per hit.
    varies_on_cookie: bool = field(init=False, default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.raw_headers:
            object.__setattr__(self, "raw_headers", tuple(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers))
        object.__setattr__(self, "varies_on_cookie", any(
            k.lower() == "vary" and "cookie" in v.lower() for k, v in self.headers))

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


@dataclass(slots=True)
class Lookup:
    variant: str
    entry: Entry | None
    locked: bool
    token: str
    at: float = 0.0  # the clock the lookup script judged freshness by (0: now)
    guarded: bool = True  # the stampede guard was asked for (not when nothing is storable)


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
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



def encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs: lower-cased names, latin-1 bytes."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
