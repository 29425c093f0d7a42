"""The response half, decided with no I/O: what each part adds, replaces and writes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from redis_middleware import RedisCommandError, RedisUnavailableError, SessionUnavailableError
from redis_middleware.sansio import incidents
from redis_middleware.sansio.cache import CacheCore, Entry, Lookup
from redis_middleware.sansio.exchange import CachePart, Exchange, Reply, SessionPart, vary_with
from redis_middleware.sansio.responses import Response, store_unavailable
from redis_middleware.sansio.sessions.cookies import IncomingCookie, new_session_id
from redis_middleware.sansio.sessions.core import SessionCore

from .helpers import batches, commands, request, settings

UNAVAILABLE = store_unavailable(2.0)
SID = new_session_id()


@pytest.mark.parametrize(
    ("headers", "add", "drop"),
    [
        pytest.param([], [("Vary", "Cookie")], set(), id="none-yet"),
        pytest.param([("Vary", "Accept")], [("Vary", "Accept, Cookie")], {"vary"}, id="merged"),
        pytest.param([("Vary", "X-Cookie-Consent")], [("Vary", "X-Cookie-Consent, Cookie")],
                     {"vary"}, id="a-token-containing-cookie-is-not-cookie"),
        pytest.param([("Vary", "accept"), ("vary", "Origin, accept")],
                     [("Vary", "accept, Origin, Cookie")], {"vary"},
                     id="two-lines-become-one-each-token-once"),
        pytest.param([("Vary", "Accept, COOKIE")], [], set(), id="already-there-any-case"),
        pytest.param([("Vary", "*")], [], set(), id="star-covers-everything"),
    ],
)
def test_vary_merge(headers: list[tuple[str, str]], add: list[tuple[str, str]],
                    drop: set[str]) -> None:
    reply = vary_with(headers, "Cookie")
    assert list(reply.add) == add and set(reply.drop) == drop
    merged = reply.apply(headers)
    assert sum(1 for k, _ in merged if k.lower() == "vary") <= 1


def test_reply_applies_the_same_to_both_header_kinds() -> None:
    reply = Reply((("Vary", "A, Cookie"), ("Set-Cookie", "s=1")), frozenset({"vary"}))
    assert reply.apply([("Vary", "A"), ("X", "1")]) == [
        ("X", "1"), ("Vary", "A, Cookie"), ("Set-Cookie", "s=1")]
    assert reply.apply_raw([(b"vary", b"A"), (b"x", b"1")]) == [
        (b"x", b"1"), (b"vary", b"A, Cookie"), (b"set-cookie", b"s=1")]


def session_part(data: dict[str, Any] | None = None, unavailable: bool = False) -> SessionPart:
    core = SessionCore(settings())
    session = core.session_for(IncomingCookie(SID, present=True))
    if unavailable:
        session.fail(RedisUnavailableError("down"))
    else:
        session.set_loaded(None if data is None else (dict(data), {}))
    return SessionPart(core, session, IncomingCookie(SID, present=True), False,
                       lambda: UNAVAILABLE)


def test_a_session_change_is_saved_at_the_start_and_sets_the_cookie() -> None:
    part = session_part()
    part.session["cart"] = [1]
    seen, reply = batches(Exchange([part]).start_flow(200, []), [[1]])
    assert commands(seen[0]) == ["EVALSHA"]
    names = [k for k, _ in reply.add]
    assert names == ["Vary", "Set-Cookie"] and reply.replace is None


def test_a_refused_save_is_a_503_logged_once(caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident
    part = session_part()
    part.session["cart"] = [1]
    flow = Exchange([part], extra=(("X-RateLimit-Limit", "5"),)).start_flow(200, [])
    next(flow)
    with pytest.raises(StopIteration) as stop:
        flow.throw(RedisCommandError("OOM command not allowed"))
    reply: Reply = stop.value.value
    assert reply.replace is not None and reply.replace.status == 503
    assert ("X-RateLimit-Limit", "5") in reply.replace.headers
    assert "session changes not saved" in caplog.text


def test_the_apps_500_for_an_unavailable_session_becomes_503() -> None:
    part = session_part(unavailable=True)
    with pytest.raises(SessionUnavailableError):
        part.session["x"]
    assert part.replace(500) is UNAVAILABLE
    assert part.replace(200) is None
    assert part.on_app_error(SessionUnavailableError("x"), passed=False) is UNAVAILABLE
    assert part.on_app_error(SessionUnavailableError("x"), passed=True) is None


def cache_part(entry: Entry | None, method: str = "GET", locked: bool = True) -> CachePart:
    core = CacheCore(settings(cache_routes={"/x": 60}))
    plan = core.plan(request(method, "/x", headers=(("host", "a.test"),)))
    assert plan is not None
    lookup = None if method != "GET" else Lookup("v", entry, locked, "tok")
    return CachePart(core, plan, lookup, False, time.time(), lambda: False)


# Stale for 10 s, stale-if-error for a day (relative to the real clock, which the part
# reads; the day keeps it usable however late in a long run the test comes).
STALE = Entry(200, (("Content-Type", "text/plain"),), b"old", time.time() - 100,
              time.time() - 10, 0.0, 0, 86400, False)


@pytest.mark.parametrize(
    ("entry", "status", "replaced"),
    [
        pytest.param(STALE, 502, True, id="rfc5861-stale-if-error-on-5xx"),
        pytest.param(STALE, 404, False, id="a-4xx-is-the-apps-answer"),
        pytest.param(None, 502, False, id="nothing-stored-nothing-to-serve"),
    ],
)
def test_stale_if_error(entry: Entry | None, status: int, replaced: bool) -> None:
    replacement = cache_part(entry).replace(status)
    assert (replacement is not None) is replaced
    if replacement is not None:
        assert isinstance(replacement, Response) and replacement.body == b"old"


def test_an_app_error_before_its_start_serves_stale_but_not_after() -> None:
    part = cache_part(STALE)
    assert part.on_app_error(RuntimeError("boom"), passed=False) is not None
    assert part.on_app_error(RuntimeError("boom"), passed=True) is None
    assert part.on_app_error(SessionUnavailableError("x"), passed=False) is None


def test_a_storable_response_is_stored_after_its_body() -> None:
    part = cache_part(None)
    seen, reply = batches(part.start_flow(200, [("Content-Type", "text/plain")]), [])
    assert seen == [] and ("X-Cache", "MISS") in reply.add
    part.body(b"he", True)
    part.body(b"llo", False)
    seen, _ = batches(part.finish_flow(), [[1, 1, 1, 1]])
    assert commands(seen[0])[0] == "EVALSHA" and len(seen) == 1


def test_an_unstorable_response_frees_the_guard_at_its_start() -> None:
    part = cache_part(None)
    seen, _ = batches(part.start_flow(200, [("Cache-Control", "no-store")]), [[1]])
    assert commands(seen[0]) == ["EVALSHA"]  # the release script, in the start's round trip
    assert batches(part.finish_flow(), [])[0] == []  # nothing left to do


@pytest.mark.parametrize(("status", "writes"), [(204, 1), (303, 1), (400, 0), (500, 0)])
def test_an_unsafe_request_invalidates_on_success_only(status: int, writes: int) -> None:
    """RFC 9111 4.4."""
    part = cache_part(None, method="POST")
    seen, _ = batches(part.start_flow(status, []), [[1]] * writes)
    assert len(seen) == writes


def test_the_stack_shares_one_round_trip_and_adds_its_headers_last() -> None:
    s_part, c_part = session_part(), cache_part(None)
    s_part.session["cart"] = [1]
    exchange = Exchange([c_part, s_part], extra=(("X-RateLimit-Remaining", "4"),))
    seen, reply = batches(exchange.start_flow(200, [("Cache-Control", "no-store")]), [[1, 1]])
    assert len(seen) == 1 and commands(seen[0]) == ["EVALSHA", "EVALSHA"]
    assert reply.add[-1] == ("X-RateLimit-Remaining", "4")
    assert [k for k, _ in reply.add].count("Set-Cookie") == 1
