"""DataCache scenarios on memory://, a real redis-server and a Redis Cluster: the decorator
on functions and methods, key templates, JSON, tags, the plain methods, serializers,
hostile arguments and metrics. Concurrency, locks, stale values and outages:
``test_datacache_concurrency.py``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from redis_middleware import DataCache, Settings
from redis_middleware.keys import KeySpace
from redis_middleware.sansio import incidents, metrics
from redis_middleware.sansio.cache.data import hash_slot_tag

from .support.audit import audit_keyspace
from .support.clients import make_settings, raw_client

pytestmark = [pytest.mark.usefixtures("data_audit"), pytest.mark.scenarios]


def audit_data_keys(settings: Settings) -> list[str]:
    """The suite's keyspace audit (the prefix, a component, a TTL on every key), and
    every key a data-cache key; return those still there."""
    keys = audit_keyspace(settings)
    for key in keys:
        assert key.startswith(f"{settings.key_prefix}:data:"), key
    client = raw_client(settings)
    try:
        return [key for key in keys if client.exists(key)]  # not expired since the scan
    finally:
        client.close()


@pytest.fixture
def data_audit(settings: Settings) -> Iterator[None]:
    yield
    audit_data_keys(settings)


@pytest.fixture
def cache(settings: Settings) -> DataCache:
    return DataCache(settings)


@pytest.fixture
async def acache(settings: Settings) -> AsyncIterator[DataCache]:
    cache = DataCache(settings)
    yield cache
    await cache.aclose()
    await cache.redis.aclose()


@pytest.fixture
def raw(settings: Settings) -> Iterator[Any]:
    client = raw_client(settings)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})


def data_key(settings: Settings, name: str) -> str:
    return KeySpace(settings.key_prefix).data(name)


# -- the decorator -----------------------------------------------------------------------------
def test_a_sync_function_is_computed_once_then_served(cache: DataCache, raw: Any,
                                                      settings: Settings) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="user:{user_id}:profile")
    def load_profile(user_id: int) -> dict[str, Any]:
        """Load a profile."""
        calls.append(user_id)
        return {"id": user_id, "name": "Ada"}

    assert load_profile(42) == load_profile(42) == {"id": 42, "name": "Ada"}
    assert load_profile(user_id=42) == {"id": 42, "name": "Ada"}
    assert calls == [42]
    assert load_profile(7)["id"] == 7 and calls == [42, 7]
    key = data_key(settings, "user:42:profile")
    assert 59_000 < raw.pttl(key) <= 60_000
    assert cache.get("user:42:profile") == {"id": 42, "name": "Ada"}
    assert load_profile.__name__ == "load_profile" and load_profile.__doc__ == "Load a profile."
    assert inspect.signature(load_profile) == inspect.signature(load_profile.__wrapped__)
    assert list(inspect.signature(load_profile).parameters) == ["user_id"]
    assert load_profile.key_for(42) == "user:42:profile"


async def test_an_async_function_is_computed_once_then_served(acache: DataCache) -> None:
    calls: list[int] = []

    @acache.cached(ttl=60, key="item:{item_id}")
    async def load_item(item_id: int) -> list[int]:
        calls.append(item_id)
        await asyncio.sleep(0)
        return [item_id, item_id * 2]

    assert await load_item(3) == await load_item(3) == [3, 6]
    assert calls == [3]
    assert await acache.aget("item:3") == [3, 6]
    assert asyncio.iscoroutinefunction(load_item)
    assert await load_item.invalidate(3) is True
    assert await load_item(3) == [3, 6] and calls == [3, 3]


def test_invalidate_is_sync_for_a_sync_function(cache: DataCache) -> None:
    calls: list[str] = []

    @cache.cached(ttl=60)
    def load(name: str, lang: str = "en") -> str:
        calls.append(name)
        return name.upper()

    assert load("a") == "A"
    assert load.invalidate("a") is True  # defaults applied, as in the call
    assert load.invalidate(name="a", lang="en") is False
    assert load("a") == "A" and calls == ["a", "a"]


def test_templates_apply_defaults_and_keyword_only_arguments(cache: DataCache) -> None:
    calls: list[tuple[int, int, str]] = []

    @cache.cached(ttl=60, key="report:{year}:{month:02d}:{fmt}")
    def report(year: int, month: int = 1, *, fmt: str = "csv") -> str:
        calls.append((year, month, fmt))
        return f"{year}-{month}-{fmt}"

    assert report(2024) == report(2024, 1) == report(2024, month=1, fmt="csv") == "2024-1-csv"
    assert report(2024, fmt="pdf") == "2024-1-pdf"
    assert calls == [(2024, 1, "csv"), (2024, 1, "pdf")]
    assert report.key_for(2024, 3, fmt="pdf") == "report:2024:03:pdf"
    assert cache.get("report:2024:01:pdf") == "2024-1-pdf"


def test_equal_looking_arguments_keep_their_own_keys(cache: DataCache) -> None:
    @cache.cached(ttl=60, key="k:{x}")
    def echo(x: Any) -> str:
        return type(x).__name__

    assert [echo(1), echo(True), echo(1.0), echo("1"), echo(1)] == [
        "int", "bool", "float", "int", "int"]  # "1" renders as 1 does: documented
    assert echo.key_for(True) == "k:True" and echo.key_for(1) == "k:1"

    @cache.cached
    def bare(x: int) -> int:
        return x * 2

    assert bare(2) == bare(2) == 4 and bare.key_for(2).endswith("bare:x=2")


def test_template_errors_fail_at_decoration(cache: DataCache) -> None:
    with pytest.raises(ValueError, match="not a parameter"):
        @cache.cached(ttl=60, key="user:{uid}")
        def load(user_id: int) -> None: ...
    with pytest.raises(ValueError, match="TTL"):
        @cache.cached(ttl=0)
        def zero() -> None: ...
    with pytest.raises(TypeError, match="generators"):
        @cache.cached(ttl=60)
        def gen() -> Iterator[int]:
            yield 1


def test_methods_and_the_instance_in_the_key(cache: DataCache) -> None:
    class Catalog:
        def __init__(self, region: str) -> None:
            self.region = region
            self.calls = 0

        def __cache_key__(self) -> str:
            return self.region

        @cache.cached(ttl=60)
        def products(self, page: int) -> list[str]:
            self.calls += 1
            return [f"{self.region}-{page}"]

        @cache.cached(ttl=60, key="price:{self.region}:{sku}")
        def price(self, sku: str) -> float:
            self.calls += 1
            return 9.5

    eu, us = Catalog("eu"), Catalog("us")
    assert eu.products(1) == ["eu-1"] and us.products(1) == ["us-1"]  # own keys per region
    assert eu.products(1) == ["eu-1"] and eu.calls == 1
    assert Catalog("eu").products(1) == ["eu-1"]  # another object, same __cache_key__
    assert eu.price("A-1") == 9.5 and eu.price("A-1") == 9.5 and eu.calls == 2
    assert cache.get("price:eu:A-1") == 9.5
    assert Catalog.price.invalidate(eu, "A-1") is True


async def test_async_methods_without_a_cache_key_leave_self_out(acache: DataCache) -> None:
    class Service:
        calls = 0

        @acache.cached(ttl=60)
        async def lookup(self, code: str) -> str:
            type(self).calls += 1
            return code * 2

        @classmethod
        @acache.cached(ttl=60)
        async def describe(cls, code: str) -> str:
            return f"{cls.__name__}:{code}"

    assert await Service().lookup("x") == await Service().lookup("x") == "xx"
    assert Service.calls == 1  # two instances share the entry: self is not in the key
    assert await Service.describe("y") == "Service:y"
    assert Service.lookup.key_for(Service(), "x").endswith("Service.lookup:code=x")


# -- values ------------------------------------------------------------------------------------
ROUND_TRIP = [
    "text", "", "日本語", 0, -1, 2**70, 1.0, 0.1, -0.0, 1e300, True, False, None, [], {},
    [1, "a", None, [2.5, {"k": [True]}]], {"nested": {"deep": [1, 2, {"x": None}]}, "": 0},
]


def test_json_values_round_trip_exactly(cache: DataCache) -> None:
    for i, value in enumerate(ROUND_TRIP):
        assert cache.set(f"v:{i}", value, ttl=60) is True
        got = cache.get(f"v:{i}", default="MISSING")
        assert got == value and type(got) is type(value), value
        assert repr(got) == repr(value)


def test_none_is_cached_like_any_value(cache: DataCache) -> None:
    calls = []

    @cache.cached(ttl=60)
    def nothing() -> None:
        calls.append(1)

    assert nothing() is None and nothing() is None and calls == [1]
    assert cache.get_or_set("none", lambda: None, ttl=60) is None
    assert cache.get("none", default="missing") is None


def test_values_json_cannot_keep_are_refused_at_set(cache: DataCache, raw: Any,
                                                    settings: Settings) -> None:
    for value in [(1, 2), {1: "a"}, {1, 2}, b"x", object()]:
        with pytest.raises(TypeError):
            cache.set("bad", value, ttl=60)
    assert raw.exists(data_key(settings, "bad")) == 0

    @cache.cached(ttl=60)
    def returns_a_tuple() -> tuple[int, int]:
        return (1, 2)

    with pytest.raises(TypeError):
        returns_a_tuple()
    audit_data_keys(settings)  # no lease left behind


# -- tags --------------------------------------------------------------------------------------
def test_tag_invalidation(cache: DataCache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60, key="user:{user_id}:profile", tags=["user:{user_id}", "profiles"])
    def profile(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    @cache.cached(ttl=60, key="user:{user_id}:orders", tags=["user:{user_id}"])
    def orders(user_id: int) -> list[int]:
        calls.append(-user_id)
        return [user_id]

    for uid in (1, 2):
        profile(uid), orders(uid)
    assert cache.invalidate(tags=["user:1"]) == 2
    assert cache.get("user:1:profile") is None and cache.get("user:1:orders") is None
    assert cache.get("user:2:profile") == {"id": 2} and cache.get("user:2:orders") == [2]
    assert cache.invalidate(tags="profiles") == 1  # user 1's profile is gone already
    assert cache.get("user:2:orders") == [2]
    profile(2)
    assert calls == [1, -1, 2, -2, 2]
    assert cache.invalidate(tags=["nobody"]) == 0


def test_a_value_stored_again_without_its_tag_survives_the_tag(cache: DataCache) -> None:
    cache.set("k", 1, ttl=60, tags=["t"])
    cache.delete("k")
    cache.set("k", 2, ttl=60)  # untagged now
    cache.set("j", 3, ttl=60, tags=["t"])
    cache.set("j", 4, ttl=60, tags=["other"])  # tagged otherwise now
    assert cache.invalidate(tags=["t"]) == 0
    assert cache.get("k") == 2 and cache.get("j") == 4
    assert cache.invalidate(tags=["other"]) == 1 and cache.get("j") is None


def test_tags_with_hostile_text(cache: DataCache, settings: Settings) -> None:
    for tag in ["a:b", "{x}", "*", "line\nbreak", "t" * 5000]:
        cache.set("k:" + tag[:20], tag[:10], ttl=60, tags=[tag])
        assert cache.invalidate(tags=[tag]) == 1
    assert audit_data_keys(settings) == []


def test_a_tag_lives_as_long_as_its_longest_member(cache: DataCache, raw: Any,
                                                   settings: Settings) -> None:
    cache.set("short", 1, ttl=5, tags=["t"])
    cache.set("long", 1, ttl=50, tags=["t"])
    cache.set("short2", 1, ttl=5, tags=["t"])
    tag = KeySpace(settings.key_prefix).data_tag("t")
    assert 49_000 < raw.pttl(tag) <= 50_000
    assert raw.zcard(tag) == 3


def test_a_tagged_value_is_never_touched_past_its_tags(cache: DataCache, raw: Any,
                                                      settings: Settings) -> None:
    # Its tag's set is kept as long as the value was stored for: a longer life would let
    # the value outlive the set, and an invalidation of the tag would miss it.
    cache.set("k", 1, ttl=5, tags=["t"])
    assert cache.touch("k", 60) is False and (cache.ttl("k") or 0) <= 5
    assert cache.touch("k", 3) is True and 2 < (cache.ttl("k") or 0) <= 3  # shorter: fine
    cache.set("plain", 1, ttl=5)
    assert cache.touch("plain", 60) is True and (cache.ttl("plain") or 0) > 59
    tag = KeySpace(settings.key_prefix).data_tag("t")
    assert raw.pttl(tag) >= raw.pttl(data_key(settings, "k"))
    assert cache.invalidate(tags=["t"]) == 1 and cache.get("k") is None


async def test_async_tagged_touch(acache: DataCache) -> None:
    await acache.aset("k", 1, ttl=5, tags=["t"])
    assert await acache.atouch("k", 60) is False and (await acache.attl("k") or 0) <= 5
    assert await acache.ainvalidate(tags=["t"]) == 1


async def test_async_tags(acache: DataCache) -> None:
    @acache.cached(ttl=60, key="doc:{doc_id}", tags=["docs", "doc:{doc_id}"])
    async def doc(doc_id: str) -> str:
        return doc_id

    await doc("a"), await doc("b")
    assert await acache.ainvalidate(tags=["doc:a"]) == 1
    assert await acache.aget("doc:a") is None and await acache.aget("doc:b") == "b"
    assert await acache.ainvalidate(tags=["docs"]) == 1


# -- the plain methods -------------------------------------------------------------------------
def test_plain_methods(cache: DataCache, raw: Any, settings: Settings) -> None:
    assert cache.get("missing", default=5) == 5
    assert cache.set("a", {"x": 1}, ttl=30) is True
    assert cache.add("a", "other", ttl=30) is False and cache.get("a") == {"x": 1}
    assert cache.add("b", [1], ttl=30) is True
    assert cache.has("a") and not cache.has("zz")
    assert cache.get_many(["a", "b", "zz"]) == {"a": {"x": 1}, "b": [1]}
    assert cache.set_many({"c": 3, "d": None}, ttl=30) == []
    assert cache.get_many(["c", "d"]) == {"c": 3, "d": None}
    assert cache.touch("c", 100) is True and 99 < (cache.ttl("c") or 0) <= 100
    assert cache.touch("zz", 100) is False and cache.ttl("zz") is None
    assert cache.delete("a") is True and cache.delete("a") is False
    assert cache.delete_many(["b", "c", "zz"]) == 2
    assert cache.get_or_set("e", lambda: "loaded", ttl=30) == "loaded"
    assert cache.get_or_set("e", lambda: "again", ttl=30) == "loaded"
    for key in audit_data_keys(settings):
        assert raw.pttl(key) <= 30_000


async def test_async_plain_methods(acache: DataCache) -> None:
    assert await acache.aget("missing", default=5) == 5
    assert await acache.aset("a", [1, 2], ttl=30) is True
    assert await acache.aadd("a", 0, ttl=30) is False
    assert await acache.ahas("a") is True
    assert await acache.aset_many({"b": 2, "c": 3}, ttl=30) == []
    assert await acache.aget_many(["a", "b", "c", "z"]) == {"a": [1, 2], "b": 2, "c": 3}
    assert await acache.atouch("b", 60) is True and 59 < (await acache.attl("b") or 0) <= 60
    assert await acache.adelete("a") is True
    assert await acache.adelete_many(["b", "c"]) == 2

    async def aload() -> str:
        return "async"

    assert await acache.aget_or_set("d", aload, ttl=30) == "async"
    assert await acache.aget_or_set("e", lambda: "sync loader", ttl=30) == "sync loader"
    assert await acache.aget_or_set("e", aload, ttl=30) == "sync loader"


def test_a_miss_costs_three_round_trips_and_a_hit_one_sync_and_async(
        settings: Settings) -> None:
    """One decision for both sides: the GET, the lease, the store; then one GET."""
    cache = DataCache(settings)
    conns = cache.redis

    def trips(call: Any) -> int:
        before = conns.round_trips - conns.script_loads
        call()
        return conns.round_trips - conns.script_loads - before

    assert trips(lambda: cache.get_or_set("rt", lambda: 1, ttl=60)) == 3
    assert trips(lambda: cache.get_or_set("rt", lambda: 2, ttl=60)) == 1

    async def main() -> list[int]:
        counts = []
        for value in (1, 2):
            before = conns.round_trips - conns.script_loads
            assert await cache.aget_or_set("art", lambda v=value: v, ttl=60) == 1
            counts.append(conns.round_trips - conns.script_loads - before)
        await cache.redis.aclose()
        return counts

    assert asyncio.run(main()) == [3, 1]


async def test_tasks_reading_one_key_at_once_share_one_get(acache: DataCache) -> None:
    """A hot key read by many tasks at the same moment costs one command, through
    ``aget`` and ``aget_or_set`` alike; each caller gets a copy of its own."""
    await acache.aset("hot", {"n": [1]}, ttl=60)
    conns = acache.redis
    commands = conns.commands
    got = await asyncio.gather(*(acache.aget("hot") for _ in range(16)),
                               *(acache.aget_or_set("hot", list, ttl=60) for _ in range(4)))
    assert got == [{"n": [1]}] * 20
    assert conns.commands - commands == 1
    got[0]["n"].append(2)
    assert got[1] == {"n": [1]} and got[19] == {"n": [1]}


@pytest.mark.parametrize("option", ["stale", "early"])
async def test_hits_of_values_with_a_stale_window_or_early_refresh_share_one_get(
        acache: DataCache, option: str) -> None:
    """A hit that the flow judges (a stale window, XFetch) writes nothing: tasks reading
    the key over and over keep sharing ``GET``s (a hit taken for a write would make each
    later reader send its own)."""
    policy: dict[str, Any] = {"stale": 60} if option == "stale" else {"early": 1}
    assert await acache.aget_or_set("hot", lambda: "v", ttl=60, **policy) == "v"
    conns = acache.redis
    commands, got = conns.commands, []

    async def reader() -> None:
        for _ in range(20):
            got.append(await acache.aget_or_set("hot", list, ttl=60, **policy))

    await asyncio.gather(*(reader() for _ in range(16)))
    assert got == ["v"] * 320
    assert conns.commands - commands <= 80  # about one GET a round: 20


def late_first_get(conns: Any, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The first ``GET`` sent from now on is answered at once, but its reader resumes
    only when the returned event is set: a reply read late, as on a busy loop or a
    pooled connection. Its read stays in flight meanwhile."""
    real, gate, seen = conns.acall, asyncio.Event(), []

    async def acall(command: Any) -> Any:
        reply = await real(command)
        if command[0] == "GET":
            seen.append(command)
            if len(seen) == 1:
                await gate.wait()
        return reply

    monkeypatch.setattr(conns, "acall", acall)
    return gate


async def test_a_read_after_this_process_wrote_sends_its_own_get(
        acache: DataCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that reads a key after this process wrote it never gets the reply of a
    ``GET`` sent before the write, though that read is still in flight."""
    await acache.aset("k", "old", ttl=60)
    gate = late_first_get(acache.redis, monkeypatch)
    first = asyncio.ensure_future(acache.aget("k"))
    await asyncio.sleep(0.05)  # its GET was answered "old"; its reader waits
    assert await acache.aset("k", "new", ttl=60)
    later = asyncio.gather(acache.aget("k"), acache.aget_or_set("k", list, ttl=60))
    await asyncio.wait({later}, timeout=2)  # (had they joined it, they would wait too)
    gate.set()
    assert await first == "old"  # it started before the write
    assert await later == ["new", "new"]


@pytest.mark.parametrize("write", ["get_or_set", "cached", "refresh"])
async def test_a_read_after_this_process_stored_a_loaded_value_sends_its_own_get(
        acache: DataCache, monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    """A loader's value stored by ``get_or_set``, by ``@cached`` or by a background
    refresh is this process's write too: a task reading the key afterwards does not join
    a ``GET`` sent before it (here the sync side stores, as a view in a worker thread)."""

    @acache.cached(ttl=60, key="k")
    def load() -> str:
        return "new"

    if write == "refresh":  # "old", then past its TTL: inside its stale window
        assert acache.get_or_set("k", lambda: "old", ttl=0.2, stale=60) == "old"
        await asyncio.sleep(0.4)
    gate = late_first_get(acache.redis, monkeypatch)
    first = asyncio.ensure_future(acache.aget("k"))
    await asyncio.sleep(0.05)  # its GET was answered (nothing fresh); its reader waits
    if write == "refresh":  # the stale value, while one refresh runs in the background
        assert await asyncio.to_thread(
            acache.get_or_set, "k", lambda: "new", ttl=60, stale=60) == "old"
        for _ in range(100):
            if await asyncio.to_thread(acache.get, "k") == "new":
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the refresh's thread has returned
    else:
        store = load if write == "cached" else (
            lambda: acache.get_or_set("k", lambda: "new", ttl=60))
        assert await asyncio.to_thread(store) == "new"
    later = asyncio.ensure_future(acache.aget("k"))
    await asyncio.wait({later}, timeout=2)  # (had it joined the first, it would wait)
    gate.set()
    assert await first is None
    assert await later == "new"


def test_raw_mode_counts_with_incr(settings: Settings) -> None:
    raw_cache = DataCache(settings, namespace="counters", raw=True)
    assert raw_cache.set("hits", 10, ttl=60) is True
    assert raw_cache.incr("hits") == 11 and raw_cache.decr("hits", 5) == 6
    assert raw_cache.get("hits") == 6
    with pytest.raises(ValueError, match="not found"):
        raw_cache.incr("nothing")
    raw_cache.set("text", "abc", ttl=60)
    with pytest.raises(TypeError):
        raw_cache.incr("text")
    assert 59 < (raw_cache.ttl("hits") or 0) <= 60  # INCRBY kept the TTL
    with pytest.raises(ValueError, match="tags"):
        raw_cache.set("x", 1, ttl=60, tags=["t"])


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_raw_mode_counts_exactly_whatever_the_serializer(settings: Settings,
                                                         serializer: str) -> None:
    """msgpack writes 48 to 57 as the bytes "0" to "9": a count must not take them for
    digits. Past 2**53, the new value must come back exact (Lua's numbers are doubles)."""
    pytest.importorskip("msgpack")
    cache = DataCache(settings, namespace="counters", serializer=serializer, raw=True)
    for start, delta in ((52, -10), (50, 1), (57, 1), (0, 48), (-1, 58), (2**53, 1),
                         (2**63 - 1, -10), (-(2**63), 10)):
        assert cache.set("n", start, ttl=60) is True
        assert cache.get("n") == start
        assert cache.incr("n", delta) == start + delta, (start, delta)
        assert cache.get("n") == start + delta
    for value in ("5", b"5", 5.0, True, [5], {"n": 5}, None):
        if serializer == "json" and type(value) is bytes:
            continue
        cache.set("v", value, ttl=60)
        assert cache.get("v") == value and type(cache.get("v")) is type(value)
        with pytest.raises(TypeError):
            cache.incr("v")
    # Integers past 64 bits are the serializer's (JSON writes them as digits too).
    for value in (10**19, 2**64 - 1) + ((-(10**19), 2**70) if serializer != "msgpack" else ()):
        cache.set("big", value, ttl=60)
        assert cache.get("big") == value


def test_raw_mode_refuses_what_it_would_read_as_an_integer(settings: Settings) -> None:
    """A serializer of the user's that says it is safe to load (so it is stored unsigned)
    and writes a str as its bare bytes: "42" cannot be told from the integer 42."""

    class Bare:
        safe_to_load = True

        def dumps(self, value: Any) -> bytes:
            return str(value).encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    cache = DataCache(settings, namespace="bare", serializer=Bare(), raw=True)
    with pytest.raises(TypeError, match="told apart"):
        cache.set("answer", "42", ttl=60)
    assert cache.set("word", "forty-two", ttl=60) is True and cache.get("word") == "forty-two"
    assert cache.set("n", 42, ttl=60) is True and cache.get("n") == 42


async def test_raw_mode_async_incr(settings: Settings) -> None:
    raw_cache = DataCache(settings, namespace="counters", raw=True)
    await raw_cache.aset("n", 1, ttl=60)
    assert await raw_cache.aincr("n", 41) == 42 and await raw_cache.adecr("n") == 41
    with pytest.raises(ValueError, match="not found"):
        await raw_cache.aincr("missing")
    await raw_cache.redis.aclose()


def test_clear_removes_its_namespace_only(settings: Settings, raw: Any) -> None:
    own, other = DataCache(settings, namespace="django"), DataCache(settings)
    for i in range(30):
        own.set(f"k{i}", i, ttl=60)
        other.set(f"k{i}", i, ttl=60, tags=["t"])
    session_key = f"{settings.key_prefix}:session:{{x}}:y"
    raw.set(session_key, "kept", ex=60)
    try:
        assert own.clear() == 30
        assert own.get_many([f"k{i}" for i in range(30)]) == {}
        assert len(other.get_many([f"k{i}" for i in range(30)])) == 30
        assert raw.get(session_key) == b"kept"
        assert other.clear() == 31  # values and the tag
    finally:
        raw.delete(session_key)


async def test_async_clear(settings: Settings) -> None:
    cache = DataCache(settings, namespace="flask")
    await cache.aset_many({f"k{i}": i for i in range(10)}, ttl=60)
    assert await cache.aclear() == 10 and await cache.aget("k1") is None
    await cache.redis.aclose()


# -- keys --------------------------------------------------------------------------------------
HOSTILE = ["a:b", "{x}", "}", "{", "*", "?[a]", "line\nbreak", "\x00", "日本", "x" * 10_000,
           " ", "%3A", "a%3Ab", "data:fill:{x}"]


def test_hostile_arguments_stay_in_the_namespace(cache: DataCache, settings: Settings) -> None:
    @cache.cached(ttl=60, key="user:{user_id}:profile", tags=["user:{user_id}"])
    def load(user_id: str) -> str:
        return user_id[:30]

    for value in HOSTILE:
        assert load(value) == value[:30]
        assert load(value) == value[:30]
        assert cache.get(load.key_for(value)) == value[:30]
    keys = audit_data_keys(settings)
    values = [k for k in keys if k.startswith(f"{settings.key_prefix}:data:{{user:")]
    assert len(values) == len(HOSTILE)  # no two arguments share a key
    assert all(len(k) < 200 for k in keys)  # the 10 KB argument is hashed
    for value in HOSTILE:
        assert cache.invalidate(tags=[f"user:{value}"]) == 1
    assert [k for k in audit_data_keys(settings) if ":data:{" in k] == []


def test_the_default_key_escapes_arguments(cache: DataCache, settings: Settings) -> None:
    @cache.cached(ttl=60)
    def find(query: str, page: int = 1) -> str:
        return f"{query}/{page}"

    assert find("a:page=1", 1) == "a:page=1/1"
    assert find("a", "1:page=1") == "a/1:page=1"  # would share the key above, unescaped
    for value in HOSTILE:
        assert find(value) == f"{value}/1"
    keys = audit_data_keys(settings)
    assert len(keys) == len(HOSTILE) + 2
    assert all(k.startswith(f"{settings.key_prefix}:data:{{{__name__}.") for k in keys)


def test_a_lease_shares_its_value_slot(cache: DataCache, settings: Settings) -> None:
    keys = KeySpace(settings.key_prefix)
    for name in ["user:{42}:profile", "a{b}c", "plain"]:
        assert hash_slot_tag(keys.data(name)) == hash_slot_tag(keys.data_fill(name))
        assert cache.get_or_set(name, lambda: 1, ttl=60) == 1  # its scripts run on a Cluster
    assert cache.get("user:{42}:profile") == 1


# -- serializers and sizes ---------------------------------------------------------------------
def test_msgpack_and_signed_pickle(settings: Settings) -> None:
    packed = DataCache(settings, serializer="msgpack")
    assert packed.get_or_set("m", lambda: {"b": b"\x00", "n": [1, 2]}, ttl=60) == {
        "b": b"\x00", "n": [1, 2]}
    assert packed.get("m") == {"b": b"\x00", "n": [1, 2]}
    pickled = DataCache(settings.replace(data_serializer="pickle"), namespace="p")
    value = {"t": (1, 2), "s": {3}, "d": 1.5}
    assert pickled.get_or_set("p", lambda: value, ttl=60) == value
    assert pickled.get("p") == value
    assert DataCache(settings).get("m") is None  # another serializer's value: a miss


def test_a_forged_pickle_is_a_miss_and_recomputed(settings: Settings, raw: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = DataCache(settings, serializer="pickle")
    cache.set("p", {"ok": True}, ttl=60)
    key = data_key(settings, "p")
    stored = raw.get(key)
    raw.set(key, stored[:15] + b"\x00" * 32 + stored[47:], px=60_000)  # a bad signature
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert cache.get("p", default="miss") == "miss"
        assert cache.get_or_set("p", lambda: {"ok": "again"}, ttl=60) == {"ok": "again"}
    assert sum("could not be read" in r.getMessage() for r in caplog.records) == 1
    assert cache.get("p") == {"ok": "again"}  # overwritten


def test_compression_above_a_threshold(settings: Settings, raw: Any) -> None:
    cache = DataCache(settings.replace(data_compress_min=1000))
    text = "compress me " * 1000
    assert cache.set("big", text, ttl=60) is True
    assert raw.strlen(data_key(settings, "big")) < 500
    assert cache.get("big") == text


def test_a_value_over_the_cap_is_returned_not_stored(settings: Settings, raw: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    cache = DataCache(settings.replace(data_max_value_bytes=1000))
    calls = []

    def big() -> str:
        calls.append(1)
        return "x" * 2000

    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert cache.get_or_set("big", big, ttl=60) == "x" * 2000
        assert cache.get_or_set("big", big, ttl=60) == "x" * 2000
        assert cache.set("big", "y" * 2000, ttl=60) is False
    assert len(calls) == 2
    assert sum("over" in r.getMessage() for r in caplog.records) == 1
    assert audit_data_keys(settings) == []  # nothing stored, no lease left


def test_a_value_over_the_cap_removes_the_value_it_was_to_replace(settings: Settings,
                                                                   raw: Any) -> None:
    """As memcached does: a reader never gets the value a refused write meant to replace."""
    cache = DataCache(settings.replace(data_max_value_bytes=1000))
    assert cache.set("report", {"version": 1}, ttl=60) is True
    assert cache.set("report", "new" * 1000, ttl=60) is False
    assert cache.get("report") is None
    cache.set_many({"report": {"version": 1}, "other": 1}, ttl=60)
    assert cache.set_many({"report": "new" * 1000, "other": 2}, ttl=60) == ["report"]
    assert cache.get_many(["report", "other"]) == {"other": 2}
    cache.set("soft", "old", ttl=0.05, stale=60)  # served stale while one refreshes
    time.sleep(0.1)
    assert cache.get_or_set("soft", lambda: "new" * 1000, ttl=60, stale=60) in ("old",
                                                                                "new" * 1000)
    assert cache.get("soft") is None  # stale: a plain read misses it
    deadline = time.monotonic() + 3
    while raw.exists(data_key(settings, "soft")):  # the refresh, in the background, drops it
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert cache.get("soft") is None


def test_a_ttl_past_a_century_is_a_value_error(settings: Settings) -> None:
    cache = DataCache(settings)
    for ttl in (1e17, 101 * 365 * 86400, float("inf"), float("nan"), 0, -1):
        with pytest.raises(ValueError, match="TTL"):
            cache.set("k", 1, ttl=ttl)
    with pytest.raises(ValueError, match="stale"):
        cache.set("k", 1, ttl=60, stale=1e17)
    assert cache.set("k", 1, ttl=100 * 365 * 86400) is True


async def test_durations_may_be_timedeltas(settings: Settings, raw: Any) -> None:
    # As cashews' ttl and dogpile.cache's expiration_time take them.
    cache = DataCache(settings)
    hour = timedelta(hours=1)

    @cache.cached(ttl=hour, key="td:{n}", stale=timedelta(minutes=1))
    def square(n: int) -> int:
        return n * n

    @cache.cached(ttl=timedelta(seconds=90))
    async def double(n: int) -> int:
        return 2 * n

    assert square(3) == 9 and await double(4) == 8
    assert cache.set("td", 1, ttl=hour) and cache.touch("td", timedelta(days=2))
    assert cache.get_or_set("td2", lambda: 2, ttl=timedelta(milliseconds=1500)) == 2
    assert await cache.aset("td3", 3, ttl=timedelta(minutes=5))
    assert 3600 < raw.pttl(data_key(settings, square.key_for(3))) / 1000 <= 3660
    assert 2 * 86400 - 60 < raw.pttl(data_key(settings, "td")) / 1000 <= 2 * 86400
    assert 1 < raw.pttl(data_key(settings, "td2")) / 1000 <= 1.5
    with cache.lock("td", timeout=timedelta(seconds=5), wait=timedelta(seconds=1)):
        pass
    for bad in (timedelta(0), timedelta(seconds=-1), timedelta(days=365 * 101)):
        with pytest.raises(ValueError, match="TTL"):
            cache.set("k", 1, ttl=bad)
    await cache.aclose()
    await cache.redis.aclose()


# -- metrics -----------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def data(self, event: str, function: str, seconds: float = 0.0) -> None:
        self.events.append((event, function))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_metrics_per_function(cache: DataCache, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(metrics, "hook", recorder)

    @cache.cached(ttl=60)
    def compute(x: int) -> int:
        return x

    compute(1), compute(1)
    cache.get_or_set("a", lambda: 1, ttl=60)
    cache.get_or_set("b", lambda: 1, ttl=60, name="config")
    label = f"{__name__}.test_metrics_per_function.<locals>.compute"
    assert recorder.events == [("miss", label), ("load", label), ("hit", label),
                               ("miss", "get_or_set"), ("load", "get_or_set"),
                               ("miss", "config"), ("load", "config")]


def test_has_and_add_agree_with_get_about_a_value_in_its_stale_window(
        cache: DataCache, raw: Any, settings: Settings) -> None:
    """Past its TTL, inside its stale window, a value is not there for ``has`` and ``add``
    either, as for ``get``: ``add`` stores over it. Inside its TTL it is there (``add``
    refuses), and so is a value that is not ours to judge (no envelope)."""
    cache.set("past", "old", ttl=0.05, stale=60)
    cache.set("soft", "kept", ttl=60, stale=60)
    raw.set(data_key(settings, "junk"), b"no envelope", ex=60)
    time.sleep(0.1)
    assert cache.get("past", "default") == "default" and cache.has("past") is False
    assert cache.add("past", "new", ttl=60) is True and cache.get("past") == "new"
    assert 59 < (cache.ttl("past") or 0) <= 60  # the new value's TTL, no stale window
    assert cache.has("soft") is True and cache.add("soft", "other", ttl=60) is False
    assert cache.get("soft") == "kept"
    assert cache.has("junk") is True and cache.add("junk", "other", ttl=60) is False
    assert cache.has("missing") is False and cache.add("missing", 1, ttl=60) is True
    assert cache.get("missing") == 1


@pytest.mark.parametrize("side", ["sync", "async"])
def test_get_decides_on_one_get(settings: Settings, raw: Any, side: str,
                                monkeypatch: pytest.MonkeyPatch,
                                caplog: pytest.LogCaptureFixture) -> None:
    """``get`` and ``aget`` send one GET and answer for what it read: a plain value; a
    value inside the fresh part of its stale window; the default past it (a plain read
    never serves a stale value), for a missing key, and for one it cannot read (logged
    once); "hit" or "miss" under the label ``get``."""
    cache = DataCache(settings)
    cache.set("plain", {"a": 1}, ttl=60)
    cache.set("soft", [1, 2], ttl=60, stale=60)
    cache.set("past", "old", ttl=0.05, stale=60)
    raw.set(data_key(settings, "junk"), b"no envelope", ex=60)
    time.sleep(0.1)
    recorder = Recorder()
    monkeypatch.setattr(metrics, "hook", recorder)
    names = ["plain", "soft", "past", "missing", "junk", "junk"]
    conns = cache.redis
    trips = conns.round_trips

    async def aget() -> list[Any]:
        try:
            return [await cache.aget(name, "default") for name in names]
        finally:
            await cache.redis.aclose()

    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        got = [cache.get(n, "default") for n in names] if side == "sync" else asyncio.run(
            aget())
    assert got == [{"a": 1}, [1, 2], "default", "default", "default", "default"]
    assert conns.round_trips - trips == len(names)
    assert recorder.events == [("hit", "get")] * 2 + [("miss", "get")] * 4
    assert sum("could not be read" in r.getMessage() for r in caplog.records) == 1


def test_prometheus_series(cache: DataCache, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry

    from redis_middleware.prometheus import PrometheusRecorder

    registry = CollectorRegistry()
    monkeypatch.setattr(metrics, "hook", PrometheusRecorder(registry))
    cache.get_or_set("p", lambda: time.sleep(0.01) or 1, ttl=60, name="slow")
    cache.get_or_set("p", lambda: 1, ttl=60, name="slow")
    value = registry.get_sample_value
    assert value("redis_middleware_data_lookups_total",
                 {"outcome": "hit", "function": "slow"}) == 1
    assert value("redis_middleware_data_lookups_total",
                 {"outcome": "miss", "function": "slow"}) == 1
    assert value("redis_middleware_data_load_seconds_count", {"function": "slow"}) == 1
    assert (value("redis_middleware_data_load_seconds_sum", {"function": "slow"}) or 0) > 0.009


def test_settings_none_reads_the_environment(monkeypatch: pytest.MonkeyPatch,
                                             backend_url: str) -> None:
    settings = make_settings(backend_url)
    monkeypatch.setenv("REDIS_URL", backend_url)
    monkeypatch.setenv("REDIS_MIDDLEWARE_SECRET_KEY", settings.secret_key[0])
    monkeypatch.setenv("REDIS_MIDDLEWARE_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("REDIS_MIDDLEWARE_DATA_TTL", "12")
    cache = DataCache()
    assert cache.settings.data_ttl == 12
    cache.set("x", 1)
    assert 11 < (cache.ttl("x") or 0) <= 12
    cache.delete("x")
