"""Response-caching scenarios, run for ASGI and WSGI on fakeredis and on a real redis-server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support import apps
from .support.audit import audit_keyspace
from .support.clients import Clients, stale_if_error_is_served

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]
ROUTES = {"/c/*": 60}


def cached(make_client: Clients, **options: Any) -> Any:
    options.setdefault("routes", ROUTES)
    return make_client("CacheMiddleware", **options)


def test_second_get_is_a_hit_restored_exactly(make_client: Clients, settings: Settings) -> None:
    client = cached(make_client)
    first = client.get("/c/item?etag=%22v1%22")
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["cache-status"] == "rmw; fwd=uri-miss; stored"
    conns = connections_for(settings)
    before = conns.round_trips
    second = client.get("/c/item?etag=%22v1%22")
    assert conns.round_trips - before == 1  # a hit: one round trip
    assert second.headers["x-cache"] == "HIT"
    assert (second.status_code, second.content) == (first.status_code, first.content)
    assert second.headers.get_list("x-dup") == ["1", "2"]
    assert second.headers["etag"] == '"v1"'
    assert int(second.headers["age"]) >= 0
    assert apps.calls["/c/item"] == 1


def test_query_order_is_normalised(make_client: Clients) -> None:
    client = cached(make_client)
    client.get("/c/item?a=1&b=2&b=1&e=")
    assert client.get("/c/item?b=1&e=&a=1&b=2").headers["x-cache"] == "HIT"
    assert client.get("/c/item?a=1&b=2").headers["x-cache"] == "MISS"
    assert client.get("/c/item?a=2&b=2&b=1&e=").headers["x-cache"] == "MISS"


def test_unsafe_methods_are_not_cached_and_invalidate(make_client: Clients) -> None:
    client = cached(make_client)
    client.get("/c/item")
    assert client.get("/c/item").headers["x-cache"] == "HIT"
    assert client.post("/c/item?status=500").status_code == 500  # failure: no invalidation
    assert client.get("/c/item").headers["x-cache"] == "HIT"
    assert "x-cache" not in client.post("/c/item").headers
    assert client.get("/c/item").headers["x-cache"] == "MISS"
    assert apps.calls["/c/item"] == 2


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        pytest.param("cookie=1", "set-cookie", id="set-cookie"),
        pytest.param("cc=no-store", "no-store", id="no-store"),
        pytest.param("cc=private", "private", id="private"),
        pytest.param("cc=no-cache", "no-cache", id="no-cache"),
        pytest.param("cc=max-age%3D0", "max-age", id="max-age-0"),
        pytest.param("vary=%2A", "vary-star", id="vary-star"),
        pytest.param("status=404", "status", id="status"),
        pytest.param("status=500", "status", id="error"),
    ],
)
def test_never_stored(make_client: Clients, settings: Settings, query: str, reason: str) -> None:
    client = cached(make_client)
    first = client.get(f"/c/item?{query}")
    assert first.headers["cache-status"] == f'rmw; fwd=uri-miss; detail="{reason}"'
    assert client.get(f"/c/item?{query}").headers["x-cache"] == "MISS"
    assert apps.calls["/c/item"] == 2
    assert not [k for k in audit_keyspace(settings) if ":e:" in k]


def test_request_rules(make_client: Clients) -> None:
    client = cached(make_client)
    assert client.get("/c/item", headers={"cache-control": "no-store"}).headers[
        "cache-status"] == 'rmw; fwd=uri-miss; detail="request"'
    assert client.get("/c/item", headers={"authorization": "Bearer x"}).headers[
        "cache-status"] == 'rmw; fwd=uri-miss; detail="authorization"'
    client.get("/c/item")
    assert client.get("/c/item").headers["x-cache"] == "HIT"
    assert client.get("/c/item", headers={"authorization": "Bearer x"}).headers[
        "x-cache"] == "MISS"  # a shared cache never answers an authorised request privately
    assert client.get("/c/item", headers={"cache-control": "no-cache"}).headers[
        "x-cache"] == "MISS"
    client.get("/c/pub?cc=public")
    assert client.get("/c/pub?cc=public", headers={"authorization": "Bearer y"}).headers[
        "x-cache"] == "HIT"


def test_vary_separates_entries(make_client: Clients) -> None:
    client = cached(make_client)
    en = client.get("/c/item?vary=Accept-Language", headers={"accept-language": "en"})
    fr = client.get("/c/item?vary=Accept-Language", headers={"accept-language": "fr"})
    assert fr.headers["x-cache"] == "MISS" and fr.json()["n"] == 2
    again = client.get("/c/item?vary=Accept-Language", headers={"accept-language": "en"})
    assert again.headers["x-cache"] == "HIT" and again.json() == en.json()
    assert client.get("/c/item?vary=Accept-Language", headers={
        "accept-language": "fr"}).json()["n"] == 2


def test_a_varied_url_has_an_entry_per_origin_and_value(make_client: Clients) -> None:
    """With Vary, a URL's entries are still told apart by scheme and host, and by each
    varied header's value; each is served back to its own requests only."""
    client = cached(make_client)
    url = "/c/item?vary=Accept-Language"
    numbers = {}
    for origin in ("http://a.example", "https://a.example", "http://b.example"):
        for lang in ("en", "fr"):
            first = client.get(origin + url, headers={"accept-language": lang})
            assert first.headers["x-cache"] == "MISS"
            numbers[origin, lang] = first.json()["n"]
    for (origin, lang), n in numbers.items():
        again = client.get(origin + url, headers={"accept-language": lang})
        assert again.headers["x-cache"] == "HIT" and again.json()["n"] == n


def test_requests_with_as_many_but_other_fields_select_by_their_own(
        make_client: Clients) -> None:
    """Requests carrying as many header fields, but not the same ones, are each read by
    their own fields."""
    client = cached(make_client)
    url = "/c/item?vary=Accept-Language"
    assert client.get(url, headers={"accept-language": "en"}).json()["n"] == 1
    other = client.get(url, headers={"x-language": "en"})  # no Accept-Language
    assert other.headers["x-cache"] == "MISS" and other.json()["n"] == 2
    assert client.get(url, headers={"accept-language": "en"}).json()["n"] == 1
    assert client.get(url, headers={"x-language": "en"}).json()["n"] == 2
    assert client.get(url, headers={"accept-language": "fr"}).json()["n"] == 3


def test_hits_are_served_with_their_own_status(make_client: Clients) -> None:
    client = cached(make_client, statuses=(200, 404))
    for path, status in (("/c/found", 200), ("/c/gone?status=404", 404),
                         ("/c/again", 200)):
        assert client.get(path).status_code == status
        hit = client.get(path)
        assert (hit.headers["x-cache"], hit.status_code) == ("HIT", status)


def test_host_is_part_of_the_key_and_can_be_allow_listed(make_client: Clients) -> None:
    client = cached(make_client)
    client.get("/c/item", headers={"host": "a.example"})
    assert client.get("/c/item", headers={"host": "evil.example"}).headers["x-cache"] == "MISS"
    assert client.get("/c/item", headers={"host": "a.example"}).headers["x-cache"] == "HIT"
    listed = cached(make_client, allowed_hosts="a.example")
    assert "x-cache" not in listed.get("/c/x", headers={"host": "evil.example"}).headers


def test_the_scheme_is_part_of_the_key(make_client: Clients, settings: Settings) -> None:
    """A page stored for http:// (its absolute links, say) is never served to https://,
    and a plain-http request cannot decide what https clients get; a hit still costs
    one round trip."""
    client = cached(make_client)
    plain = client.get("http://testserver/c/item")
    secure = client.get("https://testserver/c/item")
    assert [r.headers["x-cache"] for r in (plain, secure)] == ["MISS", "MISS"]
    conns = connections_for(settings)
    for url, first in (("http://testserver/c/item", plain), ("https://testserver/c/item",
                                                            secure)):
        before = conns.round_trips
        again = client.get(url)
        assert conns.round_trips - before == 1
        assert again.headers["x-cache"] == "HIT" and again.json() == first.json()
    assert apps.calls["/c/item"] == 2


def test_purges_and_invalidation_drop_every_schemes_entries(
    make_client: Clients, settings: Settings,
) -> None:
    from redis_middleware.wsgi import Cache

    client = cached(make_client)
    urls = ("http://testserver/c/item", "https://testserver/c/item")

    def store_both() -> None:
        for url in urls:
            client.get(url)
            assert client.get(url).headers["x-cache"] == "HIT"

    store_both()
    assert Cache(settings, routes=ROUTES).purge_url("/c/item") == 2
    assert [client.get(url).headers["x-cache"] for url in urls] == ["MISS", "MISS"]
    assert client.post("http://testserver/c/item").status_code == 200
    assert [client.get(url).headers["x-cache"] for url in urls] == ["MISS", "MISS"]
    store_both()
    assert client.delete("https://testserver/c/item").status_code == 200
    assert [client.get(url).headers["x-cache"] for url in urls] == ["MISS", "MISS"]


def test_a_vary_naming_no_header_is_not_stored_and_never_waited_for(
    make_client: Clients,
) -> None:
    """A field name is a token (RFC 9110 5.1): a Vary member that is not one can match no
    request, so the response is not stored, and no later request waits for the guard."""
    client = cached(make_client)
    for _ in range(3):
        started = time.monotonic()
        response = client.get("/c/item?vary=Accept%2C%20X%20Y")
        assert time.monotonic() - started < 1
        assert response.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="vary-invalid"'
    assert apps.calls["/c/item"] == 3


def test_a_vary_with_a_latin_1_byte_is_not_stored_and_never_waited_for(
    settings: Settings,
) -> None:
    """``Vary: X-\xe9`` as a server hands it over (bytes on ASGI, a latin-1 str on WSGI;
    the test clients cannot carry it): every request answers at once, uncached."""
    import asyncio

    import redis_middleware.asgi as asgi
    import redis_middleware.wsgi as wsgi

    from .support.wsgi_direct import call

    seen: list[str] = []
    calls = 0

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"vary", b"X-\xe9")]})
        await send({"type": "http.response.body", "body": b"page"})

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        nonlocal calls
        calls += 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "X-\xe9")])
        return [b"page"]

    async def asgi_requests() -> None:
        app = asgi.CacheMiddleware(asgi_app, settings, routes={"/x": 60})
        scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/x",
                 "raw_path": b"/x", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"h")], "client": ("1.2.3.4", 5),
                 "server": ("h", 80), "asgi": {"version": "3.0"}, "http_version": "1.1"}
        try:
            for _ in range(3):
                sent: list[Any] = []

                async def receive() -> Any:
                    return {"type": "http.request", "body": b""}

                async def send(message: Any, sent: list[Any] = sent) -> None:
                    sent.append(message)

                started = time.monotonic()
                await app(scope, receive, send)
                assert time.monotonic() - started < 1
                seen.append(dict(sent[0]["headers"])[b"cache-status"].decode())
        finally:
            await connections_for(settings).aclose()

    asyncio.run(asgi_requests())
    wrapped = wsgi.CacheMiddleware(wsgi_app, settings, routes={"/x": 60})
    for _ in range(3):
        started = time.monotonic()
        answered = call(wrapped, "/x", HTTP_HOST="h")
        answered.read()
        assert time.monotonic() - started < 1
        seen.append({k.lower(): v for k, v in answered.headers.items()}["cache-status"])
    assert seen == ['rmw; fwd=uri-miss; detail="vary-invalid"'] * 6
    assert calls == 6


def test_vary_names_another_process_stored_are_read_as_written(make_client: Clients) -> None:
    """A process that learns a URL's vary names (a route's cookie names among them) from
    Redis reads them back as they were written, and hits in one round trip. (Cookie
    names are ASCII, checked with the settings; the sansio test reads non-ASCII names
    back.)"""
    routes = {"/c/*": {"ttl": 60, "vary_cookies": ["theme", "__Host-lang"]}}
    first = cached(make_client, routes=routes)
    assert first.get("/c/item?vary=Cookie").headers["cache-status"].endswith("stored")
    other = cached(make_client, routes=routes)  # its own memos: like another process
    started = time.monotonic()
    response = other.get("/c/item?vary=Cookie")
    assert time.monotonic() - started < 1
    assert response.headers["x-cache"] == "HIT"
    assert apps.calls["/c/item"] == 1


def test_head_is_answered_from_the_get_entry(make_client: Clients) -> None:
    client = cached(make_client)
    get = client.get("/c/item")
    head = client.head("/c/item")
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_age_grows(make_client: Clients) -> None:
    client = cached(make_client)
    client.get("/c/item")
    time.sleep(1.1)
    assert int(client.get("/c/item").headers["age"]) >= 1


def test_if_none_match_gets_304(make_client: Clients) -> None:
    """RFC 9111 4.3.2: the cache answers a client's conditional request itself."""
    client = cached(make_client)
    url = "/c/item?cc=max-age%3D60&etag=%22v1%22"
    client.get(url)
    hit = client.get(url)
    assert hit.headers["etag"] == '"v1"'
    not_modified = client.get(url, headers={"if-none-match": 'W/"v1", "other"'})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == '"v1"'
    assert not_modified.headers["cache-control"] == "max-age=60"
    assert "content-type" not in not_modified.headers
    other = client.get(url, headers={"if-none-match": '"nope"'})
    assert other.status_code == 200
    assert apps.calls["/c/item"] == 1


def test_no_etag_is_invented(make_client: Clients) -> None:
    """A hit carries only the validators the app sent: an ETag of our own could never be
    checked by the app."""
    client = cached(make_client)
    client.get("/c/item")
    assert "etag" not in client.get("/c/item").headers


def test_ttl_is_shortened_by_max_age(make_client: Clients) -> None:
    client = cached(make_client)
    client.get("/c/item?cc=max-age%3D1")
    assert client.get("/c/item?cc=max-age%3D1").headers["x-cache"] == "HIT"
    time.sleep(1.2)
    assert client.get("/c/item?cc=max-age%3D1").headers["x-cache"] == "MISS"


def test_concurrent_cold_misses_run_the_app_once(make_client: Clients) -> None:
    client = cached(make_client)
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: client.get("/c/item?sleep=0.3"), range(20)))
    assert all(r.status_code == 200 for r in responses)
    assert apps.calls["/c/item"] == 1
    assert {r.json()["n"] for r in responses} == {1}


def test_a_slow_guard_holder_is_waited_for_only_so_long(make_client: Clients) -> None:
    """The request that holds the stampede guard takes 1 s; one that finds the guard taken
    waits ``lock_wait`` (0.2 s), then computes the response itself, without storing it."""
    client = cached(make_client, lock_wait=0.2)
    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(client.get, "/c/item?sleep=1")
        assert apps.sleeping.wait(10)  # the holder has the guard
        waiter = client.get("/c/item?sleep=1")
        first = holder.result()
    assert waiter.status_code == 200 and first.status_code == 200
    assert apps.calls["/c/item"] == 2  # the waiter computed: it did not wait for the holder
    assert first.json()["n"] == 1 and waiter.json()["n"] == 2
    assert waiter.headers["x-cache"] == "MISS"
    assert waiter.headers["cache-status"] == 'rmw; fwd=bypass; detail="lock-timeout"'
    assert client.get("/c/item?sleep=1").json()["n"] == 1  # the holder's response is stored


def test_stale_while_revalidate(make_client: Clients) -> None:
    """RFC 5861 3: the first request after expiry gets the stale entry at once; the
    entry is refreshed in the background, once."""
    client = cached(make_client)
    query = "/c/item?cc=max-age%3D1%2C%20stale-while-revalidate%3D30"
    client.get(query)
    time.sleep(1.2)
    stale = client.get(query)
    assert stale.headers["x-cache"] == "STALE" and stale.json()["n"] == 1
    assert stale.headers["cache-status"].startswith("rmw; hit; ttl=-")
    deadline = time.monotonic() + 5
    while apps.calls.get("/c/item", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    fresh = client.get(query)
    for _ in range(100):  # the refresh's store lands just after the app answers
        if fresh.json()["n"] == 2:
            break
        time.sleep(0.02)
        fresh = client.get(query)
    assert fresh.json()["n"] == 2 and fresh.headers["x-cache"] == "HIT"
    assert apps.calls["/c/item"] == 2  # refreshed once


@pytest.mark.parametrize("failure", ["500", "raise"])
def test_stale_if_error_serves_stale_on_failure(
    make_client: Clients, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    client = cached(make_client)
    url = stale_if_error_is_served(client, monkeypatch, failure)
    monkeypatch.setattr(apps, "failing", "")
    assert client.get(url).json()["n"] == 3  # recomputed once the app works again


def test_large_and_streaming_bodies(make_client: Clients, settings: Settings) -> None:
    client = cached(make_client, max_body=1000)
    big = client.get("/c/item?size=5000")
    assert len(big.content) == 5000
    assert big.headers["cache-status"] == "rmw; fwd=uri-miss; stored"  # decided at start
    assert client.get("/c/item?size=5000").headers["x-cache"] == "MISS"
    stream = client.get("/c/stream")
    assert stream.text == "part1;part2;part3;"
    assert client.get("/c/stream").text == "part1;part2;part3;"
    assert client.get("/c/stream").headers["x-cache"] == "HIT"


def test_session_reading_pages_are_stored_for_requests_without_a_session_cookie(
        make_client: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extensions read the (empty) session on every response: an anonymous request stays
    cacheable; a signed-in one computes its own page, unless the route says the page is
    the same for everyone (per_user=False); a page after which the session changed is
    never stored."""
    routes = {"/c/item": 60, "/c/shared": {"ttl": 60, "per_user": False}, "/c/login": 60}
    client = make_client("CacheMiddleware", routes=routes, outer=(("SessionMiddleware", {}),))
    first = client.get("/c/item?touch=1")
    assert first.headers["cache-status"] == "rmw; fwd=uri-miss; stored"
    hit = client.get("/c/item?touch=1")
    assert hit.headers["x-cache"] == "HIT" and hit.headers["vary"] == "Cookie"
    client.get("/c/shared?touch=1")
    monkeypatch.setattr(apps, "write_session", True)
    login = client.get("/c/login")  # writes the session: a cookie, never stored
    assert login.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="session-written"'
    monkeypatch.setattr(apps, "write_session", False)
    assert "session" in client.cookies
    for _ in range(2):
        mine = client.get("/c/item?touch=1")
        assert mine.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="session"'
    assert apps.calls["/c/item"] == 3
    assert client.get("/c/shared?touch=1").headers["x-cache"] == "HIT"
    assert apps.calls["/c/shared"] == 1


def test_vary_cookie_is_stored_only_for_requests_without_cookies(make_client: Clients) -> None:
    """RFC 9111 4.1 with the Cookie header as the varying field: the variant without
    cookies is stored, the others never (one entry per cookie value is no shared cache)."""
    client = cached(make_client)
    assert client.get("/c/item?vary=Cookie").headers["cache-status"] == (
        "rmw; fwd=uri-miss; stored")
    assert client.get("/c/item?vary=Cookie").headers["x-cache"] == "HIT"
    with_cookie = client.get("/c/item?vary=Cookie", headers={"cookie": "theme=dark"})
    assert with_cookie.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="session"'
    assert client.get("/c/item?vary=Cookie", headers={"cookie": "theme=dark"}).headers[
        "x-cache"] == "MISS"
    assert apps.calls["/c/item"] == 3


def test_purge_url_tag_and_all(make_client: Clients, settings: Settings) -> None:
    from redis_middleware.wsgi import Cache

    routes = {"/c/a": {"ttl": 60, "tags": ["ab"]}, "/c/b": {"ttl": 60, "tags": ["ab"]},
              "/c/*": 60}
    client = cached(make_client, routes=routes)
    for path in ("/c/a", "/c/b", "/c/c", "/c/c?x=1"):
        client.get(path)
        assert client.get(path).headers["x-cache"] == "HIT"
    cache = Cache(settings, routes=routes)
    assert cache.purge_url("/c/c", "x=1") == 1
    assert client.get("/c/c?x=1").headers["x-cache"] == "MISS"
    assert client.get("/c/c").headers["x-cache"] == "HIT"
    assert cache.purge_tag("ab") == 2
    assert client.get("/c/a").headers["x-cache"] == "MISS"
    assert cache.purge_all() >= 2
    assert client.get("/c/c").headers["x-cache"] == "MISS"


def test_uncached_routes_are_untouched(make_client: Clients, settings: Settings) -> None:
    client = cached(make_client, routes={"/c/only": 60})
    response = client.get("/c/other")
    assert "x-cache" not in response.headers
    assert connections_for(settings).commands == 0


def test_a_disconnected_stream_is_not_stored(settings: Settings) -> None:
    import asyncio

    from redis_middleware.asgi import CacheMiddleware
    from redis_middleware.wsgi import CacheMiddleware as WSGICache

    app = CacheMiddleware(apps.asgi_app(), settings, routes=ROUTES)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/c/stream", "raw_path": b"/c/stream",
             "query_string": b"", "root_path": "", "headers": [(b"host", b"t")],
             "client": ("1.1.1.1", 1), "server": ("t", 80)}
    sent: list[Any] = []

    async def receive() -> Any:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 2:
            raise OSError("client went away")

    async def go() -> None:
        try:
            # Starlette's streaming response raises the send error, wrapped in an
            # ExceptionGroup by its task group in some releases.
            with pytest.raises(Exception) as raised:  # noqa: PT011 (checked below)
                await app(scope, receive, send)
            error: BaseException = raised.value
            while getattr(error, "exceptions", None):  # an ExceptionGroup
                error = error.exceptions[0]  # type: ignore[attr-defined]
            assert isinstance(error, OSError) and "client went away" in str(error)
        finally:
            await connections_for(settings).aclose()

    asyncio.run(go())
    wsgi = WSGICache(apps.wsgi_app, settings, routes=ROUTES)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/c/stream", "QUERY_STRING": "",
               "HTTP_HOST": "w", "wsgi.url_scheme": "http", "REMOTE_ADDR": "1.1.1.1"}
    body = wsgi(environ, lambda status, headers, exc_info=None: None)
    iterator = iter(body)
    next(iterator)
    body.close()  # type: ignore[attr-defined]
    assert not [k for k in audit_keyspace(settings) if ":e:" in k]
    assert not [k for k in audit_keyspace(settings) if ":lock:" in k]


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_redis_down_bypasses_the_cache(interface: str, tmp_path: Any) -> None:
    from .support.clients import make_settings
    from .support.servers import start_redis_server, stop_redis_server

    server = start_redis_server(tmp_path)
    settings = make_settings(server.url, breaker_cooldown=0.2)
    clients = Clients(interface, settings)
    try:
        client = clients("CacheMiddleware", routes=ROUTES)
        client.get("/c/item")
        assert client.get("/c/item").headers["x-cache"] == "HIT"
        stop_redis_server(server)
        for _ in range(3):
            response = client.get("/c/item")
            assert response.status_code == 200
            assert response.headers["cache-status"] == (
                'rmw; fwd=bypass; detail="redis-unavailable"')
        server = start_redis_server(tmp_path, port=server.port)
        deadline = time.monotonic() + 2
        while client.get("/c/item").headers["cache-status"].startswith("rmw; fwd=bypass"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        clients.close()
        stop_redis_server(server)


def test_purge_indexes_hold_only_live_urls(make_client: Clients, settings: Settings) -> None:
    from .support.clients import raw_client

    client = cached(make_client, routes={"/c/*": {"ttl": 60, "tags": ["t"]}})
    client.get("/c/old?cc=max-age%3D1")
    time.sleep(1.1)
    client.get("/c/new")
    redis = raw_client(settings)
    registry = f"{settings.key_prefix}:cache:{{urls}}"
    tag = f"{settings.key_prefix}:cache:tag:{{t}}"
    assert redis.zcard(registry) == 1 and redis.zcard(tag) == 1  # the expired URL is gone
