"""The cache's HTTP rules with no Redis: what is stored, for how long, what is served.

Each row cites the rule it checks (RFC 9111 unless said otherwise).
"""

from __future__ import annotations

from typing import Any

import pytest

from redis_middleware.sansio.cache import CacheCore, CachePlan, Entry, Lookup
from redis_middleware.sansio.flow import run_pure

from .helpers import request, settings

NOW = 1_000_000.0


def core(**overrides: Any) -> CacheCore:
    routes = overrides.pop("routes", {"/x": 60, "/c": {"ttl": 60, "vary_cookies": ["theme"]}})
    return CacheCore(settings(cache_routes=routes, **overrides))


def plan(c: CacheCore, method: str = "GET", path: str = "/x",
         headers: tuple[tuple[str, str], ...] = (("host", "a.test"),)) -> CachePlan:
    found = c.plan(request(method, path, headers=headers))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("status", "headers", "touched", "stored", "reason", "ttl"),
    [
        pytest.param(200, [], False, True, "", 60, id="3-route-default-ttl"),
        pytest.param(200, [("Cache-Control", "max-age=10")], False, True, "", 10,
                     id="5.2.2.1-max-age-shortens"),
        pytest.param(200, [("Cache-Control", "s-maxage=5, max-age=30")], False, True, "", 5,
                     id="5.2.2.10-s-maxage-wins-in-a-shared-cache"),
        pytest.param(200, [("Cache-Control", "max-age=0")], False, False, "max-age", 0,
                     id="5.2.2.1-max-age-zero"),
        pytest.param(200, [("Cache-Control", "no-store")], False, False, "no-store", 0,
                     id="5.2.2.5-no-store"),
        pytest.param(200, [("Cache-Control", "private")], False, False, "private", 0,
                     id="5.2.2.7-private-in-a-shared-cache"),
        pytest.param(200, [("Cache-Control", "no-cache")], False, False, "no-cache", 0,
                     id="5.2.2.4-no-cache"),
        pytest.param(200, [("Set-Cookie", "a=1")], False, False, "set-cookie", 0,
                     id="7.3-never-a-response-that-sets-a-cookie"),
        pytest.param(200, [("Vary", "*")], False, False, "vary-star", 0,
                     id="4.1-vary-star-never-matches"),
        pytest.param(200, [], True, False, "session", 0,
                     id="a-response-that-read-the-session-is-per-user"),
        pytest.param(404, [], False, False, "status", 0, id="3-only-configured-statuses"),
    ],
)
def test_storability(status: int, headers: list[tuple[str, str]], touched: bool, stored: bool,
                     reason: str, ttl: int) -> None:
    c = core()
    verdict = c.verdict(plan(c), status, headers, touched)
    assert (verdict.store, verdict.reason, verdict.ttl) == (stored, reason, ttl)


def test_authorization_needs_explicit_permission() -> None:
    """3.5: a request with Authorization is stored only when the response allows it."""
    c = core()
    authed = plan(c, headers=(("host", "a.test"), ("authorization", "Bearer t")))
    assert c.verdict(authed, 200, []).reason == "authorization"
    assert c.verdict(authed, 200, [("Cache-Control", "public")]).store
    assert c.verdict(authed, 200, [("Cache-Control", "s-maxage=9")]).store


def test_request_no_store_and_no_cache() -> None:
    """5.2.1.5 and 5.2.1.4: the request's own directives."""
    c = core()
    no_store = plan(c, headers=(("host", "a.test"), ("cache-control", "no-store")))
    assert not no_store.store and no_store.lookup
    no_cache = plan(c, headers=(("host", "a.test"), ("cache-control", "no-cache")))
    assert no_cache.store and not no_cache.lookup
    pragma = plan(c, headers=(("host", "a.test"), ("pragma", "no-cache")))
    assert not pragma.lookup  # 5.4: Pragma no-cache as no-cache when there is no Cache-Control


@pytest.mark.parametrize(
    ("method", "invalidate", "lookup"),
    [
        pytest.param("GET", False, True, id="get"),
        pytest.param("HEAD", False, True, id="head-answered-from-get"),
        pytest.param("POST", True, False, id="4.4-post-invalidates"),
        pytest.param("DELETE", True, False, id="4.4-delete-invalidates"),
    ],
)
def test_methods(method: str, invalidate: bool, lookup: bool) -> None:
    c = core()
    p = plan(c, method)
    assert (p.invalidate, p.lookup) == (invalidate, lookup)


def test_cookie_variants_come_from_the_parsed_cookie_header() -> None:
    c = core()
    dark = plan(c, path="/c", headers=(("host", "a.test"), ("cookie", "theme=dark; sid=1")))
    light = plan(c, path="/c", headers=(("host", "a.test"), ("cookie", "sid=2; theme=light")))
    other_sid = plan(c, path="/c", headers=(("host", "a.test"), ("cookie", "theme=dark; sid=9")))
    names = ("cookie:theme",)
    assert c.variant(dark, names) != c.variant(light, names)
    assert c.variant(dark, names) == c.variant(other_sid, names)


def _entry(fresh_for: float, swr: int = 0, sie: int = 0, public: bool = False) -> Entry:
    return Entry(200, (("Content-Type", "text/plain"),), b"hi", NOW - 5, NOW + fresh_for,
                 '"e"', swr, sie, public)


@pytest.mark.parametrize(
    ("entry", "locked", "step"),
    [
        pytest.param(None, True, "compute", id="miss-with-the-guard-computes"),
        pytest.param(None, False, "wait", id="miss-another-holds-the-guard-waits"),
        pytest.param(_entry(10), False, "serve", id="fresh-serves"),
        pytest.param(_entry(-1, swr=30), False, "serve",
                     id="rfc5861-stale-while-revalidate-serves-while-another-refreshes"),
        pytest.param(_entry(-1, swr=30), True, "compute",
                     id="rfc5861-stale-while-revalidate-the-guard-holder-refreshes"),
        pytest.param(_entry(-60, swr=30), False, "wait", id="past-swr-waits-for-the-holder"),
    ],
)
def test_next_step_after_a_lookup(entry: Entry | None, locked: bool, step: str) -> None:
    c = core()
    assert c.next_step(plan(c), Lookup("v", entry, locked, "tok"), NOW) == step


def test_stale_if_error_window() -> None:
    """RFC 5861 4: usable on error while within stale-if-error."""
    c = core()
    assert c.usable_if_error(_entry(-10, sie=30), NOW)
    assert not c.usable_if_error(_entry(-40, sie=30), NOW)
    assert not c.usable_if_error(None, NOW)


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        pytest.param('"e"', 304, id="9110-13.1.2-strong-match"),
        pytest.param('W/"e"', 304, id="9110-13.1.2-weak-comparison"),
        pytest.param('"x", "e"', 304, id="9110-13.1.2-list"),
        pytest.param("*", 304, id="9110-13.1.2-star"),
        pytest.param('"x"', 200, id="no-match-full-response"),
    ],
)
def test_conditional_hit(if_none_match: str, status: int) -> None:
    c = core()
    p = plan(c, headers=(("host", "a.test"), ("if-none-match", if_none_match)))
    got, headers, body = c.hit(p, _entry(10), head=False, now=NOW)
    assert got == status
    assert (body == b"") is (status == 304)
    assert dict(headers)["X-Cache"] == "HIT" and dict(headers)["Age"] == "5"


def test_head_is_answered_without_a_body() -> None:
    c = core()
    status, _, body = c.hit(plan(c, "HEAD"), _entry(10), head=True, now=NOW)
    assert (status, body) == (200, b"")


def test_a_lookup_is_one_script_call_and_a_hit_decodes() -> None:
    c = core()
    p = plan(c)
    stored = _entry(10).encode()
    flow = c.lookup_flow(p, now=NOW)
    batch = next(flow)
    assert [op.args[0] for op in batch] == ["EVALSHA"]
    try:
        flow.send([[b"", stored, 0]])
    except StopIteration as stop:
        lookup = stop.value
    assert lookup.entry is not None and lookup.entry.body == b"hi" and not lookup.locked


def test_invalidation_is_one_script_over_the_urls_keys() -> None:
    c = core()
    assert run_pure(c.invalidate_flow(plan(c).url), [[3]]) == 3
