"""What Flask-Limiter's and slowapi's users rely on, checked on our middleware (our own
tests of the behaviours their suites check; where we differ on purpose, the test says
so and docs/migration.md has the row)."""

from __future__ import annotations

import time

import pytest

from redis_middleware import Settings

from .support.clients import Clients, make_settings

pytestmark = pytest.mark.scenarios


def test_combined_limits_report_the_tightest(make_client: Clients) -> None:
    """``"2/second;5/minute"``: every limit counts; the headers describe the limit closest
    to refusing, and the refusal names the one that was hit."""
    client = make_client("RateLimitMiddleware", limit="2/second;5/minute")
    first = client.get("/noop")
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
        "2", "1")
    second = client.get("/noop")
    assert second.headers["x-ratelimit-remaining"] == "0"
    refused = client.get("/noop")
    assert refused.status_code == 429 and refused.headers["x-ratelimit-limit"] == "2"
    assert 1 <= int(refused.headers["retry-after"]) <= 2


def test_waiting_retry_after_is_enough(make_client: Clients) -> None:
    """A client that waits what ``Retry-After`` says is served again."""
    client = make_client("RateLimitMiddleware", limit="1/second")
    assert client.get("/noop").status_code == 200
    refused = client.get("/noop")
    assert refused.status_code == 429
    time.sleep(int(refused.headers["retry-after"]))
    assert client.get("/noop").status_code == 200


def test_the_default_limit_is_one_budget_for_all_routes(make_client: Clients) -> None:
    """Our ``limit`` is Flask-Limiter's ``application_limits``: one budget shared by every
    route without a rule of its own (Flask-Limiter's ``default_limits`` count each route
    apart; give such routes a rule each to have that)."""
    client = make_client("RateLimitMiddleware", limit="2/minute")
    assert client.get("/noop").status_code == 200
    assert client.get("/get").status_code == 200
    assert client.get("/noop").status_code == 429
    separate = make_client("RateLimitMiddleware", limit="100/minute",
                           rules={"/noop": "1/minute", "/get": "1/minute"})
    assert [separate.get(p).status_code for p in ("/noop", "/get")] == [200, 200]
    assert [separate.get(p).status_code for p in ("/noop", "/get")] == [429, 429]


def test_a_key_function_chooses_the_bucket(make_client: Clients) -> None:
    """``key=callable`` (Flask-Limiter's and slowapi's ``key_func``): one bucket per value
    it returns, whatever the address; None exempts the request."""
    def tenant(request: object) -> str | None:
        value = request.header("x-tenant")  # type: ignore[attr-defined]
        return None if value == "internal" else value

    client = make_client("RateLimitMiddleware", limit="2/minute", key=tenant)
    assert [client.get("/noop", headers={"x-tenant": "a"}).status_code
            for _ in range(3)] == [200, 200, 429]
    assert client.get("/noop", headers={"x-tenant": "b"}).status_code == 200
    assert all(client.get("/noop", headers={"x-tenant": "internal"}).status_code == 200
               for _ in range(3))


def test_disabled_limits_nothing(make_client: Clients) -> None:
    client = make_client("RateLimitMiddleware", limit="1/minute", enabled=False)
    assert [client.get("/noop").status_code for _ in range(3)] == [200, 200, 200]


def test_two_apps_with_their_own_prefixes_do_not_share_counters(
        make_client: Clients, backend_url: str) -> None:
    """Flask-Limiter's ``key_prefix``: our ``key_prefix`` separates two apps on one Redis."""
    one: Settings = make_settings(backend_url)
    two: Settings = make_settings(backend_url)
    first = make_client("RateLimitMiddleware", settings=one, limit="1/minute")
    second = make_client("RateLimitMiddleware", settings=two, limit="1/minute")
    assert first.get("/noop").status_code == 200
    assert second.get("/noop").status_code == 200
    assert first.get("/noop").status_code == 429


def test_a_429_is_not_logged_per_request(make_client: Clients,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Flask-Limiter logs a WARNING for each refused request; we do not (a client that is
    refused a thousand times must not write a thousand lines): refusals show in the
    response and the usage API."""
    client = make_client("RateLimitMiddleware", limit="1/minute")
    with caplog.at_level("INFO", logger="redis_middleware"):
        statuses = [client.get("/noop").status_code for _ in range(5)]
    assert statuses == [200, 429, 429, 429, 429]
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
