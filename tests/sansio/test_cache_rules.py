"""The cache's HTTP rules with no Redis: what is stored, for how long, what is served.

Each row cites the rule it checks (RFC 9111 unless said otherwise).
"""

from __future__ import annotations

from typing import Any

import pytest

from redis_middleware.sansio.cache import CacheCore, CachePlan, Entry, Lookup, byte_range
from redis_middleware.sansio.flow import run_pure

from .helpers import batches, request, settings

NOW = 1_000_000.0


def core(**overrides: Any) -> CacheCore:
    routes = overrides.pop("routes", {"/x": 60, "/c": {"ttl": 60, "vary_cookies": ["theme"]}})
    return CacheCore(settings(cache_routes=routes, **overrides))


def plan(c: CacheCore, method: str = "GET", path: str = "/x",
         headers: tuple[tuple[str, str], ...] = (("host", "a.test"),)) -> CachePlan:
    found = c.plan(request(method, path, headers=headers))
    assert found is not None
    return found


DATE = "Mon, 12 Jan 1970 13:46:40 GMT"  # NOW as an HTTP date


@pytest.mark.parametrize(
    ("status", "headers", "touched", "stored", "reason", "ttl"),
    [
        pytest.param(200, [], False, True, "", 60, id="route-ttl-is-the-default-freshness"),
        pytest.param(200, [("Cache-Control", "max-age=10")], False, True, "", 10,
                     id="5.2.2.1-max-age-shortens"),
        pytest.param(200, [("Cache-Control", "max-age=600")], False, True, "", 600,
                     id="5.2.2.1-max-age-lengthens-the-route-default"),
        pytest.param(200, [("Cache-Control", "s-maxage=5, max-age=30")], False, True, "", 5,
                     id="5.2.2.10-s-maxage-wins-in-a-shared-cache"),
        pytest.param(200, [("Cache-Control", "max-age=30"), ("Cache-Control", "s-maxage=5")],
                     False, True, "", 5, id="5.2.2.10-s-maxage-on-another-line"),
        pytest.param(200, [("Cache-Control", "max-age=0")], False, False, "max-age", 0,
                     id="5.2.2.1-max-age-zero"),
        pytest.param(200, [("Cache-Control", "max-age=-5")], False, False, "max-age", 0,
                     id="4.2.1-invalid-max-age-is-stale"),
        pytest.param(200, [("Cache-Control", "max-age='60'")], False, False, "max-age", 0,
                     id="1.2.2-single-quotes-are-not-delta-seconds"),
        pytest.param(200, [("Cache-Control", "max-age=0060")], False, True, "", 60,
                     id="1.2.2-leading-zeros"),
        pytest.param(200, [("Cache-Control", 'ext="max-age=5", max-age=30')], False, True, "",
                     30, id="5.2-quoted-text-is-no-directive"),
        pytest.param(200, [("Cache-Control", "max-age=30, max-age=5")], False, True, "", 30,
                     id="4.2.1-first-of-a-repeated-directive"),
        pytest.param(200, [("Cache-Control", "no-store")], False, False, "no-store", 0,
                     id="5.2.2.5-no-store"),
        pytest.param(200, [("Cache-Control", "No-Store")], False, False, "no-store", 0,
                     id="5.2-directive-names-ignore-case"),
        pytest.param(200, [("Cache-Control", "private")], False, False, "private", 0,
                     id="5.2.2.7-private-in-a-shared-cache"),
        pytest.param(200, [("Cache-Control", 'private="Set-Cookie, X-Foo", max-age=60')],
                     False, False, "private", 0, id="5.2.2.7-qualified-private"),
        pytest.param(200, [("Cache-Control", "no-cache")], False, False, "no-cache", 0,
                     id="5.2.2.4-no-cache-without-a-validator-is-useless"),
        pytest.param(200, [("Cache-Control", "no-cache"), ("ETag", '"e"')], False, True, "",
                     0, id="5.2.2.4-no-cache-with-a-validator-is-stored-stale"),
        pytest.param(200, [("Set-Cookie", "a=1")], False, False, "set-cookie", 0,
                     id="never-a-response-that-sets-a-cookie"),
        pytest.param(200, [("Vary", "*")], False, False, "vary-star", 0,
                     id="4.1-vary-star-never-matches"),
        pytest.param(200, [("Vary", "accept"), ("Vary", "*")], False, False, "vary-star", 0,
                     id="4.1-vary-star-on-another-line"),
        pytest.param(200, [("Vary", "X-\xe9")], False, False, "vary-invalid", 0,
                     id="9110-5.1-a-vary-member-that-is-no-token-names-no-header"),
        pytest.param(200, [("Vary", "accept, x y")], False, False, "vary-invalid", 0,
                     id="9110-5.1-one-member-that-is-no-token-is-enough"),
        pytest.param(200, [], True, True, "", 60,
                     id="read-an-empty-session-without-a-cookie-is-the-anonymous-entry"),
        pytest.param(404, [], False, False, "status", 0,
                     id="default-freshness-only-for-configured-statuses"),
        pytest.param(404, [("Cache-Control", "max-age=30")], False, True, "", 30,
                     id="3-explicit-freshness-any-final-status"),
        pytest.param(299, [("Cache-Control", "max-age=30")], False, True, "", 30,
                     id="3-explicit-freshness-an-unknown-status"),
        pytest.param(206, [("Cache-Control", "max-age=30")], False, False, "status", 0,
                     id="3-partial-content-is-not-stored"),
        pytest.param(599, [("Cache-Control", "max-age=30, must-understand, no-store")], False,
                     False, "must-understand", 0, id="5.2.2.3-must-understand-unknown"),
        pytest.param(200, [("Cache-Control", "max-age=30, must-understand, no-store")], False,
                     True, "", 30, id="5.2.2.3-must-understand-overrides-no-store"),
        pytest.param(200, [("Expires", "Mon, 12 Jan 1970 13:47:40 GMT"), ("Date", DATE)],
                     False, True, "", 60, id="5.3-expires-minus-date"),
        pytest.param(200, [("Expires", "0"), ("Cache-Control", "max-age=30")], False, True,
                     "", 30, id="5.3-max-age-beats-expires"),
        pytest.param(200, [("Expires", "Mon, 12 Jan 1970 13:47:40 GMT")], False, True, "", 60,
                     id="9110-6.6.1-no-date-the-arrival-time-stands-for-it"),
        pytest.param(200, [("Cache-Control", "max-age=3600"), ("Age", "3000")], False, True,
                     "", 600, id="4.2.3-the-origins-age-counts"),
        pytest.param(200, [("Cache-Control", "max-age=3600"), ("Age", "7200")], False, False,
                     "max-age", 0, id="4.2.3-stale-on-arrival"),
        pytest.param(200, [("Cache-Control", "max-age=3600"), ("Age", "7200, 0")], False,
                     False, "max-age", 0, id="5.1-first-age-value"),
        pytest.param(200, [("Cache-Control", "max-age=3600"), ("Age", "-7200")], False, True,
                     "", 3600, id="5.1-invalid-age-is-ignored"),
        pytest.param(200, [("Cache-Control", "max-age=3600"), ("Age", "2147483648")], False,
                     False, "max-age", 0, id="1.2.2-large-age-is-stale"),
        pytest.param(200, [("Cache-Control", "max-age=100"), ("Date", "Mon, 12 Jan 1970 "
                                                                     "13:45:40 GMT")],
                     False, True, "", 40, id="4.2.3-apparent-age-from-date"),
        pytest.param(200, [("CDN-Cache-Control", "max-age=30"), ("Cache-Control", "no-store")],
                     False, True, "", 30, id="rfc9213-targeted-field-wins"),
        pytest.param(200, [("CDN-Cache-Control", "no-store"), ("Cache-Control", "max-age=30")],
                     False, False, "no-store", 0, id="rfc9213-targeted-no-store"),
        pytest.param(200, [("CDN-Cache-Control", 'max-age="30"'), ("Cache-Control",
                                                                   "no-store")],
                     False, False, "no-store", 0, id="rfc9213-invalid-falls-back"),
        pytest.param(200, [("RedisMiddleware-Cache-Control", "max-age=5"),
                           ("CDN-Cache-Control", "max-age=30")], False, True, "", 5,
                     id="rfc9213-our-own-field-first"),
        pytest.param(200, [("CDN-Cache-Control", "max-age=30"), ("Expires", "0")], False,
                     True, "", 30, id="rfc9213-expires-ignored-with-a-targeted-field"),
    ],
)
def test_storability(status: int, headers: list[tuple[str, str]], touched: bool, stored: bool,
                     reason: str, ttl: int) -> None:
    c = core()
    verdict = c.verdict(plan(c), status, headers, touched, NOW, NOW)
    assert (verdict.store, verdict.reason, verdict.ttl) == (stored, reason, ttl)


@pytest.mark.parametrize(
    ("route", "headers", "stored", "reason", "ttl"),
    [
        pytest.param({"ttl": 0, "freshness": "origin"}, [], False, "no-freshness", 0,
                     id="origin-mode-nothing-stated-nothing-stored"),
        pytest.param({"ttl": 0, "freshness": "origin"}, [("Cache-Control", "max-age=9")],
                     True, "", 9, id="origin-mode-max-age"),
        pytest.param({"ttl": 0, "freshness": "origin"},
                     [("Last-Modified", "Mon, 12 Jan 1970 11:00:00 GMT"), ("Date", DATE)],
                     True, "", 1000, id="4.2.2-heuristic-10-percent-of-last-modified"),
        pytest.param({"ttl": 0, "freshness": "origin"},
                     [("Last-Modified", "Mon, 12 Jan 1970 11:00:00 GMT")],
                     True, "", 1000, id="4.2.2-heuristic-without-date"),
        pytest.param({"ttl": 60, "max_ttl": 30}, [("Cache-Control", "max-age=3600")], True,
                     "", 30, id="max-ttl-caps-the-origin"),
        pytest.param({"ttl": 60, "max_ttl": 30}, [], True, "", 30,
                     id="max-ttl-caps-the-default"),
    ],
)
def test_route_freshness(route: dict[str, Any], headers: list[tuple[str, str]], stored: bool,
                         reason: str, ttl: int) -> None:
    c = core(routes={"/x": route})
    verdict = c.verdict(plan(c), 200, headers, False, NOW, NOW)
    assert (verdict.store, verdict.reason, verdict.ttl) == (stored, reason, ttl)


def test_global_origin_mode() -> None:
    c = core(cache_freshness="origin")
    assert c.verdict(plan(c), 200, [], False, NOW, NOW).reason == "no-freshness"


def test_the_response_delay_counts_in_its_age() -> None:
    """4.2.3: response_delay is added to the Age the response carried."""
    c = core()
    verdict = c.verdict(plan(c), 200, [("Cache-Control", "max-age=60"), ("Age", "10")],
                        False, NOW - 5, NOW)
    assert verdict.fresh is not None and verdict.fresh.initial_age == 15


def test_authorization_needs_explicit_permission() -> None:
    """3.5: a request with Authorization is stored only when the response allows it."""
    c = core()
    authed = plan(c, headers=(("host", "a.test"), ("authorization", "Bearer t")))
    assert c.verdict(authed, 200, []).reason == "authorization"
    assert c.verdict(authed, 200, [("Cache-Control", "max-age=9, must-revalidate")]).store
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
        pytest.param("M-SEARCH", True, False, id="4.4-an-unknown-method-invalidates"),
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


def _entry(fresh_for: float, swr: int = 0, sie: int = 0, public: bool = False,
           revalidate: bool = False, headers: tuple[tuple[str, str], ...] = (
               ("Content-Type", "text/plain"), ("ETag", '"e"'))) -> Entry:
    return Entry(200, headers, b"hello", NOW - 5, NOW + fresh_for, 0.0, swr, sie, public,
                 revalidate)


@pytest.mark.parametrize(
    ("entry", "locked", "step"),
    [
        pytest.param(None, True, "compute", id="miss-with-the-guard-computes"),
        pytest.param(None, False, "wait", id="miss-another-holds-the-guard-waits"),
        pytest.param(_entry(10), False, "serve", id="fresh-serves"),
        pytest.param(_entry(-1, swr=30), False, "serve",
                     id="rfc5861-stale-while-revalidate-serves-while-another-refreshes"),
        pytest.param(_entry(-1, swr=30), True, "refresh",
                     id="rfc5861-stale-while-revalidate-the-guard-holder-refreshes-behind"),
        pytest.param(_entry(-1, swr=30, revalidate=True), True, "compute",
                     id="5.2.2.2-must-revalidate-beats-stale-while-revalidate"),
        pytest.param(_entry(-60, swr=30), False, "wait", id="past-swr-waits-for-the-holder"),
        pytest.param(_entry(-60), True, "compute", id="4.3-stale-the-holder-revalidates"),
    ],
)
def test_next_step_after_a_lookup(entry: Entry | None, locked: bool, step: str) -> None:
    c = core()
    assert c.next_step(plan(c), Lookup("v", entry, locked, "tok"), NOW) == step


@pytest.mark.parametrize(
    ("cache_control", "entry", "servable"),
    [
        pytest.param("max-age=2", _entry(10), None, id="5.2.1.1-max-age-older-than-asked"),
        pytest.param("max-age=9", _entry(10), "fresh", id="5.2.1.1-max-age-young-enough"),
        pytest.param("min-fresh=20", _entry(10), None, id="5.2.1.3-min-fresh"),
        pytest.param("max-stale=20", _entry(-10), "stale", id="5.2.1.2-max-stale"),
        pytest.param("max-stale", _entry(-1000), "stale", id="5.2.1.2-max-stale-any"),
        pytest.param("max-stale=5", _entry(-10), None, id="5.2.1.2-max-stale-too-old"),
        pytest.param("max-stale", _entry(-10, revalidate=True), None,
                     id="5.2.2.2-must-revalidate-beats-max-stale"),
    ],
)
def test_request_directives(cache_control: str, entry: Entry, servable: str | None) -> None:
    c = core()
    p = plan(c, headers=(("host", "a.test"), ("cache-control", cache_control)))
    assert c.servable(p, entry, NOW) == servable


def test_request_directives_can_be_ignored() -> None:
    """``cache_request_directives=False``: a client cannot force a miss."""
    c = core(cache_request_directives=False)
    p = plan(c, headers=(("host", "a.test"), ("cache-control", "no-cache, max-age=0"),
                         ("pragma", "no-cache")))
    assert p.lookup and c.servable(p, _entry(10), NOW) == "fresh"


def test_an_entry_never_fresh_is_revalidated_without_waiting() -> None:
    """A no-cache entry: a request that finds the guard taken revalidates too, instead of
    waiting for a fresh entry that never comes."""
    c = core()
    never = Entry(200, (("ETag", '"e"'),), b"x", NOW - 5, NOW - 5, 0.0, 0, 0, False, True)
    assert c.next_step(plan(c), Lookup("v", never, False, "tok"), NOW) == "compute"


def test_revalidation_sends_the_stored_validators() -> None:
    """4.3.1: ETag as If-None-Match, Last-Modified as If-Modified-Since."""
    c = core()
    lm = "Mon, 12 Jan 1970 11:00:00 GMT"
    entry = _entry(-1, headers=(("ETag", '"e"'), ("Last-Modified", lm)))
    assert c.conditional(entry) == (("if-none-match", '"e"'), ("if-modified-since", lm))
    assert c.conditional(_entry(-1, headers=())) == ()


def test_a_304_updates_the_stored_fields() -> None:
    """3.2 and 4.3.4: the 304's fields replace the stored ones, except Content-Length;
    its freshness is recomputed; a 304 for another ETag updates nothing."""
    c = core()
    entry = _entry(-1, headers=(("ETag", '"e"'), ("Content-Length", "5"), ("X-A", "1"),
                                ("Cache-Control", "max-age=1")))
    found = c.freshened(plan(c), entry, [("ETag", '"e"'), ("Cache-Control", "max-age=99"),
                                         ("Content-Length", "0"), ("X-A", "2")], NOW, NOW)
    assert found is not None
    fresh, verdict = found
    assert dict(fresh.headers) == {"ETag": '"e"', "Content-Length": "5", "X-A": "2",
                                   "Cache-Control": "max-age=99"}
    assert verdict.ttl == 99 and fresh.body == b"hello"
    assert c.freshened(plan(c), entry, [("ETag", '"other"')], NOW, NOW) is None


def test_connection_listed_and_hop_by_hop_fields_are_not_stored() -> None:
    """3.1 and RFC 9110 7.6.1."""
    c = core()
    headers = [("Connection", "x-a, close"), ("X-A", "1"), ("Keep-Alive", "5"),
               ("X-B", "2"), ("Age", "3"), ("RedisMiddleware-Cache-Control", "max-age=9")]
    verdict = c.verdict(plan(c), 200, headers, False, NOW, NOW)
    entry = c.entry_of(verdict, 200, headers, b"", NOW)
    assert entry.headers == (("X-B", "2"),)


@pytest.mark.parametrize(
    ("header", "span"),
    [
        pytest.param("bytes=0-1", (0, 1), id="9110-14.1.2-first-last"),
        pytest.param("bytes=3-", (3, 4), id="9110-14.1.2-open-ended"),
        pytest.param("bytes=-2", (3, 4), id="9110-14.1.2-suffix"),
        pytest.param("bytes=2-99", (2, 4), id="9110-14.1.2-last-beyond-the-end"),
        pytest.param("bytes=0-1,3-4", None, id="several-ranges-get-the-whole"),
        pytest.param("bytes=9-", None, id="unsatisfiable-gets-the-whole"),
        pytest.param("items=0-1", None, id="another-unit-gets-the-whole"),
        pytest.param("bytes=-0", None, id="empty-suffix"),
    ],
)
def test_ranges(header: str, span: tuple[int, int] | None) -> None:
    assert byte_range(header, 5) == span


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


@pytest.mark.parametrize(
    ("since", "status"),
    [
        pytest.param("Mon, 12 Jan 1970 11:00:00 GMT", 304, id="9110-13.1.3-not-modified"),
        pytest.param("Mon, 12 Jan 1970 10:00:00 GMT", 200, id="9110-13.1.3-modified"),
        pytest.param("yesterday", 200, id="9110-13.1.3-invalid-date-ignored"),
    ],
)
def test_if_modified_since_hit(since: str, status: int) -> None:
    c = core()
    entry = _entry(10, headers=(("Last-Modified", "Mon, 12 Jan 1970 11:00:00 GMT"),))
    p = plan(c, headers=(("host", "a.test"), ("if-modified-since", since)))
    assert c.hit(p, entry, head=False, now=NOW)[0] == status


def test_if_none_match_wins_over_if_modified_since() -> None:
    c = core()
    entry = _entry(10, headers=(("ETag", '"e"'), ("Last-Modified", DATE)))
    p = plan(c, headers=(("host", "a.test"), ("if-none-match", '"x"'),
                         ("if-modified-since", DATE)))
    assert c.hit(p, entry, head=False, now=NOW)[0] == 200


def test_an_etag_with_a_comma_matches() -> None:
    c = core()
    entry = _entry(10, headers=(("ETag", '"a,b"'),))
    p = plan(c, headers=(("host", "a.test"), ("if-none-match", '"x", "a,b"')))
    assert c.hit(p, entry, head=False, now=NOW)[0] == 304


def test_head_is_answered_without_a_body() -> None:
    c = core()
    status, _, body = c.hit(plan(c, "HEAD"), _entry(10), head=True, now=NOW)
    assert (status, body) == (200, b"")


def test_the_scheme_selects_the_entry_but_not_the_url() -> None:
    """2: the target URI (scheme included) is the key; the URL digest, which purges and
    invalidation go by, is the same for both schemes, so they drop both."""
    c = core()
    http = c.plan(request(headers=(("host", "a.test"),)))
    https = c.plan(request(headers=(("host", "a.test"),), scheme="https"))
    upper = c.plan(request(headers=(("host", "a.test"),), scheme="HTTPS"))
    assert http is not None and https is not None and upper is not None
    assert http.url == https.url
    for names in ((), ("accept",)):
        assert c.variant(http, names) != c.variant(https, names)
        assert c.variant(upper, names) == c.variant(https, names)


def test_vary_names_are_read_back_as_they_were_written() -> None:
    """Names go to Redis as UTF-8 (a response's ``Vary``, read as latin-1, may name
    any text; a route's ``vary_cookies`` are ASCII, checked with the settings): read
    back the same way, they match in the second round trip."""
    c = core(routes={"/x": 60})
    stored, entry = "x-th\xe8me".encode(), _entry(10).encode()
    flow = c.lookup_flow(plan(c), NOW)
    batch, sent = next(flow), 1
    try:
        while sent < 4:  # as the script does: the entry only for the names it holds
            same = str(batch[0].args[-4]).encode() == stored
            batch = flow.send([[stored, entry if same else None, 0]])
            sent += 1
    except StopIteration as stop:
        lookup = stop.value
    assert sent == 2 and lookup.entry is not None and lookup.entry.body == b"hello"


def test_names_that_keep_changing_end_in_a_miss_that_waits_for_nobody() -> None:
    c = core(cache_lock_timeout=5)
    p = plan(c)
    seen, lookup = batches(c.lookup_flow(p, NOW), [[[names, None, 0]] for names in (
        b"a", b"b", b"c")])
    assert len(seen) == 3
    assert (lookup.entry, lookup.locked, lookup.guarded) == (None, False, False)
    assert c.next_step(p, lookup, NOW) == "compute"


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
    assert lookup.entry is not None and lookup.entry.body == b"hello" and not lookup.locked


def test_invalidation_is_one_script_over_the_urls_keys() -> None:
    c = core()
    assert run_pure(c.invalidate_flow(plan(c).url), [[3]]) == 3


def test_an_entry_is_fresh_only_while_its_lifetime_exceeds_its_age() -> None:
    """4.2: at the very moment its lifetime is used up (a no-cache entry at once, even
    within the millisecond it was stored), an entry is stale."""
    c = core()
    assert c.servable(plan(c), _entry(0), NOW) is None
    assert c.servable(plan(c), _entry(0.001), NOW) == "fresh"


def test_an_entry_stored_without_lifetime_is_never_fresh_even_if_the_clock_steps_back() -> None:
    """5.2.2.4: a no-cache response is never used without the app's confirmation, also
    when the wall clock is set back after it was stored (an NTP step on a busy host)."""
    c = core()
    never = Entry(200, (("ETag", '"e"'),), b"hello", NOW, NOW, 0.0, revalidate=True)
    assert never.never_fresh
    assert c.servable(plan(c), never, NOW - 3) is None
    lookup = Lookup("", never, locked=False, token="t")
    assert c.next_step(plan(c), lookup, NOW - 3) == "compute"  # no wait for another
    lived = Entry(200, (("ETag", '"e"'),), b"hello", NOW, NOW + 1, 0.0, revalidate=True)
    assert not lived.never_fresh and c.servable(plan(c), lived, NOW + 0.5) == "fresh"


ANON = (("host", "a.test"),)
OTHER_COOKIE = (("host", "a.test"), ("cookie", "theme=dark"))
SIGNED_IN = (("host", "a.test"), ("cookie", "session=abc; theme=dark"))
ROUTES = {"/x": 60, "/shared": {"ttl": 60, "per_user": False},
          "/c": {"ttl": 60, "vary_cookies": ["theme"]}}


@pytest.mark.parametrize(
    ("path", "request_headers", "response_headers", "use", "reason", "vary"),
    [
        pytest.param("/x", ANON, [], "read", "", ("cookie?session",),
                     id="session-read-without-a-session-cookie-shared-by-such-requests"),
        pytest.param("/x", OTHER_COOKIE, [], "read", "", ("cookie?session",),
                     id="session-read-other-cookies-do-not-matter"),
        pytest.param("/x", SIGNED_IN, [], "read", "session", (),
                     id="session-read-with-the-session-cookie-is-per-user"),
        pytest.param("/x", ANON, [], "written", "session-written", (),
                     id="session-written-never-stored"),
        pytest.param("/shared", ANON, [], "written", "session-written", (),
                     id="session-written-never-stored-even-shared"),
        pytest.param("/x", ANON, [], "", "", (), id="session-untouched-varies-on-nothing"),
        pytest.param("/x", SIGNED_IN, [], "", "", (),
                     id="session-untouched-signed-in-is-stored-for-all"),
        pytest.param("/x", ANON, [("Vary", "Cookie")], "", "", ("cookie?",),
                     id="4.1-vary-cookie-stored-for-requests-without-any-cookie"),
        pytest.param("/x", OTHER_COOKIE, [("Vary", "Accept, Cookie")], "", "session", (),
                     id="4.1-vary-cookie-any-cookie-is-per-user"),
        pytest.param("/x", ANON, [("Vary", "cookie, Accept")], "read", "",
                     ("accept", "cookie?"), id="4.1-vary-cookie-wins-over-the-session-rule"),
        pytest.param("/shared", SIGNED_IN, [], "read", "", (),
                     id="per-user-false-signed-in-stored-for-everyone"),
        pytest.param("/shared", OTHER_COOKIE, [("Vary", "Cookie")], "read", "", (),
                     id="per-user-false-ignores-vary-cookie"),
        pytest.param("/c", SIGNED_IN, [], "read", "", ("cookie:theme",),
                     id="vary-cookies-one-entry-per-value"),
    ],
)
def test_session_and_cookie_dependence(
    path: str, request_headers: tuple[tuple[str, str], ...],
    response_headers: list[tuple[str, str]], use: Any, reason: str, vary: tuple[str, ...],
) -> None:
    c = core(routes=ROUTES)
    verdict = c.verdict(plan(c, path=path, headers=request_headers), 200, response_headers,
                        use, NOW, NOW)
    assert (verdict.store, verdict.reason, verdict.vary) == (not reason, reason, vary)


@pytest.mark.parametrize(
    ("names", "request_headers", "guarded"),
    [
        pytest.param("", SIGNED_IN, True, id="no-marker-guarded"),
        pytest.param("cookie?session", ANON, True, id="anonymous-may-store-guarded"),
        pytest.param("cookie?session", OTHER_COOKIE, True, id="other-cookies-guarded"),
        pytest.param("cookie?session", SIGNED_IN, False, id="signed-in-never-stored-no-guard"),
        pytest.param("cookie?", OTHER_COOKIE, False, id="any-cookie-never-stored-no-guard"),
    ],
)
def test_no_stampede_guard_where_nothing_can_be_stored(
    names: str, request_headers: tuple[tuple[str, str], ...], guarded: bool,
) -> None:
    """Requests that can only compute their own response do not queue behind each other."""
    c = core(routes=ROUTES, cache_lock_timeout=5)
    p = plan(c, headers=request_headers)
    c.verdict(p, 200, [], "read", NOW, NOW)  # nothing learnt; names come from Redis
    lookup, batches = _lookup_with_names(c, p, names)
    assert lookup.guarded is guarded
    lock_ms = batches[-1][0].args[-2]
    assert (lock_ms > 0) is guarded
    assert (c.next_step(p, lookup, NOW) == "compute") or guarded


def _lookup_with_names(c: CacheCore, p: CachePlan, names: str) -> tuple[Lookup, list[Any]]:
    seen: list[Any] = []
    flow = c.lookup_flow(p, NOW)
    batch = next(flow)
    try:
        while True:
            seen.append(batch)
            batch = flow.send([[names.encode(), None, 0]])
    except StopIteration as stop:
        return stop.value, seen


def test_a_hit_of_an_entry_for_requests_without_cookies_says_vary_cookie() -> None:
    c = core(routes=ROUTES)
    p = plan(c)
    verdict = c.verdict(p, 200, [], "read", NOW, NOW)
    entry = c.entry_of(verdict, 200, [("Content-Type", "text/plain")], b"x", NOW)
    lookup = Lookup("v", None, True, "t")
    run_pure(c.store_flow(p, lookup, verdict, entry, NOW), [[1, 1, 1, 1]])
    _, headers, _ = c.hit(p, entry, False, NOW)
    assert ("Vary", "Cookie") in headers
    shared = plan(c, path="/shared", headers=SIGNED_IN)
    verdict = c.verdict(shared, 200, [], "read", NOW, NOW)
    entry = c.entry_of(verdict, 200, [], b"x", NOW)
    run_pure(c.store_flow(shared, lookup, verdict, entry, NOW), [[1, 1, 1, 1]])
    assert not [h for h in c.hit(shared, entry, False, NOW)[1] if h[0] == "Vary"]
