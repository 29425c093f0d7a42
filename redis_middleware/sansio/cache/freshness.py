"""RFC 9111 for a shared cache, as pure functions: may a response be stored, how long
it stays fresh, how old it is, and which of its fields are kept.

Sections cited are RFC 9111's unless said otherwise; ``docs/cache.md`` has the table
of which rule wins.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from .cache_control import (
    Directives,
    age_value,
    delta_seconds,
    parse_cache_control,
    parse_targeted,
    split_tokens,
)
from .http_dates import parse_http_date

__all__ = ["HEURISTIC_STATUSES", "HOP_BY_HOP", "Freshness", "Policy", "current_age",
           "policy_of", "stored_fields", "updated_fields"]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "proxy-connection",
})
# Never replayed from storage: hop-by-hop fields (3.1), what the cache computes per hit
# (Age, its own status fields), and Set-Cookie (a response with one is never stored).
_NOT_STORED = HOP_BY_HOP | {"age", "x-cache", "cache-status", "set-cookie"}
# RFC 9110 15.1: statuses cacheable by default (heuristically); 206 is left out because
# this cache stores only complete responses.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
_UNDERSTOOD = frozenset(int(s) for s in HTTPStatus) - {206, 304}
_HEURISTIC_FRACTION = 0.1  # 4.2.2: "10% of the time since Last-Modified" is typical
_HEURISTIC_MAX = 86400  # and no more than a day (a longer heuristic needs a warning)


@dataclass(frozen=True, slots=True)
class Policy:
    """The caching policy a response states (from a targeted field, else Cache-Control)."""

    directives: Directives
    targeted: bool  # from CDN-Cache-Control or our own field: Expires is then ignored


@dataclass(frozen=True, slots=True)
class Freshness:
    """Storability and lifetime of one response, as of the moment it arrived."""

    store: bool
    reason: str = ""  # why it is not stored
    lifetime: float = 0.0  # seconds fresh from its generation (4.2.1)
    initial_age: float = 0.0  # corrected initial age (4.2.3)
    swr: int = 0
    sie: int = 0
    public: bool = False
    revalidate: bool = False  # stale: never served without revalidating (5.2.2.2)
    default_ttl: bool = False  # the lifetime is the route's default


def _values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def policy_of(headers: Sequence[tuple[str, str]], targets: Sequence[str]) -> Policy:
    """RFC 9213 2.1: the first targeted field in ``targets`` order with a valid value
    decides alone; otherwise ``Cache-Control``."""
    for name in targets:
        lines = _values(headers, name)
        if lines:
            parsed = parse_targeted(", ".join(lines))
            if parsed is not None:
                return Policy(parsed, True)
    return Policy(parse_cache_control(", ".join(_values(headers, "cache-control"))), False)


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """4.2.3: corrected initial age plus the time resident in this cache."""
    return initial_age + max(0.0, now - response_time)


def _initial_age(headers: Sequence[tuple[str, str]], request_time: float,
                 response_time: float, date: float | None) -> float:
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    delay = max(0.0, response_time - request_time)
    corrected = (age_value(_values(headers, "age")) or 0) + delay
    return max(apparent, corrected)


def _date(headers: Sequence[tuple[str, str]], now: float) -> float | None:
    lines = _values(headers, "date")
    return parse_http_date(lines[0], now) if len(lines) == 1 else None


def freshness(
    status: int, headers: Sequence[tuple[str, str]], *, request_time: float,
    response_time: float, default_ttl: int, default_statuses: frozenset[int],
    max_ttl: int, authorization: bool, targets: Sequence[str] = (), default_sie: int = 0,
) -> Freshness:
    """Whether a response to a GET may be stored, and how fresh it is (3, 4.2)."""
    policy = policy_of(headers, targets)
    cc = policy.directives
    understood = status in _UNDERSTOOD
    if "must-understand" in cc and not understood:
        return Freshness(False, "must-understand")
    if "no-store" in cc and not ("must-understand" in cc and understood):
        return Freshness(False, "no-store")
    if "private" in cc:  # qualified or not: a shared cache does not store it (5.2.2.7)
        return Freshness(False, "private")
    if status < 200 or status in (206, 304):
        return Freshness(False, "status")
    public = "public" in cc
    must = "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc
    if authorization and not (public or must):  # 3.5
        return Freshness(False, "authorization")
    date = _date(headers, response_time)
    # RFC 9110 6.6.1: without a (valid) Date, the time it was received stands for it.
    lifetime, source = _lifetime(status, headers, policy,
                                 date if date is not None else response_time, default_ttl,
                                 default_statuses)
    if lifetime is None:
        outside = default_ttl > 0 and status not in default_statuses
        return Freshness(False, "status" if outside else "no-freshness")
    no_cache = "no-cache" in cc  # qualified or not: revalidate every time (5.2.2.4)
    if no_cache:
        lifetime = 0.0
    if max_ttl and lifetime > max_ttl:
        lifetime = float(max_ttl)
    initial = _initial_age(headers, request_time, response_time, date)
    swr = 0 if must or no_cache else delta_seconds(cc.get("stale-while-revalidate")) or 0
    sie = 0 if must or no_cache else delta_seconds(cc.get("stale-if-error")) or default_sie
    fresh_for = lifetime - initial
    validated = bool(_values(headers, "etag") or _values(headers, "last-modified"))
    if fresh_for <= 0 and not validated and fresh_for + max(swr, sie) <= 0:
        # Stale on arrival, with nothing to revalidate it with: storing it is useless.
        return Freshness(False, "no-cache" if no_cache else source)
    return Freshness(True, "", lifetime, initial, swr, sie, public or "s-maxage" in cc,
                     must or no_cache, source == "default")


def _lifetime(status: int, headers: Sequence[tuple[str, str]], policy: Policy,
              date: float, default_ttl: int, default_statuses: frozenset[int]
              ) -> tuple[float | None, str]:
    """4.2.1: s-maxage, then max-age, then Expires minus Date; then the route's default
    (or, with none, the Last-Modified heuristic of 4.2.2). None: not storable. The
    second value names where the lifetime came from."""
    cc = policy.directives
    for name in ("s-maxage", "max-age"):
        if name in cc:
            seconds = delta_seconds(cc[name])
            return (float(seconds) if seconds is not None else 0.0), "max-age"  # invalid: stale
    if not policy.targeted:
        expires = _values(headers, "expires")
        if expires:
            when = parse_http_date(expires[0], date) if len(expires) == 1 else None
            if when is None:
                return 0.0, "expires"  # 5.3: an invalid Expires is a time in the past
            return max(0.0, when - date), "expires"
    if status in default_statuses and default_ttl > 0:
        return float(default_ttl), "default"
    if status in HEURISTIC_STATUSES or "public" in cc:
        modified = _values(headers, "last-modified")
        when = parse_http_date(modified[0]) if modified else None
        if when is not None and date > when:
            return min(_HEURISTIC_MAX, (date - when) * _HEURISTIC_FRACTION), "heuristic"
    return None, "no-freshness"


def stored_fields(headers: Sequence[tuple[str, str]], own: Collection[str] = ()
                  ) -> tuple[tuple[str, str], ...]:
    """The fields kept with a stored response: no hop-by-hop field, nor one that
    ``Connection`` names (3.1, RFC 9110 7.6.1), nor a field aimed at this cache only."""
    listed = {t.lower() for t in split_tokens(_values(headers, "connection"))}
    drop = _NOT_STORED | listed | {n.lower() for n in own}
    return tuple((k, v) for k, v in headers if k.lower() not in drop)


def updated_fields(stored: Sequence[tuple[str, str]], fresh: Sequence[tuple[str, str]],
                   own: Collection[str] = ()) -> tuple[tuple[str, str], ...]:
    """3.2: a stored response's fields updated from a 304: each field the 304 carries
    replaces the stored lines of that name, except Content-Length and what is not stored."""
    incoming = [(k, v) for k, v in stored_fields(fresh, own) if k.lower() != "content-length"]
    names = {k.lower() for k, _ in incoming}
    return (*((k, v) for k, v in stored if k.lower() not in names), *incoming)
