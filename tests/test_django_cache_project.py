"""Django's own caching on the cache backend, through the example project: ``cache_page``,
``{% cache %}`` fragments, ``get_or_set`` in sync and async views, and Django's ``cache``
and ``cached_db`` session engines; and what the backend does while Redis is down (the
values each call gives, one WARNING, no traceback, recovery)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.sansio import incidents

from .support.audit import audit_keyspace
from .support.clients import raw_client
from .support.django_project import configured, django_project
from .support.servers import RedisServer, start_redis_server, stop_redis_server

__all__ = ["configured", "django_project"]  # the fixtures this module uses

BACKEND = "redis_middleware.django.cache.RedisCache"


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})


@pytest.fixture
def project(configured: Settings) -> Iterator[Settings]:
    """The example project with ``CACHES`` on our backend and the test views."""
    from django.core.cache import cache
    from django.test import override_settings

    from .support import django_urls

    django_urls.renders.clear()
    with override_settings(ROOT_URLCONF="tests.support.django_urls", CACHES={
            "default": {"BACKEND": BACKEND, "LOCATION": configured.redis_url}}):
        yield configured
        cache.clear()
    audit_keyspace(configured)


def client() -> Any:
    from django.test import Client

    return Client(REMOTE_ADDR="10.9.8.7")


def data_keys(settings: Settings) -> list[str]:
    raw = raw_client(settings)
    try:
        return sorted(k.decode() for k in raw.scan_iter(
            match=f"{settings.key_prefix}:data:django:*"))
    finally:
        raw.close()


def test_cache_page_serves_the_stored_response_with_its_cookies(project: Settings) -> None:
    from .support.django_urls import renders

    first, second = client().get("/cached-page"), client().get("/cached-page")
    assert first.content == second.content == b"page #1" and renders == ["page"]
    assert second.cookies["theme"].value == "dark"  # the stored response's cookie
    assert "max-age=60" in second.headers["Cache-Control"]
    keys = data_keys(project)
    assert any("views.decorators.cache.cache_page" in k for k in keys), keys


def test_template_fragments_are_cached_per_argument(project: Settings) -> None:
    from .support.django_urls import renders

    first = client().get("/fragment?name=ada").content.decode()
    again = client().get("/fragment?name=ada").content.decode()
    other = client().get("/fragment?name=bob").content.decode()
    assert "hello ada #1" in first and "hello ada #1" in again  # the fragment, reused
    assert "hello bob #3" in other and renders == ["fragment"] * 3
    assert first.endswith("1") and other.endswith("1")  # {% cache None %}: kept "forever"
    raw = raw_client(project)
    try:
        ttls = [raw.pttl(k) for k in data_keys(project) if "template.cache.forever" in k]
    finally:
        raw.close()
    assert ttls and all(t > (project.data_max_ttl - 60) * 1000 for t in ttls)


def test_get_or_set_in_a_view_computes_once(project: Settings) -> None:
    from .support.django_urls import renders

    assert client().get("/report").content == b"report #1"
    assert client().get("/report").content == b"report #1"
    assert renders == ["query"]


async def test_aget_or_set_in_an_async_view_computes_once(project: Settings) -> None:
    from django.test import AsyncClient

    from .support.django_urls import renders

    try:
        c = AsyncClient(REMOTE_ADDR="10.9.8.7")
        first = await c.get("/async-report")
        second = await c.get("/async-report")
        assert first.content == second.content == b"async report #1"
        assert renders == ["async query"]
    finally:
        await connections_for(project).aclose()


@pytest.mark.parametrize("engine", ["django.contrib.sessions.backends.cache",
                                    "django.contrib.sessions.backends.cached_db"])
def test_django_s_cache_session_engines_run_on_it(project: Settings, engine: str) -> None:
    """Log in, see the profile, log out: the session lives in the backend's namespace,
    with a TTL, and is gone after the logout."""
    from django.test import override_settings

    from examples.django_app.accounts import DEMO_USERS

    with override_settings(SESSION_ENGINE=engine):
        c = client()
        c.post("/login", {"username": "alice", "password": DEMO_USERS["alice"]})
        page = c.get("/profile").content.decode()
        assert "alice" in page and "Signed in as alice." in page
        session_keys = [k for k in data_keys(project) if "sessions" in k]
        assert len(session_keys) == 1
        c.post("/logout")
        assert [k for k in data_keys(project) if "sessions" in k] == []
        assert "Log in" in c.get("/").content.decode()


# -- Redis down --------------------------------------------------------------------------------
@pytest.fixture
def down(tmp_path: Path) -> Iterator[tuple[Any, RedisServer]]:
    """A backend on a server of its own, which the test stops and starts."""
    from django.core.cache import caches
    from django.test import override_settings

    server = start_redis_server(tmp_path / "first")
    try:
        with override_settings(CACHES={"default": {
                "BACKEND": BACKEND, "LOCATION": server.url,
                "OPTIONS": {"breaker_cooldown": 0.2}}}):
            yield caches["default"], server
    finally:
        if server.proc.poll() is None:
            stop_redis_server(server)


@pytest.mark.real_redis
def test_redis_down_gives_each_call_s_miss_value_and_one_warning(
        down: tuple[Any, RedisServer], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, server = down
    cache.set("k", "v")
    assert cache.get("k") == "v"
    stop_redis_server(server)
    loads: list[int] = []
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert cache.get("k", "default") == "default"
        assert cache.add("k", 1) is False
        assert cache.set("k", 1) is None
        assert cache.get_many(["k", "j"]) == {}
        assert cache.set_many({"a": 1, "b": 2}) == ["a", "b"]  # the keys not stored
        assert cache.has_key("k") is False and cache.delete("k") is False
        assert cache.touch("k") is False and cache.delete_many(["a"]) is None
        assert cache.clear() is None
        with pytest.raises(ValueError, match="not found"):
            cache.incr("k")
        with pytest.raises(ValueError, match="not found"):
            cache.incr_version("k")
        assert cache.get_or_set("k", lambda: loads.append(1) or "loaded") == "loaded"
        assert cache.get_or_set("k", "plain") == "plain"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert loads == [1]
    restarted = start_redis_server(tmp_path / "again", port=server.port)
    try:
        deadline = time.monotonic() + 5
        while cache.add("back", 1) is False:
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.05)
        assert cache.get("back") == 1
    finally:
        connections_for(Settings(redis_url=server.url, breaker_cooldown=0.2,
                                 secret_key=("x" * 40,))).close()
        stop_redis_server(restarted)


@pytest.mark.real_redis
async def test_redis_down_async(down: tuple[Any, RedisServer],
                                caplog: pytest.LogCaptureFixture) -> None:
    cache, server = down
    await cache.aset("k", "v")
    stop_redis_server(server)
    try:
        with caplog.at_level(logging.WARNING, logger="redis_middleware"):
            assert await cache.aget("k", "default") == "default"
            assert await cache.aadd("k", 1) is False and await cache.aset("k", 1) is None
            assert await cache.aget_many(["k"]) == {}
            assert await cache.aset_many({"a": 1}) == ["a"]
            assert await cache.ahas_key("k") is False and await cache.adelete("k") is False
            assert await cache.atouch("k") is False and await cache.aclear() is None
            with pytest.raises(ValueError, match="not found"):
                await cache.aincr("k")

            async def load() -> str:
                return "loaded"

            assert await cache.aget_or_set("k", load) == "loaded"
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and all(r.exc_info is None for r in caplog.records)
    finally:
        await connections_for(Settings(redis_url=server.url, breaker_cooldown=0.2,
                                       secret_key=("x" * 40,))).aclose()


@pytest.mark.real_redis
def test_a_cached_page_is_answered_while_redis_is_down(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from django.test import override_settings

    server = start_redis_server(tmp_path)
    try:
        with override_settings(ROOT_URLCONF="tests.support.django_urls", CACHES={"default": {
                "BACKEND": BACKEND, "LOCATION": server.url,
                "OPTIONS": {"breaker_cooldown": 5}}}):
            assert client().get("/report").status_code == 200
            stop_redis_server(server)
            with caplog.at_level(logging.WARNING, logger="redis_middleware"):
                for _ in range(3):
                    assert client().get("/cached-page").status_code == 200
                    assert client().get("/report").status_code == 200
            assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1
    finally:
        connections_for(Settings(redis_url=server.url, breaker_cooldown=5,
                                 secret_key=("x" * 40,))).close()
        if server.proc.poll() is None:
            stop_redis_server(server)
