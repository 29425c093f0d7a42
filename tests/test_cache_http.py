"""RFC 9111 behaviours of the cache through real apps, ASGI and WSGI, on fakeredis, a real
redis-server and a Cluster: revalidation, origin freshness, Age/Expires/Date,
invalidation, targeted fields and ranges."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support import apps
from .support.clients import Clients

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]


def cached(make_client: Clients, routes: Any = None, **options: Any) -> Any:
    return make_client("CacheMiddleware", routes=routes or {"/c/*": 60}, **options)


def url(path: str = "/c/item", **query: str) -> str:
    return path + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())


def http_date(offset: float = 0) -> str:
    return formatdate(time.time() + offset, usegmt=True)


def test_stale_entry_is_revalidated_and_updated_by_a_304(
        make_client: Clients, settings: Settings) -> None:
    """4.3.1-4.3.4: the app sees the stored validator; its 304 updates the stored fields
    (here Cache-Control and a new one) and the client gets the stored body."""
    client = cached(make_client)
    target = url(cc="max-age=1", etag='"v1"', cc304="max-age=60", x304="yes")
    first = client.get(target)
    time.sleep(1.2)
    conns = connections_for(settings)
    before = conns.round_trips
    revalidated = client.get(target)
    assert conns.round_trips - before <= 2  # the lookup, then the update
    assert (revalidated.status_code, revalidated.content) == (200, first.content)
    assert revalidated.headers["x-cache"] == "REVALIDATED"
    assert revalidated.headers["cache-status"] == "rmw; fwd=stale; fwd-status=304; stored"
    assert revalidated.headers["x-updated"] == "yes"
    assert revalidated.headers["cache-control"] == "max-age=60"
    assert revalidated.headers["content-type"] == "application/json"
    assert apps.calls["304"] == 1
    hit = client.get(target)
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-updated"] == "yes"
    assert apps.calls["/c/item"] == 2  # the first response and one revalidation


def test_a_client_conditional_on_a_stale_entry_gets_a_304(make_client: Clients) -> None:
    """The cache's validators replace the client's; the client's own condition is then
    answered from the updated entry."""
    client = cached(make_client)
    target = url(cc="max-age=1", etag='"v1"')
    client.get(target)
    time.sleep(1.2)
    answer = client.get(target, headers={"if-none-match": '"v1"'})
    assert answer.status_code == 304 and answer.content == b""
    assert apps.calls["304"] == 1


def test_an_app_that_ignores_conditionals_replaces_the_entry(
        make_client: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 to a revalidation is a new response: served, stored, nothing confused."""
    monkeypatch.setattr(apps, "ignore_conditionals", True)
    client = cached(make_client)
    target = url(cc="max-age=1", etag='"v1"')
    assert client.get(target).json()["n"] == 1
    time.sleep(1.2)
    second = client.get(target)
    assert second.status_code == 200 and second.json()["n"] == 2
    assert second.headers["cache-status"] == "rmw; fwd=stale; stored"
    assert client.get(target).json()["n"] == 2


def test_no_cache_response_is_revalidated_every_time(make_client: Clients) -> None:
    """5.2.2.4: stored, but never used without the app's confirmation."""
    client = cached(make_client)
    target = url(cc="no-cache", etag='"v1"')
    first = client.get(target)
    for _ in range(2):
        again = client.get(target)
        assert again.headers["x-cache"] == "REVALIDATED" and again.content == first.content
    assert apps.calls["304"] == 2


def test_must_revalidate_forbids_stale_if_error(
        make_client: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    """5.2.2.2: once stale, a must-revalidate response is never served without the app."""
    client = cached(make_client)
    target = url(cc="max-age=1, must-revalidate, stale-if-error=60")
    client.get(target)
    time.sleep(1.2)
    monkeypatch.setattr(apps, "failing", "500")
    assert client.get(target).status_code == 500


def test_the_origins_age_is_counted(make_client: Clients) -> None:
    """4.2.3: a response that arrives 2 hours old with max-age=3600 is already stale;
    one that arrives 10 s old is served with an Age of at least 10."""
    client = cached(make_client)
    old = url(cc="max-age=3600", age="7200")
    assert client.get(old).headers["cache-status"] == 'rmw; fwd=uri-miss; detail="max-age"'
    assert client.get(old).headers["x-cache"] == "MISS"
    young = url(cc="max-age=3600", age="10")
    client.get(young)
    hit = client.get(young)
    assert hit.headers["x-cache"] == "HIT" and int(hit.headers["age"]) >= 10


@pytest.mark.parametrize(("expires", "stored"), [
    pytest.param(3600, True, id="future"),
    pytest.param(-3600, False, id="past"),
    pytest.param(None, False, id="invalid-zero"),
])
def test_expires_decides_freshness(make_client: Clients, expires: int | None,
                                   stored: bool) -> None:
    """5.3 and 4.2.1: Expires minus Date; an invalid Expires is in the past."""
    client = cached(make_client, {"/c/*": {"ttl": 60, "freshness": "origin"}})
    value = http_date(expires) if expires is not None else "0"
    target = url(expires=value, date=http_date())
    client.get(target)
    assert (client.get(target).headers["x-cache"] == "HIT") is stored


def test_the_stored_date_is_kept(make_client: Clients) -> None:
    """RFC 9110 6.6.1 and 9111 4: a hit carries the Date the app sent, not a new one."""
    client = cached(make_client)
    sent = http_date(-5)
    target = url(cc="max-age=60", date=sent)
    client.get(target)
    time.sleep(1.1)
    hit = client.get(target)
    assert hit.headers["x-cache"] == "HIT" and hit.headers["date"] == sent
    assert int(hit.headers["age"]) >= 5


def test_origin_mode_stores_only_what_the_app_makes_cacheable(make_client: Clients) -> None:
    """With ``freshness="origin"``, a response that states no freshness is not reused."""
    client = cached(make_client, {"/c/*": {"ttl": 0, "freshness": "origin"}})
    plain = client.get("/c/item")
    assert plain.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="no-freshness"'
    assert client.get("/c/item").headers["x-cache"] == "MISS"
    target = url(cc="max-age=60")
    client.get(target)
    assert client.get(target).headers["x-cache"] == "HIT"


def test_the_route_ttl_is_a_default_and_max_ttl_a_cap(make_client: Clients) -> None:
    """The response's max-age beats the route's TTL; ``max_ttl`` caps both."""
    client = cached(make_client, {"/c/long": 1, "/c/capped": {"ttl": 60, "max_ttl": 1}})
    longer = url("/c/long", cc="max-age=60")
    capped = url("/c/capped", cc="max-age=60")
    for target in (longer, capped):
        client.get(target)
    time.sleep(1.2)
    assert client.get(longer).headers["x-cache"] == "HIT"
    assert client.get(capped).headers["x-cache"] == "MISS"


def test_unknown_methods_invalidate(make_client: Clients) -> None:
    """4.4: a method the cache does not know as safe invalidates on success."""
    client = cached(make_client)
    client.get("/c/item")
    assert client.get("/c/item").headers["x-cache"] == "HIT"
    assert client.request("M-SEARCH", "/c/item").status_code == 200
    assert client.get("/c/item").headers["x-cache"] == "MISS"


def test_location_of_an_unsafe_response_is_invalidated(make_client: Clients) -> None:
    """4.4: the same-origin Location of a successful unsafe request is invalidated;
    another origin's is not touched."""
    client = cached(make_client)
    client.get("/c/item")
    client.post(url("/c/form", location="http://elsewhere.test/c/item"))
    assert client.get("/c/item").headers["x-cache"] == "HIT"
    client.post(url("/c/form", location="/c/item"))
    assert client.get("/c/item").headers["x-cache"] == "MISS"


def test_targeted_fields_win_over_cache_control(make_client: Clients) -> None:
    """RFC 9213 2.1: CDN-Cache-Control (passed on) and our own field (removed) decide
    before Cache-Control; an invalid targeted value falls back to Cache-Control."""
    client = cached(make_client, {"/c/*": {"ttl": 0, "freshness": "origin"}})
    cdn = url(cdn="max-age=60", cc="no-store")
    first = client.get(cdn)
    assert first.headers["cdn-cache-control"] == "max-age=60"
    assert client.get(cdn).headers["x-cache"] == "HIT"
    own = url(own="no-store", cc="max-age=60")
    response = client.get(own)
    assert "redismiddleware-cache-control" not in response.headers
    assert response.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="no-store"'
    invalid = url(cdn='max-age="60"', cc="no-store")
    client.get(invalid)
    assert client.get(invalid).headers["x-cache"] == "MISS"


def test_a_range_is_served_from_the_stored_response(make_client: Clients) -> None:
    """RFC 9110 14.2: a 206 for one range of a complete stored response; anything else
    gets the whole response."""
    client = cached(make_client)
    whole = client.get("/c/item").content
    part = client.get("/c/item", headers={"range": "bytes=2-5"})
    assert (part.status_code, part.content) == (206, whole[2:6])
    assert part.headers["content-range"] == f"bytes 2-5/{len(whole)}"
    suffix = client.get("/c/item", headers={"range": "bytes=-3"})
    assert suffix.content == whole[-3:]
    several = client.get("/c/item", headers={"range": "bytes=0-1,4-5"})
    assert (several.status_code, several.content) == (200, whole)
    assert apps.calls["/c/item"] == 1


def test_a_status_http_does_not_name_is_replayed(make_client: Clients) -> None:
    """A stored 299 (explicitly fresh) is served with its own status on both sides."""
    client = cached(make_client)
    target = url(status="299", cc="max-age=60")
    client.get(target)
    hit = client.get(target)
    assert (hit.status_code, hit.headers["x-cache"]) == (299, "HIT")
