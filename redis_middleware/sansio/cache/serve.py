"""Serving a stored response (RFC 9111 4, RFC 9110 13 and 14): the status, the headers a
hit carries (Age, X-Cache, Cache-Status), 304s and byte ranges."""

from __future__ import annotations

from .cache_control import delta_seconds
from .entry import CachePlan, Entry, Outcome, Servable, Verdict
from .http_dates import parse_http_date

__all__ = ["NAME", "byte_range", "miss_headers", "servable", "served", "usable_if_error",
           "validators", "weak_equal"]

# RFC 9110 15.4.5: what a 304 carries from the stored response.
NOT_MODIFIED_KEEP = ("cache-control", "content-location", "date", "etag", "expires", "vary")
NAME = "rmw"  # this cache's name in Cache-Status (RFC 9211)


def servable(plan: CachePlan, entry: Entry | None, now: float) -> Servable | None:
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

def validators(entry: Entry | None) -> tuple[tuple[str, str], ...]:
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

def usable_if_error(entry: Entry | None, now: float) -> bool:
    """RFC 5861 4: stale-if-error still allows serving ``entry``."""
    return entry is not None and not entry.revalidate and (
        now <= entry.fresh_until + entry.sie)


def served(plan: CachePlan, entry: Entry, head: bool, now: float, outcome: Outcome,
           cookie_dependent: bool) -> tuple[int, list[tuple[str, str]] | None,
                                             list[tuple[str, str]], bytes]:
    """A stored entry as served to this request: the status, the stored headers to send
    instead of the entry's own (None: the entry's), the headers every hit adds, and the
    body. ``cookie_dependent``: the entry is the one of requests without cookies."""
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
    if cookie_dependent and not entry.varies_on_cookie:
        # Stored as the entry of requests without cookies: a cache in front must
        # not give it to one that has them (the app's response said so too).
        extra.append(("Vary", "Cookie"))
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


def miss_headers(verdict: Verdict | None, fwd: str = "uri-miss") -> list[tuple[str, str]]:
    """What a computed response says about the cache (RFC 9211 Cache-Status)."""
    status = f"{NAME}; fwd={fwd}"
    if verdict is not None:
        status += "; stored" if verdict.store else f'; detail="{verdict.reason}"'
    return [("X-Cache", "MISS"), ("Cache-Status", status)]


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


def weak_equal(a: str, b: str) -> bool:
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
        return bool(etag) and any(weak_equal(t, etag) for t in _entity_tags(plan.if_none_match))
    if plan.if_modified_since is not None:
        since = parse_http_date(plan.if_modified_since)
        modified = entry.last_modified or next(
            (v for k, v in entry.headers if k.lower() == "date"), "")
        when = parse_http_date(modified) if modified else None
        return since is not None and when is not None and when <= since
    return False
