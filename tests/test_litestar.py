"""Litestar: both ways of installing the middleware, Litestar's ``request.session`` on our
sessions, per-user limits, the cache and presence; in process and under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from . import litestar_app
from .conftest import audit_keyspace


@pytest.fixture(params=["wrapped", "defined"])
def client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Any]:
    from starlette.testclient import TestClient

    app = getattr(litestar_app, request.param)(settings)
    with TestClient(app, client=("10.8.0.1", 1)) as test_client:
        test_client.install = request.param  # type: ignore[attr-defined]
        yield test_client
        test_client.portal.call(connections_for(settings).aclose)


def test_request_session_is_ours(client: Any, settings: Settings) -> None:
    assert client.post("/login", json={"user": "lena"}).json() == {"user": "lena"}
    assert client.get("/me").json() == {"user": "lena", "visits": 1}
    assert client.get("/me").json() == {"user": "lena", "visits": 2}
    keys = audit_keyspace(settings)
    assert any(":session:" in k for k in keys)


def test_a_per_user_limit_sees_the_litestar_login(client: Any, settings: Settings) -> None:
    client.post("/login", json={"user": "milo"})
    assert [client.get("/me").status_code for _ in range(4)] == [200, 200, 200, 429]
    client.cookies.clear()
    client.post("/login", json={"user": "nina"})
    assert client.get("/me").status_code == 200  # another user, same address


def test_the_cache_and_presence(client: Any, settings: Settings) -> None:
    first, second = client.get("/items"), client.get("/items")
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert first.json() == second.json()
    client.post("/login", json={"user": "olga"})
    client.get("/me")
    presence = litestar_app.presence_of(settings)
    assert client.portal.call(presence.is_online, "olga")


def test_unknown_routes(client: Any) -> None:
    """Wrapped, a 404 flood is rate limited like any request; as Litestar app-level
    middleware it never reaches us (Litestar answers unknown routes itself)."""
    statuses = [client.get("/nowhere").status_code for _ in range(3)]
    assert statuses == [404] * 3
    limited = "x-ratelimit-limit" in client.get("/nowhere").headers
    assert limited is (client.install == "wrapped")


@pytest.mark.real_redis
def test_under_uvicorn(tmp_path: Any, redis_server: Any) -> None:
    import httpx

    from .conftest import SECRET, make_settings
    from .test_examples import Served

    settings = make_settings(redis_server.url)
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}
    with Served(["uvicorn", "--port", "{port}", "tests.litestar_app:app"], env,
                tmp_path / "uvicorn.log") as srv, httpx.Client(base_url=srv.base) as http:
        http.post("/login", json={"user": "pia"})
        assert http.get("/me").json() == {"user": "pia", "visits": 1}
        assert [http.get("/me").status_code for _ in range(3)] == [200, 200, 429]
        assert http.get("/items").headers["x-cache"] == "MISS"
        assert http.get("/items").headers["x-cache"] == "HIT"
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()
