"""Hostile input, fuzzed through the whole stack: never a 500 from us, never a key
outside the prefix or without a TTL, never a rate-limit key per garbage value, never a
cached response served across Vary values, hosts or sessions."""

from __future__ import annotations

import logging
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from redis_middleware import Settings

from .support import apps
from .support.audit import audit_keyspace
from .support.clients import Clients, make_settings, raw_client

OPTIONS: dict[str, Any] = {"limit": "100000/minute", "routes": {"/c/*": 60},
                           "key": "user_or_ip", "trusted_proxies": "127.0.0.0/8"}
latin1 = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300)
header_names = st.sampled_from(["cookie", "x-forwarded-for", "forwarded", "host", "vary",
                                "accept-language", "cache-control", "if-none-match",
                                "authorization", "x-anything"])
path_chars = st.text(alphabet=string.ascii_letters + string.digits + "/.%-_~:@!$&'()*+,;=é{}",
                     max_size=200)
FUZZ = hsettings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@pytest.fixture(params=["asgi", "wsgi"])
def stack_client(request: pytest.FixtureRequest, backend_url: str) -> Any:
    settings = make_settings(backend_url)
    clients = Clients(request.param, settings)
    client = clients("RedisMiddleware", **OPTIONS)
    yield client, settings
    clients.close()
    keys = audit_keyspace(settings)  # every key: prefix, component, TTL
    ratelimit = [k for k in keys if ":ratelimit:" in k]
    assert len(ratelimit) <= 3, ratelimit  # 127.0.0.1, unknown, and nothing per garbage


def _no_foreign_keys(settings: Settings) -> None:
    client = raw_client(settings)
    try:
        for key in client.scan_iter(match="*"):
            text = key.decode("latin-1")
            assert text.startswith(("t-", "rmw:", "bench:", "LIMITS", "fastapi-cache")), text
    finally:
        client.close()


@FUZZ
@given(headers=st.lists(st.tuples(header_names, latin1), max_size=6), path=path_chars,
       query=latin1)
def test_fuzzed_requests_never_500(stack_client: Any, headers: list[tuple[str, str]],
                                   path: str, query: str) -> None:
    client, _ = stack_client
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers]
    encoded_query = quote(query.encode("latin-1"), safe="=&%+")  # any bytes, as a client may
    for target in ("/c/" + path.lstrip("/"), "/" + path.lstrip("/"), "/get"):
        url = quote(target.encode("utf-8"), safe="/%:@!$&'()*+,;=~-._") + "?" + encoded_query
        response = client.get(url, headers=raw)
        assert response.status_code < 500 or response.status_code == 503, (target, headers)


@FUZZ
@given(cookies=st.lists(latin1, min_size=1, max_size=5))
def test_forged_duplicated_and_huge_cookies(stack_client: Any, cookies: list[str]) -> None:
    client, _ = stack_client
    header = "; ".join(f"session={c.replace(';', '')}" for c in cookies) + "; " + (
        "x" * 8000)
    response = client.get("/get", headers={"cookie": header.encode("latin-1")})
    assert response.status_code == 200 and response.json() == {}
    assert "set-cookie" not in response.headers


def test_cached_responses_never_cross_vary_host_or_session(stack_client: Any) -> None:
    client, _ = stack_client
    apps.calls.clear()
    en = client.get("/c/v?vary=Accept-Language", headers={"accept-language": "en"}).json()
    fr = client.get("/c/v?vary=Accept-Language", headers={"accept-language": "fr"}).json()
    assert en != fr
    other_host = client.get("/c/v?vary=Accept-Language", headers={
        "accept-language": "en", "host": "evil.example"})
    assert other_host.headers["x-cache"] == "MISS"
    client.post("/login?user=victim")
    private = client.get("/c/p?touch=1")
    assert private.headers["cache-status"].endswith('detail="session"')
    client.cookies.clear()
    assert client.get("/c/p?touch=1").headers["x-cache"] == "MISS"


@pytest.mark.parametrize("path", [
    "/c/" + "a" * 8000, "/c/%2e%2e/%2e%2e/etc/passwd", "/c/../../x", "/c/%00%ff", "/c/é/ü",
    "/%7Bx%7D/c", "/c/x?" + "&".join(f"k{i}=v" for i in range(500)),
])
def test_odd_paths(stack_client: Any, path: str) -> None:
    client, settings = stack_client
    response = client.get(path)
    assert response.status_code in (200, 404)
    _no_foreign_keys(settings)


@pytest.mark.parametrize("extra", [
    {"QUERY_STRING": "q=\u20ac"}, {"HTTP_HOST": "\u20ac.test"}, {"HTTP_HOST": "\udcff"},
    {"QUERY_STRING": "q=\udcff", "HTTP_HOST": "\u4e2d.test"},
], ids=["query", "host", "surrogate-host", "both"])
def test_a_wsgi_server_breaking_latin_1_gets_an_answer(backend_url: str,
                                                       extra: dict[str, str]) -> None:
    """PEP 3333 says environ strings are latin-1; a server that puts other characters in
    the query or the Host (a client's bytes decoded as UTF-8) still gets a response, and
    the cache keeps such variants apart from the plain one."""
    from redis_middleware.wsgi import RedisMiddleware

    from .support.wsgi_direct import call

    settings = make_settings(backend_url)
    app = RedisMiddleware(apps.wsgi_app, settings, **OPTIONS)
    plain = call(app, "/c/odd", HTTP_HOST="plain.test")
    assert plain.read() and plain.status.startswith("200")
    first = call(app, "/c/odd", **extra)
    assert first.read() and first.status.startswith("200")
    assert first.headers.get("X-Cache") == "MISS"
    again = call(app, "/c/odd", **extra)
    assert again.read() and again.headers.get("X-Cache") == "HIT"
    app.redis.close()
    audit_keyspace(settings)


def test_long_paths_and_header_names_are_not_kept_in_memory(
        stack_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The request path remembers what it worked out for paths, hosts and header names
    (bounded memos): a client sending long ones, each new, cannot make the process keep
    more than each memo's character budget. 600 requests with a 4,000-character path and
    three 4,000-character header names kept 2.6 MB on ASGI and 17 MB on WSGI when the
    memos were bounded by entries and by the size of one entry only; 5,000-character
    ones, larger than an entry may be, are never kept."""
    import gc
    import random
    import tracemalloc
    import urllib.parse

    client, _ = stack_client
    rng = random.Random(7)
    # What the process keeps, not what the test's log capture keeps: the test client
    # logs each request (its URL) at INFO, recorded here whenever logging is that verbose.
    caplog.set_level(logging.WARNING)

    def send(n: int, size: int) -> None:
        for _ in range(n):
            words = ["".join(rng.choices(string.ascii_lowercase, k=size)) for _ in range(4)]
            response = client.get(f"/x/{words[0]}", headers=[(f"x-{w}", "1")
                                                             for w in words[1:]])
            assert response.status_code == 404

    send(20, 4000)  # the first requests' own allocations (clients, scripts, connections)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        send(400, 4000)
        send(30, 5000)
        urllib.parse.clear_cache()  # the test client's URLs (urlsplit's own cache)
        apps.calls.clear()  # the test app's count of calls per path
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_500_000, f"{grown:,} bytes kept after 430 long requests"
