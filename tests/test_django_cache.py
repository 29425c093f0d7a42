"""The Django cache backend (``redis_middleware.django.cache.RedisCache``): what Django's
own cache tests check of a backend (``BaseCacheTests``), written here as our tests, and
what ours adds: signed values, ``clear()`` of its own keys only, single-flight
``get_or_set``, TTL-keeping versions, locks, validated options. On memory://, a real
redis-server and a Redis Cluster. The async methods: ``test_django_cache_async.py``;
Django's features on it and outages: ``test_django_cache_project.py``."""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from redis_middleware import ConfigError, DataCache, Settings
from redis_middleware.sansio import incidents

from .support.audit import audit_keyspace
from .support.clients import raw_client
from .support.django_project import configured, django_project
from .support.forks import held, in_forked_child
from .support.planted import UNPICKLED, planted_pickle

__all__ = ["configured", "django_project"]  # the fixtures this module uses

pytestmark = pytest.mark.scenarios

BACKEND = "redis_middleware.django.cache.RedisCache"


def custom_key(key: str, key_prefix: str, version: int) -> str:
    """A KEY_FUNCTION of the project's own (also named by its dotted path)."""
    return f"custom|{key_prefix}|{version}|{key}"


def ours(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {"BACKEND": BACKEND, "LOCATION": settings.redis_url, **extra}


@pytest.fixture
def caches(configured: Settings) -> Iterator[Any]:
    """Aliases on one Redis: they share the store, as Django's test aliases do."""
    from django.core.cache import caches as handler
    from django.test import override_settings

    with override_settings(CACHES={
            "default": ours(configured),
            "prefixed": ours(configured, KEY_PREFIX="other"),
            "v2": ours(configured, VERSION=2),
            "custom": ours(configured, KEY_FUNCTION=custom_key),
            "custom_path": ours(configured, KEY_FUNCTION="tests.test_django_cache.custom_key"),
            "json": ours(configured, OPTIONS={"SERIALIZER": "json"}),
            "msgpack": ours(configured, OPTIONS={"SERIALIZER": "msgpack"}),
            "small": ours(configured, OPTIONS={"data_max_value_bytes": 1000}),
            "short": ours(configured, TIMEOUT="1"),
            "forever": ours(configured, TIMEOUT=None),
            "capped": ours(configured, OPTIONS={"data_max_value_bytes": 1024}),
    }):
        yield handler
        handler["default"].clear()
    audit_keyspace(configured)


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})


@pytest.fixture
def cache(caches: Any) -> Any:
    return caches["default"]


@pytest.fixture
def raw(configured: Settings) -> Iterator[Any]:
    client = raw_client(configured)
    yield client
    client.close()


def redis_key(settings: Settings, made: str, namespace: str = "django") -> str:
    return f"{settings.key_prefix}:data:{namespace}:{{{made}}}"


def wait_until_gone(cache: Any, key: str, limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while cache.has_key(key):
        assert time.monotonic() < deadline, f"{key!r} did not expire"
        time.sleep(0.02)


class Poll:
    """A picklable object of this module."""

    def __init__(self, question: str) -> None:
        self.question = question

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Poll) and other.question == self.question

    __hash__ = None  # type: ignore[assignment]


def answer() -> int:
    return 42


# -- get, set, add, delete, has_key -----------------------------------------------------------
def test_set_then_get_and_the_default_of_a_miss(cache: Any) -> None:
    assert cache.get("missing") is None
    assert cache.get("missing", "bang!") == "bang!"
    cache.set("greeting", "hello")
    assert cache.get("greeting") == "hello"


def test_none_is_a_value(cache: Any) -> None:
    cache.set("nothing", None)
    assert cache.get("nothing", "default") is None
    assert cache.has_key("nothing") and "nothing" in cache
    assert cache.get_many(["nothing", "absent"]) == {"nothing": None}


def test_add_stores_only_a_missing_key(cache: Any) -> None:
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"


def test_delete_says_whether_the_key_was_there(cache: Any) -> None:
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


def test_has_key_and_in(cache: Any) -> None:
    assert not cache.has_key("k") and "k" not in cache
    cache.set("k", "v", timeout=None)
    assert cache.has_key("k") and "k" in cache


def test_values_round_trip_as_pickle_keeps_them(cache: Any) -> None:
    """Tuples stay tuples, functions and classes come back themselves, bytes stay bytes,
    a bool is no int, and unicode keys and values work."""
    values: dict[str, Any] = {
        "text": "this is a string", "int": 42, "negative": -7, "bool": True, "float": 1.5,
        "list": [1, 2, 3], "tuple": (1, 2, 3), "dict": {"A": 1, "B": 2}, "bytes": b"\x00\xff",
        "function": answer, "class": Poll, "object": Poll("why?"), "set": {1, 2},
        "ключ-ü": "значение-ü", "big": 2**70, "none": None,
    }
    for key, value in values.items():
        cache.set(key, value)
    for key, value in values.items():
        got = cache.get(key)
        assert got == value and type(got) is type(value), key
    assert cache.get("bool") is True


def test_a_model_instance_round_trips(cache: Any) -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="alice")
    cache.set("user", user)
    got = cache.get("user")
    assert got == user and got.username == "alice" and got.pk == user.pk


def test_a_safe_string_stays_safe(cache: Any) -> None:
    from django.utils.safestring import SafeString, mark_safe

    cache.set("fragment", mark_safe("<b>bold</b>"))
    assert isinstance(cache.get("fragment"), SafeString)


def test_an_unpicklable_value_raises_its_pickling_error(cache: Any) -> None:
    lock = threading.Lock()
    with pytest.raises((pickle.PickleError, TypeError)):
        cache.set("lock", lock)
    with pytest.raises((pickle.PickleError, TypeError)):
        cache.add("lock", lock)
    assert not cache.has_key("lock")


def test_a_value_over_the_size_cap_is_not_stored(caches: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """docs/django.md, "Size cap": not stored and not raised, logged once."""
    capped, big = caches["capped"], os.urandom(4096)  # random: compression cannot shrink it
    with caplog.at_level(logging.WARNING):
        capped.set("big", big)
        assert capped.get("big", "default") == "default"
        assert capped.set_many({"big": big, "small": 1}) == ["big"]
        assert capped.get_many(["big", "small"]) == {"small": 1}
        assert capped.get_or_set("computed", lambda: big) == big
        assert capped.get("computed") is None
        assert capped.add("added", big) is False
        assert capped.get("added") is None
    assert len([r for r in caplog.records if "DATA_MAX_VALUE_BYTES" in r.getMessage()]) == 1


def test_integers_are_plain_digits_in_redis_and_bools_are_not(
        cache: Any, raw: Any, configured: Settings) -> None:
    cache.set("count", 42)
    cache.set("flag", True)
    assert raw.get(redis_key(configured, ":1:count")) == b"42"
    assert raw.get(redis_key(configured, ":1:flag")) not in (b"1", b"True")
    assert cache.get("flag") is True


def test_a_value_not_signed_with_our_secret_is_a_miss_and_never_unpickled(
        cache: Any, raw: Any, configured: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Whoever can write to Redis cannot make the process unpickle: a forged value (a
    pickle that would run code) is a miss, logged once."""
    ran: list[str] = []

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (ran.append, ("pwned",))

    forged = b"\x00" * 32 + pickle.dumps(Exploit())
    raw.set(redis_key(configured, ":1:forged"), forged, px=60_000)
    with caplog.at_level("WARNING", logger="redis_middleware"):
        assert cache.get("forged", "default") == "default"
    assert ran == []
    assert any("could not be read" in r.getMessage() for r in caplog.records)


# -- KEY_PREFIX, VERSION, KEY_FUNCTION -----------------------------------------------------
def test_key_prefixes_keep_their_own_entries(caches: Any) -> None:
    caches["default"].set("k", "default's")
    caches["prefixed"].set("k", "prefixed's")
    assert caches["default"].get("k") == "default's"
    assert caches["prefixed"].get("k") == "prefixed's"


def test_versions_are_separate_entries_and_may_be_named(caches: Any) -> None:
    default, v2 = caches["default"], caches["v2"]
    default.set("answer", 42)
    assert v2.get("answer") is None
    assert v2.get("answer", version=1) == 42
    v2.set("answer", 37)
    assert default.get("answer", version=2) == 37 and default.get("answer") == 42
    assert default.add("answer", 1, version=2) is False
    assert default.has_key("answer", version=2)
    assert default.get_many(["answer"], version=2) == {"answer": 37}
    default.delete("answer", version=2)
    assert v2.get("answer") is None and default.get("answer") == 42


def test_a_key_function_given_or_named_makes_the_same_keys(
        caches: Any, raw: Any, configured: Settings) -> None:
    caches["custom"].set("k", "v")
    assert caches["custom_path"].get("k") == "v"
    assert caches["default"].get("k") is None
    assert raw.exists(redis_key(configured, "custom||1|k"))


class _OwnKeys:
    """A backend subclass with its own make_key (Django's other way to shape keys)."""

    def make_key(self, key: Any, version: int | None = None) -> str:
        return f"own|{key}"


def test_a_subclass_make_key_makes_the_keys(caches: Any, raw: Any, configured: Settings
                                           ) -> None:
    from redis_middleware.django.cache import RedisCache

    backend = type("Own", (_OwnKeys, RedisCache), {})(
        configured.redis_url, {"KEY_PREFIX": "ignored"})
    backend.set("k", "v")
    assert backend.get("k") == "v" and backend.get_or_set("k", "other") == "v"
    assert raw.exists(redis_key(configured, "own|k"))
    assert caches["default"].get("k") is None


def test_key_warnings_name_the_made_key(cache: Any) -> None:
    """Django's memcached portability warnings, on the key as made (prefix, version)."""
    from django.core.cache.backends.base import CacheKeyWarning

    spaced = "key with spaces"
    expected = ("Cache key contains characters that will cause errors if used with "
                "memcached: ':1:key with spaces'")
    calls = [
        lambda: cache.add(spaced, 1), lambda: cache.get(spaced), lambda: cache.set(spaced, 1),
        lambda: cache.touch(spaced), lambda: cache.delete(spaced),
        lambda: cache.has_key(spaced), lambda: cache.get_many([spaced]),
        lambda: cache.set_many({spaced: 1}), lambda: cache.delete_many([spaced]),
        lambda: cache.get_or_set(spaced, 1),
    ]
    for call in calls:
        with pytest.warns(CacheKeyWarning) as caught:
            call()
        assert str(caught[0].message) == expected
    cache.set("n", 1)
    with pytest.warns(CacheKeyWarning):
        cache.set(spaced, 1)
    for call in (lambda: cache.incr(spaced), lambda: cache.decr(spaced)):
        with pytest.warns(CacheKeyWarning):
            call()
    long_key = "a" * 251
    for call in (lambda: cache.set(long_key, 1), lambda: cache.get(long_key),
                 lambda: cache.delete(long_key)):
        with pytest.warns(CacheKeyWarning, match="longer than 250"):
            call()
    with pytest.warns(CacheKeyWarning, match="longer than 250"):
        cache.get("a" * 248, version=10)  # the version makes it too long
    with pytest.warns(CacheKeyWarning):
        cache.delete(spaced)


def test_plain_keys_warn_nothing(cache: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.set("plain:key-1", 1)
        assert cache.get("plain:key-1") == 1


def test_keys_that_start_with_a_brace_or_a_tilde_keep_their_entries(caches: Any) -> None:
    """A key function may make any string: each stays its own entry."""
    from django.test import override_settings

    base = dict(caches.settings["default"])
    odd = {"}": "brace", "~}": "tilde-brace", "~": "tilde", "": "empty", "x": "plain"}
    with override_settings(CACHES={"default": {**base, "KEY_FUNCTION": _as_given}}):
        from django.core.cache import cache

        for key, value in odd.items():
            cache.set(key, value)
        assert {key: cache.get(key) for key in odd} == odd
        cache.clear()


def _as_given(key: str, key_prefix: str, version: int) -> str:
    return key


# -- get_many, set_many, delete_many ----------------------------------------------------------
def test_get_many_returns_the_found_keys_by_the_caller_s_key(cache: Any) -> None:
    cache.set_many({"a": "a", "b": "b", "c": "c"})
    assert cache.get_many(["a", "c", "missing"]) == {"a": "a", "c": "c"}
    assert cache.get_many(iter(["b"])) == {"b": "b"}
    assert cache.get_many([]) == {}


def test_set_many_returns_an_empty_list_and_sets_every_key(cache: Any) -> None:
    assert cache.set_many({"k1": "one", "k2": (2,)}) == []
    assert cache.get_many(["k1", "k2"]) == {"k1": "one", "k2": (2,)}
    assert cache.set_many({}) == []


def test_set_many_gives_every_key_a_ttl(cache: Any, raw: Any, configured: Settings) -> None:
    cache.set_many({"a": 1, "b": 2}, timeout=None)
    for made in (":1:a", ":1:b"):
        assert raw.pttl(redis_key(configured, made)) > 0
    cache.set_many({"c": 3}, timeout=0.3)
    assert 0 < raw.pttl(redis_key(configured, ":1:c")) <= 300
    wait_until_gone(cache, "c")


def test_delete_many_deletes_those_keys_only(cache: Any) -> None:
    cache.set_many({"a": 1, "b": 2, "c": 3})
    assert cache.delete_many(["a", "b", "missing"]) is None
    assert cache.get_many(["a", "b", "c"]) == {"c": 3}
    assert cache.delete_many([]) is None
    assert cache.delete_many(k for k in ["c"]) is None
    assert not cache.has_key("c")


# -- timeouts --------------------------------------------------------------------------------
def test_a_value_expires_after_its_timeout(cache: Any) -> None:
    cache.set("k", "v", timeout=0.3)
    assert cache.add("j", "v", timeout=0.3) is True
    wait_until_gone(cache, "k")
    wait_until_gone(cache, "j")
    assert cache.get("k") is None
    assert cache.add("k", "again") is True


def test_the_default_timeout_comes_from_timeout(caches: Any, raw: Any,
                                                configured: Settings) -> None:
    caches["default"].set("a", 1)
    caches["short"].set("b", 1)  # TIMEOUT="1": a string, as Django accepts it
    assert 290_000 < raw.pttl(redis_key(configured, ":1:a")) <= 300_000
    assert 0 < raw.pttl(redis_key(configured, ":1:b")) <= 1000
    assert caches["short"].default_timeout == 1


def test_none_keeps_a_value_for_data_max_ttl_never_without_a_ttl(
        caches: Any, raw: Any, configured: Settings) -> None:
    forever = caches["forever"]
    assert forever.default_timeout is None and forever.get_backend_timeout() is None
    forever.set("a", 1)
    caches["default"].set("b", 1, timeout=None)
    caches["default"].add("c", 1, timeout=None)
    caches["default"].set_many({"d": 1}, timeout=None)
    limit = configured.data_max_ttl * 1000
    for made in (":1:a", ":1:b", ":1:c", ":1:d"):
        ttl = raw.pttl(redis_key(configured, made))
        assert limit - 60_000 < ttl <= limit, made
    assert caches["default"].add("b", 2, timeout=None) is False


def test_a_timeout_of_zero_or_less_stores_nothing(cache: Any) -> None:
    cache.set("k", "old")
    cache.set("k", "new", timeout=0)
    assert cache.get("k") is None  # Django: set(timeout=0) also removes the old value
    assert cache.add("k", "v", timeout=0) is True  # the key was free, nothing is kept
    assert not cache.has_key("k")
    cache.set("k", "present")
    assert cache.add("k", "v", timeout=0) is False
    cache.set_many({"a": 1, "k": 2}, timeout=-1)
    assert cache.get_many(["a", "k"]) == {}
    cache.set("t", 1)
    assert cache.touch("t", 0) is True and not cache.has_key("t")
    assert cache.touch("t", -5) is False


def test_float_timeouts_keep_milliseconds(cache: Any, raw: Any, configured: Settings) -> None:
    cache.set("k", 1, timeout=100.2)
    assert 99_000 < raw.pttl(redis_key(configured, ":1:k")) <= 100_200
    cache.set("half", 1, timeout=0.5)  # Django's own backend would round this to 0
    assert cache.get("half") == 1


def test_a_timeout_of_thirty_days_and_more_is_seconds(cache: Any) -> None:
    month = 60 * 60 * 24 * 30 + 1
    cache.set("k", "v", month)
    assert cache.add("j", "v", month) is True
    cache.set_many({"m": "v"}, month)
    assert cache.get_many(["k", "j", "m"]) == {"k": "v", "j": "v", "m": "v"}


def test_get_backend_timeout_keeps_django_s_redis_contract(cache: Any) -> None:
    assert cache.get_backend_timeout() == 300
    assert cache.get_backend_timeout(10) == 10
    assert cache.get_backend_timeout(-5) == 0
    assert cache.get_backend_timeout(None) is None


# -- touch -------------------------------------------------------------------------------
def test_touch_gives_a_new_timeout(cache: Any, raw: Any, configured: Settings) -> None:
    cache.set("k", "v", timeout=1)
    assert cache.touch("k", 60) is True
    assert raw.pttl(redis_key(configured, ":1:k")) > 50_000
    assert cache.touch("k") is True
    assert raw.pttl(redis_key(configured, ":1:k")) > 290_000
    assert cache.touch("k", None) is True
    assert raw.pttl(redis_key(configured, ":1:k")) > (configured.data_max_ttl - 60) * 1000
    assert cache.touch("missing") is False
    assert cache.touch("missing", None) is False


# -- incr, decr ------------------------------------------------------------------------------
def test_incr_and_decr_return_the_new_value(cache: Any) -> None:
    cache.set("n", 1)
    assert cache.incr("n") == 2 and cache.get("n") == 2
    assert cache.incr("n", 10) == 12
    assert cache.incr("n", -2) == 10
    assert cache.decr("n") == 9 and cache.decr("n", 10) == -1
    assert cache.decr("n", -3) == 2


def test_incr_of_a_missing_key_is_a_value_error(cache: Any) -> None:
    for call in (lambda: cache.incr("missing"), lambda: cache.incr("missing", -1),
                 lambda: cache.decr("missing")):
        with pytest.raises(ValueError, match="not found"):
            call()
    assert not cache.has_key("missing")


def test_incr_of_a_value_that_is_no_integer_is_a_type_error(cache: Any) -> None:
    cache.set("none", None)
    cache.set("text", "12a")
    cache.set("flag", True)
    for key in ("none", "text", "flag"):
        with pytest.raises(TypeError):
            cache.incr(key)
    assert cache.get("none") is None and cache.get("text") == "12a"


def test_incr_is_atomic_and_keeps_the_ttl(cache: Any, raw: Any, configured: Settings) -> None:
    cache.set("hits", 0, timeout=60)

    def hammer() -> None:
        for _ in range(25):
            cache.incr("hits")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("hits") == 200
    assert 50_000 < raw.pttl(redis_key(configured, ":1:hits")) <= 60_000


@pytest.mark.parametrize("alias", ["default", "json", "msgpack"])
def test_incr_counts_exactly_whatever_the_serializer(caches: Any, alias: str) -> None:
    """msgpack writes 48 to 57 as the bytes "0" to "9", which must not be counted as
    digits; past 2**53 the new value comes back exact (Lua's numbers are doubles)."""
    cache = caches[alias]
    for start, delta in ((52, -10), (50, 1), (57, 1), (2**53, 1), (2**63 - 1, -10)):
        cache.set("n", start)
        assert cache.incr("n", delta) == start + delta, (start, delta)
        assert cache.get("n") == start + delta
    cache.set("ch", "4")
    with pytest.raises(TypeError):
        cache.incr("ch")
    assert cache.get("ch") == "4"


def test_a_timeout_past_a_century_keeps_the_value_a_century(
        cache: Any, raw: Any, configured: Settings) -> None:
    """Django takes any timeout; the data cache counts a century at most."""
    century = 100 * 365 * 86400
    for call in (lambda: cache.set("far", 1, timeout=10**10),
                 lambda: cache.add("far2", 1, timeout=10**12),
                 lambda: cache.touch("far", timeout=1e17)):
        assert call() is not False
    assert cache.get("far") == 1 and cache.get("far2") == 1
    assert century - 60 < raw.ttl(redis_key(configured, ":1:far")) <= century


def test_a_set_over_the_size_cap_leaves_no_older_value(caches: Any) -> None:
    cache = caches["small"]
    cache.set("report", 10)
    cache.set("report", "x" * 2000)
    assert cache.get("report") is None
    cache.set_many({"a": 1, "b": 2})
    assert cache.set_many({"a": "x" * 2000, "b": 3}) == ["a"]
    assert cache.get_many(["a", "b"]) == {"b": 3}


def test_incr_goes_past_64_bits(cache: Any, raw: Any, configured: Settings) -> None:
    cache.set("big", 2**63 - 1, timeout=60)
    assert cache.incr("big") == 2**63
    assert cache.incr("big", 2**64) == 2**63 + 2**64
    assert cache.decr("big", 2**64 + 2**63 + 10) == -10
    assert cache.get("big") == -10
    assert 50_000 < raw.pttl(redis_key(configured, ":1:big")) <= 60_000


# -- versions ----------------------------------------------------------------------------
def test_incr_version_moves_the_value_and_keeps_its_ttl(
        cache: Any, raw: Any, configured: Settings) -> None:
    cache.set("answer", 42, timeout=60)
    assert cache.incr_version("answer") == 2
    assert cache.get("answer") is None and cache.get("answer", version=2) == 42
    assert 50_000 < raw.pttl(redis_key(configured, ":2:answer")) <= 60_000
    assert cache.incr_version("answer", 3, version=2) == 5
    assert cache.decr_version("answer", version=5) == 4
    assert cache.get("answer", version=4) == 42
    with pytest.raises(ValueError, match="not found"):
        cache.incr_version("missing")
    cache.set("null", None)
    assert cache.incr_version("null") == 2 and cache.get("null", "x", version=2) is None


def test_decr_version(caches: Any) -> None:
    v2 = caches["v2"]
    v2.set("answer", 42)
    assert v2.decr_version("answer") == 1
    assert v2.get("answer") is None and caches["default"].get("answer") == 42
    with pytest.raises(ValueError, match="not found"):
        v2.decr_version("answer", version=2)


# -- get_or_set ----------------------------------------------------------------------------
def test_get_or_set_stores_the_default(cache: Any) -> None:
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("projector", 7) == 42
    assert cache.get_or_set("null", None) is None
    assert cache.get("null", "default") is None  # None was stored


def test_get_or_set_calls_a_callable_default_once(cache: Any) -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "loaded"

    assert cache.get_or_set("k", load) == "loaded"
    assert cache.get_or_set("k", load) == "loaded"
    assert calls == [1]
    assert cache.get_or_set("none", lambda: None) is None
    assert cache.get("none", "default") is None


def test_get_or_set_needs_its_default_and_honours_version(cache: Any) -> None:
    with pytest.raises(TypeError, match="required positional argument: 'default'"):
        cache.get_or_set("brian", version=1)  # type: ignore[call-arg]
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    assert cache.get("brian", version=2) == 1979 and cache.get("brian") is None


def test_get_or_set_with_a_timeout_of_zero_returns_the_value_unstored(cache: Any) -> None:
    assert cache.get_or_set("k", lambda: "v", timeout=0) == "v"
    assert not cache.has_key("k")
    cache.set("k", "stored")
    assert cache.get_or_set("k", lambda: "v", timeout=0) == "stored"


def test_get_or_set_keeps_each_value_for_its_own_timeout(
        cache: Any, raw: Any, configured: Settings) -> None:
    for key, timeout in (("short", 30), ("long", 3000), ("again", 30), ("default", None)):
        args = () if timeout is None else (timeout,)
        assert cache.get_or_set(key, lambda k=key: k.upper(), *args) == key.upper()
    ttls = {key: raw.pttl(redis_key(configured, f":1:{key}")) / 1000
            for key in ("short", "long", "again", "default")}
    assert 28 < ttls["short"] <= 30 and 28 < ttls["again"] <= 30
    assert 2990 < ttls["long"] <= 3000
    assert 290 < ttls["default"] <= 300  # Django's TIMEOUT default


def test_get_or_set_runs_the_loader_once_for_concurrent_misses(cache: Any) -> None:
    calls: list[int] = []
    start = threading.Barrier(8)

    def load() -> str:
        calls.append(1)
        time.sleep(0.2)
        return "computed"

    results: list[Any] = []

    def miss() -> None:
        start.wait()
        results.append(cache.get_or_set("hot", load, 60))

    threads = [threading.Thread(target=miss) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["computed"] * 8 and calls == [1]


def test_a_loader_s_exception_reaches_the_caller_and_nothing_is_stored(cache: Any) -> None:
    def fail() -> Any:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        cache.get_or_set("k", fail)
    assert not cache.has_key("k")
    assert cache.get_or_set("k", lambda: "later") == "later"


def test_get_or_set_returns_the_default_though_add_is_refused(
        cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A racer's add winning (Django's test patches add to say so) still gives a value."""
    monkeypatch.setattr(f"{BACKEND}.add", lambda *a, **k: False)
    assert cache.get_or_set("key", "default") == "default"


# -- clear ---------------------------------------------------------------------------------
def test_clear_removes_this_backend_s_keys_only(
        caches: Any, raw: Any, configured: Settings) -> None:
    """Never FLUSHDB: sessions, other components and other namespaces stay; every alias
    of this namespace is cleared (Django's tests clear them all through one)."""
    from django.test import override_settings

    caches["default"].set("a", 1)
    caches["prefixed"].set("a", 2)
    caches["v2"].set("b", 3)
    session_key = f"{configured.key_prefix}:session:{{x}}:y"
    raw.set(session_key, "a session", ex=60)
    data = DataCache(configured)
    data.set("user:1", {"name": "Ada"}, ttl=60)
    base = dict(caches.settings["default"])
    with override_settings(CACHES={"default": base, "own": {
            **base, "OPTIONS": {"NAMESPACE": "reports"}}}):
        from django.core.cache import caches as handler

        handler["own"].set("r", 1)
        assert handler["default"].clear() is None
        assert handler["own"].get("r") == 1
        handler["own"].clear()
        assert handler["own"].get("r") is None
    assert caches["default"].get("a") is None and caches["prefixed"].get("a") is None
    assert caches["v2"].get("b") is None
    assert raw.get(session_key) == b"a session"
    assert data.get("user:1") == {"name": "Ada"}
    raw.delete(session_key)
    data.clear()


# -- serializers and options ---------------------------------------------------------------
def test_the_json_serializer(caches: Any, raw: Any, configured: Settings) -> None:
    cache = caches["json"]
    cache.set("doc", {"a": [1, 2.5, None, True]})
    assert cache.get("doc") == {"a": [1, 2.5, None, True]}
    assert raw.get(redis_key(configured, ":1:doc")) == b'{"a":[1,2.5,null,true]}'
    cache.set("n", 1)
    assert cache.incr("n", 2) == 3
    with pytest.raises(TypeError):
        cache.set("tuple", (1, 2))  # JSON would hand back a list


def test_a_serializer_by_dotted_path(configured: Settings) -> None:
    from django.core.cache import caches
    from django.test import override_settings

    with override_settings(CACHES={"default": ours(configured, OPTIONS={
            "SERIALIZER": "tests.test_django_cache.Upper"})}):
        caches["default"].set("k", "text")
        assert caches["default"].get("k") == "TEXT"
        caches["default"].clear()


class Upper:
    """A serializer of a project's own (class named in OPTIONS)."""

    def dumps(self, value: str) -> bytes:
        return value.upper().encode()

    def loads(self, data: bytes) -> str:
        return data.decode()


class Pickles:
    """A project's pickle serializer (django-redis's is one): what it stores is signed."""

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


def test_a_pickle_serializer_of_ones_own_never_loads_a_planted_value(
        configured: Settings, raw: Any) -> None:
    """Whoever writes to Redis without the secret cannot make a project's own pickle
    serializer run code: its values are signed, a planted one is a miss."""
    from django.core.cache import caches
    from django.test import override_settings

    with override_settings(CACHES={"default": ours(configured, OPTIONS={
            "SERIALIZER": "tests.test_django_cache.Pickles"})}):
        cache = caches["default"]
        cache.set("k", {"t": (1, 2)})
        assert cache.get("k") == {"t": (1, 2)}
        raw.set(redis_key(configured, ":1:k"), planted_pickle(), ex=60)
        assert cache.get("k") is None and cache.get_many(["k"]) == {}
        assert UNPICKLED == []
        cache.clear()


@pytest.mark.parametrize(("options", "named"), [
    pytest.param({"CULL_FREQUENCY": 3}, "OPTIONS['CULL_FREQUENCY']", id="culling"),
    pytest.param({"socket_keepalive": True}, "OPTIONS['socket_keepalive']", id="redis-py"),
    pytest.param({"redis_url": "redis://x"}, "OPTIONS['redis_url']", id="url-in-options"),
    pytest.param({"SERIALIZER": "yaml"}, "OPTIONS['SERIALIZER']", id="serializer"),
    pytest.param({"SERIALIZER": object()}, "OPTIONS['SERIALIZER']", id="not-a-serializer"),
    pytest.param({"NAMESPACE": "Not valid"}, "OPTIONS['NAMESPACE']", id="namespace"),
    pytest.param({"NAMESPACE": "fill"}, "OPTIONS['NAMESPACE']", id="reserved-namespace"),
])
def test_options_are_checked_and_named(configured: Settings, options: dict[str, Any],
                                       named: str) -> None:
    from django.core.cache import caches
    from django.test import override_settings

    with (override_settings(CACHES={"default": ours(configured, OPTIONS=options)}),
          pytest.raises(ConfigError) as caught):
        caches["default"].get("k")  # unknown names fail at once, values at first use
    assert caught.value.name == named


def test_location_takes_one_url(configured: Settings) -> None:
    from django.core.cache import caches
    from django.test import override_settings

    replicas = [configured.redis_url, configured.redis_url]
    with (override_settings(CACHES={"default": ours(configured, LOCATION=replicas)}),
          pytest.raises(ConfigError, match="LOCATION")):
        caches["default"].get("k")


def test_settings_fields_in_options_and_location_from_redis_middleware(
        configured: Settings, raw: Any) -> None:
    """An empty LOCATION is REDIS_MIDDLEWARE's Redis; OPTIONS may set our settings."""
    from django.core.cache import caches
    from django.test import override_settings

    with override_settings(CACHES={"default": {"BACKEND": BACKEND, "OPTIONS": {
            "data_max_ttl": 120}}}):
        caches["default"].set("k", 1, timeout=None)
        assert 100_000 < raw.pttl(redis_key(configured, ":1:k")) <= 120_000
        caches["default"].clear()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_while_a_thread_built_a_store_builds_its_own(
        configured: Settings) -> None:
    """A server forking its workers while a thread of the parent builds a backend's store
    (under the lock of the stores shared by Django's instances): the child builds its
    own instead of waiting for a thread it does not have."""
    from django.core.cache import caches
    from django.test import override_settings

    from redis_middleware.django import cache_store

    def child() -> bytes:
        caches["forked"].set("k", "v")
        return str(caches["forked"].get("k")).encode()

    with override_settings(CACHES={"forked": ours(configured, OPTIONS={
            "NAMESPACE": "forked"})}), held(cache_store._shared_lock):
        got = in_forked_child(child)
    assert got == b"v", "the forked child hung on a lock its parent's thread held"
    caches["default"].clear()


def test_instances_of_one_configuration_share_their_store(cache: Any) -> None:
    """Django makes one backend per thread (and per task): making one is cheap, and they
    share one data cache (and the process's connections)."""
    from django.core.cache import caches

    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(caches["default"]))
    thread.start()
    thread.join()
    cache.set("k", "v")
    assert other[0] is not cache
    assert other[0]._data is cache._data
    cache.set("k", "v")
    assert other[0].get("k") == "v"


def test_close_accepts_the_signal_s_arguments_and_the_cache_keeps_working(cache: Any) -> None:
    from django.core.signals import request_finished

    cache.set("k", "v")
    cache.close()
    cache.close(signal=request_finished, sender=None)
    request_finished.send(sender=None)  # Django's close_caches, after every request
    assert cache.get("k") == "v"


# -- locks ---------------------------------------------------------------------------------
def test_lock_excludes_other_holders(cache: Any) -> None:
    from redis_middleware import LockNotAcquired

    with cache.lock("rebuild", timeout=10):
        other = cache.lock("rebuild", timeout=10, blocking=False)
        assert other.acquire() is False
        assert cache.lock("rebuild", blocking_timeout=0.1).acquire() is False
        with pytest.raises(LockNotAcquired), cache.lock("rebuild", blocking=False):
            pass
        assert not cache.has_key("rebuild")  # the lock is no cache entry
    with cache.lock("rebuild", timeout=None):  # renewed while held, still with a TTL
        pass
    versioned = cache.lock("rebuild", version=2)
    assert versioned.acquire() is True and versioned.release() is True
