"""The Django cache backend's async methods: all sixteen of Django's ``BaseCache`` are
its own, run on the asyncio client without a thread, and behave as the sync ones
(Django ships no async twin of its cache tests: these are ours). On memory://, a real
redis-server and a Redis Cluster."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support.audit import audit_keyspace
from .support.clients import raw_client
from .support.django_project import configured, django_project

__all__ = ["configured", "django_project"]  # the fixtures this module uses

pytestmark = pytest.mark.scenarios

BACKEND = "redis_middleware.django.cache.RedisCache"
ASYNC_METHODS = ("aadd", "aget", "aset", "atouch", "adelete", "aget_many", "aget_or_set",
                 "ahas_key", "aincr", "adecr", "aset_many", "adelete_many", "aclear",
                 "aincr_version", "adecr_version", "aclose")


@pytest.fixture
async def caches(configured: Settings) -> AsyncIterator[Any]:
    from django.core.cache import caches as handler
    from django.test import override_settings

    with override_settings(CACHES={
            "default": {"BACKEND": BACKEND, "LOCATION": configured.redis_url},
            "v2": {"BACKEND": BACKEND, "LOCATION": configured.redis_url, "VERSION": 2}}):
        try:
            yield handler
            await handler["default"].aclear()
        finally:
            await connections_for(configured).aclose()
    audit_keyspace(configured)


@pytest.fixture
def cache(caches: Any) -> Any:
    return caches["default"]


@pytest.fixture
def raw(configured: Settings) -> Iterator[Any]:
    client = raw_client(configured)
    yield client
    client.close()


def test_every_async_method_is_the_backend_s_own() -> None:
    """Django's BaseCache has sixteen async methods that wrap the sync ones in a thread
    (and loop over keys in aget_many): the backend replaces each one."""
    from django.core.cache.backends.base import BaseCache

    from redis_middleware.django.cache import RedisCache

    assert {m for m in dir(BaseCache) if m.startswith("a") and inspect.iscoroutinefunction(
        getattr(BaseCache, m))} == set(ASYNC_METHODS)
    for name in ASYNC_METHODS:
        method = getattr(RedisCache, name)
        assert inspect.iscoroutinefunction(method), name
        assert method is not getattr(BaseCache, name), name


async def test_the_async_methods_take_no_thread(cache: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Run on the asyncio client: with every way to a worker thread broken, each method
    still works (a sync loader of aget_or_set excepted: it runs in Django's thread)."""
    from asgiref.sync import SyncToAsync

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker thread was used")

    monkeypatch.setattr(SyncToAsync, "__call__", no_thread)
    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    monkeypatch.setattr(asyncio.get_running_loop(), "run_in_executor", no_thread)
    await cache.aset("k", "v")
    assert await cache.aget("k") == "v"
    assert await cache.aadd("j", 1) is True and await cache.aincr("j") == 2
    assert await cache.adecr("j") == 1 and await cache.ahas_key("j")
    assert await cache.atouch("j", 60) is True
    assert await cache.aset_many({"a": 1, "b": 2}) == []
    assert await cache.aget_many(["a", "b", "z"]) == {"a": 1, "b": 2}
    assert await cache.adelete_many(["a", "b"]) is None
    assert await cache.adelete("k") is True
    assert await cache.aincr_version("j") == 2 and await cache.adecr_version("j", version=2) == 1

    async def load() -> str:
        return "loaded"

    assert await cache.aget_or_set("g", load) == "loaded"
    assert await cache.aget_or_set("h", "plain") == "plain"
    await cache.aclear()
    await cache.aclose()
    assert await cache.aget("j") is None


async def test_aget_aset_and_defaults(cache: Any) -> None:
    assert await cache.aget("missing") is None
    assert await cache.aget("missing", "bang!") == "bang!"
    await cache.aset("nothing", None)
    assert await cache.aget("nothing", "default") is None
    assert await cache.ahas_key("nothing")
    await cache.aset("t", (1, 2))
    assert await cache.aget("t") == (1, 2)


async def test_aadd_and_adelete(cache: Any) -> None:
    assert await cache.aadd("k", "first") is True
    assert await cache.aadd("k", "second") is False
    assert await cache.aget("k") == "first"
    assert await cache.adelete("k") is True and await cache.adelete("k") is False
    assert await cache.aadd("z", 1, timeout=0) is True and not await cache.ahas_key("z")


async def test_timeouts_async(cache: Any, raw: Any, configured: Settings) -> None:
    await cache.aset("k", "old")
    await cache.aset("k", "new", timeout=0)
    assert await cache.aget("k") is None
    await cache.aset("short", 1, timeout=0.3)
    await cache.aset("long", 1, timeout=None)
    key = f"{configured.key_prefix}:data:django:{{:1:long}}"
    assert raw.pttl(key) > (configured.data_max_ttl - 60) * 1000
    deadline = time.monotonic() + 3
    while await cache.ahas_key("short"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert await cache.atouch("long", 0) is True and not await cache.ahas_key("long")
    assert await cache.atouch("missing") is False
    await cache.aset_many({"a": 1}, timeout=-1)
    assert await cache.aget_many(["a"]) == {}


async def test_aincr_and_adecr(cache: Any) -> None:
    await cache.aset("n", 1)
    assert await cache.aincr("n") == 2 and await cache.aincr("n", -5) == -3
    assert await cache.adecr("n", 2) == -5
    with pytest.raises(ValueError, match="not found"):
        await cache.aincr("missing")
    await cache.aset("none", None)
    with pytest.raises(TypeError):
        await cache.aincr("none")
    await cache.aset("big", 2**63 - 1)
    assert await cache.aincr("big") == 2**63
    await asyncio.gather(*(cache.aincr("n") for _ in range(20)))
    assert await cache.aget("n") == 15


async def test_aget_many_aset_many_adelete_many(cache: Any) -> None:
    assert await cache.aset_many({"a": "a", "b": "b", "c": "c"}) == []
    assert await cache.aget_many(["a", "c", "x"]) == {"a": "a", "c": "c"}
    assert await cache.aget_many(iter(["b"])) == {"b": "b"}
    assert await cache.adelete_many(["a", "b"]) is None
    assert await cache.adelete_many([]) is None
    assert await cache.aget_many(["a", "b", "c"]) == {"c": "c"}
    assert await cache.aset_many({}) == []


async def test_async_key_warnings_name_the_made_key(cache: Any) -> None:
    from django.core.cache.backends.base import CacheKeyWarning

    spaced = "key with spaces"
    expected = ("Cache key contains characters that will cause errors if used with "
                "memcached: ':1:key with spaces'")
    for call in (lambda: cache.aget(spaced), lambda: cache.aset(spaced, 1),
                 lambda: cache.aadd(spaced, 1), lambda: cache.atouch(spaced),
                 lambda: cache.ahas_key(spaced), lambda: cache.aget_many([spaced]),
                 lambda: cache.aset_many({spaced: 1}), lambda: cache.adelete_many([spaced]),
                 lambda: cache.adelete(spaced)):
        with pytest.warns(CacheKeyWarning) as caught:
            await call()
        assert str(caught[0].message) == expected


async def test_aget_or_set_awaits_an_async_default_and_stores_its_value(cache: Any) -> None:
    """Django's own aget_or_set would store the coroutine; ours awaits it."""
    calls: list[int] = []

    async def load() -> dict[str, int]:
        calls.append(1)
        await asyncio.sleep(0)
        return {"n": 1}

    assert await cache.aget_or_set("k", load) == {"n": 1}
    assert await cache.aget_or_set("k", load) == {"n": 1}
    assert cache.get("k") == {"n": 1} and calls == [1]
    assert await cache.aget_or_set("sync", lambda: "from a thread") == "from a thread"
    assert await cache.aget_or_set("null", None) is None
    assert await cache.aget("null", "default") is None
    assert await cache.aget_or_set("brian", 1979, version=2) == 1979
    assert await cache.aget_or_set("zero", lambda: "v", timeout=0) == "v"
    assert not await cache.ahas_key("zero")


async def test_aget_or_set_runs_the_loader_once_for_twenty_tasks(cache: Any) -> None:
    calls: list[int] = []

    async def load() -> str:
        calls.append(1)
        await asyncio.sleep(0.1)
        return "computed"

    results = await asyncio.gather(*(cache.aget_or_set("hot", load, 60) for _ in range(20)))
    assert results == ["computed"] * 20 and calls == [1]


async def test_a_sync_default_runs_in_django_s_thread_for_the_orm(cache: Any) -> None:
    """A sync loader may use the ORM: it runs through sync_to_async, not on the loop."""
    from django.contrib.auth import get_user_model

    def load() -> str:
        return str(get_user_model().objects.get(username="alice").username)

    assert await cache.aget_or_set("name", load) == "alice"


async def test_lazy_querysets_are_stored_from_django_s_thread(cache: Any) -> None:
    """Pickling a lazy QuerySet runs its query, which Django refuses on the event loop:
    each writing method stores it from Django's thread instead, as Django's backends do."""
    from django.contrib.auth import get_user_model

    def alice() -> Any:
        return get_user_model().objects.filter(username="alice").defer("email")

    def names(value: Any) -> list[str]:
        return [user.username for user in value]

    await cache.aset("set", alice())
    assert names(await cache.aget("set")) == ["alice"]
    assert await cache.aadd("add", alice()) is True
    assert await cache.aadd("add", alice()) is False
    assert names(await cache.aget("add")) == ["alice"]
    assert await cache.aset_many({"m1": alice(), "m2": 2}) == []
    assert {k: names(v) if k == "m1" else v
            for k, v in (await cache.aget_many(["m1", "m2"])).items()} == {
                "m1": ["alice"], "m2": 2}
    assert names(await cache.aget_or_set("gos", alice())) == ["alice"]
    assert names(await cache.aget_or_set("gos-callable", alice)) == ["alice"]
    assert names(await cache.aget("gos-callable")) == ["alice"]
    shared = await asyncio.gather(*(cache.aget_or_set("gos-shared", alice) for _ in range(5)))
    assert [names(v) for v in shared] == [["alice"]] * 5  # tasks that joined the load too
    assert await cache.aincr_version("set") == 2
    assert names(await cache.aget("set", version=2)) == ["alice"]

    from django.core.exceptions import SynchronousOnlyOperation

    async def failing() -> Any:
        raise SynchronousOnlyOperation()

    with pytest.raises(SynchronousOnlyOperation):  # the default's own error is its caller's
        await cache.aget_or_set("fails", failing)
    assert await cache.aget("fails") is None


async def test_aincr_version_keeps_the_ttl(caches: Any, raw: Any, configured: Settings) -> None:
    cache = caches["default"]
    await cache.aset("answer", 42, timeout=60)
    assert await cache.aincr_version("answer") == 2
    assert await cache.aget("answer") is None and await caches["v2"].aget("answer") == 42
    key = f"{configured.key_prefix}:data:django:{{:2:answer}}"
    assert 50_000 < raw.pttl(key) <= 60_000
    assert await cache.adecr_version("answer", version=2) == 1
    with pytest.raises(ValueError, match="not found"):
        await cache.aincr_version("missing")


async def test_one_instance_per_task_one_store(caches: Any) -> None:
    """Django makes a backend per asyncio task (for an alias the task meets first):
    they share one store."""

    async def mine() -> Any:
        return caches["v2"]

    first, second = await asyncio.gather(mine(), mine())
    assert first is not second
    await first.aset("k", "v")
    assert await second.aget("k") == "v"


async def test_alock_excludes_other_holders(cache: Any) -> None:
    async with cache.alock("rebuild", timeout=10):
        assert await cache.alock("rebuild", blocking=False).acquire() is False
        assert await cache.alock("rebuild", blocking_timeout=0.1).acquire() is False
    again = cache.alock("rebuild")
    assert await again.acquire() is True and await again.release() is True


async def test_aclear_and_aclose(cache: Any) -> None:
    await cache.aset_many({"a": 1, "b": 2})
    assert await cache.aclear() is None
    assert await cache.aget_many(["a", "b"]) == {}
    assert await cache.aclose() is None
