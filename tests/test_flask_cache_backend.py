"""The Flask-Caching backend (``CACHE_TYPE = "redis_middleware.flask.FlaskCache"``): the
cachelib contract Flask-Caching's own backend tests check, written here as our tests;
``memoize``, ``cached`` and ``{% cache %}`` on it, with one computation per missing value
across threads and processes; its options; and outages. On memory://, a real
redis-server and a Redis Cluster, through real Flask apps."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_caching import Cache

from redis_middleware import ConfigError, DataCache, Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.sansio import incidents

from .support.audit import audit_keyspace
from .support.clients import SECRET, make_settings, raw_client
from .support.planted import UNPICKLED, planted_pickle
from .support.servers import RedisServer, start_redis_server, stop_redis_server

pytestmark = pytest.mark.scenarios

CACHE_TYPE = "redis_middleware.flask.FlaskCache"


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})


def make_app(settings: Settings, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, CACHE_TYPE=CACHE_TYPE,
                      CACHE_REDIS_URL=settings.redis_url,
                      CACHE_OPTIONS={"key_prefix": settings.key_prefix, **config.pop(
                          "CACHE_OPTIONS", {})}, **config)
    return app


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = make_app(settings)
    yield app
    audit_keyspace(settings)


@pytest.fixture
def cache(app: Flask) -> Iterator[Cache]:
    cache = Cache(app)
    yield cache
    with app.app_context():
        cache.clear()


@pytest.fixture
def backend(app: Flask, cache: Cache) -> Any:
    with app.app_context():
        return cache.cache


@pytest.fixture
def raw(settings: Settings) -> Iterator[Any]:
    client = raw_client(settings)
    yield client
    client.close()


def flask_key(settings: Settings, key: str, prefix: str = "flask_cache_") -> str:
    return f"{settings.key_prefix}:data:flask:{{{prefix}{key}}}"


# -- the cachelib contract -------------------------------------------------------------------
def test_the_backend_is_ours_and_keys_live_in_its_namespace(
        backend: Any, raw: Any, settings: Settings) -> None:
    from redis_middleware.flask import FlaskCache

    assert type(backend) is FlaskCache
    backend.set("k", "v")
    assert raw.exists(flask_key(settings, "k"))


def test_get_set_of_ints_lists_bytes_and_bools(backend: Any) -> None:
    assert backend.get("missing") is None
    for i in range(5):
        assert backend.set(f"n{i}", i * i) is True
    assert [backend.get(f"n{i}") for i in range(5)] == [0, 1, 4, 9, 16]
    backend.set("list", [1, "two", (3,)])
    backend.set("bytes", b"\x00\xffdata")
    backend.set("yes", True)
    backend.set("no", False)
    assert backend.get("list") == [1, "two", (3,)]
    assert backend.get("bytes") == b"\x00\xffdata"
    assert backend.get("yes") is True and backend.get("no") is False


def test_get_many_is_a_list_in_order_and_get_dict_a_dict(backend: Any) -> None:
    assert backend.set_many({"a": 1, "b": None, "c": "c"}) == ["a", "b", "c"]
    assert backend.get_many("c", "missing", "a") == ["c", None, 1]
    assert backend.get_dict("a", "c") == {"a": 1, "c": "c"}


def test_add_keeps_the_first_value(backend: Any) -> None:
    assert backend.add("k", "first") is True
    assert backend.add("k", "second") is False
    assert backend.get("k") == "first"


def test_delete_and_delete_many_and_unlink(backend: Any) -> None:
    backend.set_many({"a": 1, "b": 2, "c": 3, "d": 4})
    assert backend.delete("a") is True and backend.delete("a") is False
    assert backend.get("a") is None
    assert backend.delete_many("b", "missing") == ["b", "missing"]  # absent counts
    assert backend.delete_many() == []
    assert backend.unlink("c") == ["c"]
    assert backend.get_many("b", "c", "d") == [None, None, 4]


def test_has_tells_a_stored_none_from_a_miss(backend: Any) -> None:
    backend.set("none", None)
    assert backend.get("none") is None
    assert backend.has("none") is True and backend.has("missing") is False


def test_inc_and_dec_start_a_missing_key_at_delta_with_the_default_timeout(
        backend: Any, raw: Any, settings: Settings) -> None:
    assert backend.inc("hits") == 1 and backend.inc("hits", 5) == 6
    assert backend.dec("hits", 2) == 4 and backend.get("hits") == 4
    assert backend.dec("down", 3) == -3
    assert 290_000 < raw.pttl(flask_key(settings, "hits")) <= 300_000
    assert raw.get(flask_key(settings, "hits")) == b"4"  # digits: INCRBY


def test_inc_returns_the_exact_count_past_2_53(backend: Any) -> None:
    backend.set("big", 2**53)
    assert backend.inc("big") == 2**53 + 1 and backend.get("big") == 2**53 + 1
    backend.set("top", 2**63 - 1)
    assert backend.dec("top", 10) == 2**63 - 11


def test_inc_is_atomic(backend: Any) -> None:
    def hammer() -> None:
        for _ in range(25):
            backend.inc("hits")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.get("hits") == 200


def test_timeouts(backend: Any, raw: Any, settings: Settings) -> None:
    """0 is "forever" (kept data_max_ttl, never without a TTL), a timedelta is seconds,
    a negative timeout stores nothing, and None is the default."""
    backend.set("forever", 1, timeout=0)
    ttl = raw.pttl(flask_key(settings, "forever"))
    assert (settings.data_max_ttl - 60) * 1000 < ttl <= settings.data_max_ttl * 1000
    backend.set("delta", 1, timeout=dt.timedelta(minutes=2))
    assert 110_000 < raw.pttl(flask_key(settings, "delta")) <= 120_000
    backend.set("default", 1)
    assert 290_000 < raw.pttl(flask_key(settings, "default")) <= 300_000
    backend.set("gone", "old")
    assert backend.set("gone", "new", timeout=-1) is True
    assert backend.get("gone") is None
    assert backend.add("never", 1, timeout=-1) is True and not backend.has("never")
    backend.set("short", 1, timeout=1)
    deadline = time.monotonic() + 4
    while backend.has("short"):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_timeout_over_a_century_is_a_century(backend: Any, raw: Any, settings: Settings
                                               ) -> None:
    """cachelib's backends take any timeout; the data cache refuses TTLs over a century,
    so the backend keeps such a value a century rather than raise."""
    century_ms = 100 * 365 * 86400 * 1000
    assert backend.set("huge", "v", timeout=10**10) is True
    assert backend.get("huge") == "v"
    assert century_ms - 60_000 < raw.pttl(flask_key(settings, "huge")) <= century_ms
    assert backend.add("added", 1, timeout=dt.timedelta(days=10**6)) is True
    assert backend.set_many({"a": 1, "b": 2}, timeout=10**12) == ["a", "b"]
    assert backend.get_many("added", "a", "b") == [1, 1, 2]
    assert raw.pttl(flask_key(settings, "b")) > century_ms - 60_000


def test_a_default_timeout_of_zero_is_forever(settings: Settings, raw: Any) -> None:
    app = make_app(settings, CACHE_DEFAULT_TIMEOUT=0)
    cache = Cache(app)
    with app.app_context():
        cache.set("k", 1)
        assert raw.pttl(flask_key(settings, "k")) > (settings.data_max_ttl - 60) * 1000
        cache.clear()


def test_clear_removes_this_backend_s_keys_only(
        backend: Any, raw: Any, settings: Settings) -> None:
    """Never FLUSHDB, never KEYS: sessions, Django's backend and DataCache stay."""
    backend.set("a", 1)
    session_key = f"{settings.key_prefix}:session:{{x}}:y"
    raw.set(session_key, "a session", ex=60)
    data = DataCache(settings)
    data.set("user:1", "Ada", ttl=60)
    django_key = f"{settings.key_prefix}:data:django:{{:1:k}}"
    raw.set(django_key, "42", ex=60)
    assert backend.clear() is True
    assert backend.get("a") is None
    assert raw.get(session_key) == b"a session" and raw.get(django_key) == b"42"
    assert data.get("user:1") == "Ada"
    raw.delete(session_key, django_key)
    data.clear()


def test_a_value_not_signed_with_our_secret_is_a_miss(
        backend: Any, raw: Any, settings: Settings) -> None:
    ran: list[str] = []

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (ran.append, ("pwned",))

    raw.set(flask_key(settings, "forged"), b"\x00" * 32 + pickle.dumps(Exploit()), px=60_000)
    assert backend.get("forged") is None and ran == []


# -- Flask-Caching's decorators and templates on it ---------------------------------------------
def test_memoize_and_delete_memoized(app: Flask, cache: Cache) -> None:
    calls: list[int] = []

    @cache.memoize(60)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    with app.app_context():
        assert [square(3), square(3), square(4)] == [9, 9, 16]
        assert calls == [3, 4]
        cache.delete_memoized(square, 3)
        assert square(3) == 9 and calls == [3, 4, 3]
        cache.delete_memoized(square)
        assert square(4) == 16 and calls == [3, 4, 3, 4]


def test_memoize_caches_none_when_asked(app: Flask, cache: Cache) -> None:
    calls: list[int] = []

    @cache.memoize(60, cache_none=True)
    def nothing() -> None:
        calls.append(1)

    with app.app_context():
        assert nothing() is None and nothing() is None and calls == [1]


def test_a_cached_view_is_served_from_redis(app: Flask, cache: Cache) -> None:
    calls: list[int] = []

    @app.route("/page")
    @cache.cached(timeout=60)
    def page() -> Any:
        calls.append(1)
        return f"page #{len(calls)}", 201, {"X-Made": "here"}

    client = app.test_client()
    first, second = client.get("/page"), client.get("/page")
    assert first.data == second.data == b"page #1" and calls == [1]
    assert second.status_code == 201 and second.headers["X-Made"] == "here"


def test_a_template_fragment(app: Flask, cache: Cache) -> None:
    calls: list[int] = []
    source = "{% cache 60, 'greeting' %}hello {{ count() }}{% endcache %}"

    def count() -> int:
        calls.append(1)
        return len(calls)

    with app.test_request_context():
        assert render_template_string(source, count=count) == "hello 1"
        assert render_template_string(source, count=count) == "hello 1"
    assert calls == [1]


def test_cache_serializer_json(settings: Settings, raw: Any) -> None:
    from cachelib.serializers import JSONSerializer

    app = make_app(settings, CACHE_SERIALIZER=JSONSerializer)
    cache = Cache(app)
    with app.app_context():
        cache.set("doc", {"a": [1, 2]})
        assert cache.get("doc") == {"a": [1, 2]}
        # the serializer's bytes, behind the signature every serializer of the user's gets
        assert raw.get(flask_key(settings, "doc"))[32:] == b'{"a": [1, 2]}'
        assert cache.cache.inc("n") == 1 and cache.get("n") == 1
        assert raw.get(flask_key(settings, "n")) == b"1"  # digits: INCRBY still works
        cache.clear()


def test_a_pickling_cache_serializer_never_loads_a_planted_value(settings: Settings, raw: Any
                                                                 ) -> None:
    """cachelib's serializers pickle: with one as CACHE_SERIALIZER, a value written to
    Redis by someone without the secret is a miss, never unpickled."""
    from cachelib.serializers import SimpleSerializer

    app = make_app(settings, CACHE_SERIALIZER=SimpleSerializer)
    cache = Cache(app)
    with app.app_context():
        cache.set("profile", {"id": (1, 2)})
        assert cache.get("profile") == {"id": (1, 2)}
        raw.set(flask_key(settings, "profile"), planted_pickle(), ex=60)
        assert cache.get("profile") is None and UNPICKLED == []
        cache.clear()


def test_two_apps_with_their_own_prefixes_are_isolated(settings: Settings) -> None:
    cache = Cache()
    one = make_app(settings, CACHE_KEY_PREFIX="one_")
    two = make_app(settings, CACHE_KEY_PREFIX="two_")
    cache.init_app(one)
    cache.init_app(two)
    with one.app_context():
        cache.set("k", "one's")
    with two.app_context():
        assert cache.get("k") is None
        cache.set("k", "two's")
    with one.app_context():
        assert cache.get("k") == "one's"
        cache.clear()


@pytest.mark.parametrize(("config", "named"), [
    pytest.param({"CACHE_OPTIONS": {"host": "x"}}, "CACHE_OPTIONS['host']", id="option"),
    pytest.param({"CACHE_ARGS": ["redis://x"]}, "CACHE_ARGS", id="args"),
    pytest.param({"CACHE_REDIS_HOST": "localhost"}, "CACHE_REDIS_HOST", id="host"),
    pytest.param({"CACHE_OPTIONS": {"namespace": "Bad Name"}}, "CACHE_OPTIONS['namespace']",
                 id="namespace"),
])
def test_configuration_is_checked_and_named(settings: Settings, config: dict[str, Any],
                                            named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Cache(make_app(settings, **config))
    assert caught.value.name == named


def test_a_real_redis_needs_a_secret(settings: Settings, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    if settings.target.kind == "memory":
        pytest.skip("memory:// keeps its values in this process")
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = Flask(__name__)
    app.config.update(CACHE_TYPE=CACHE_TYPE, CACHE_REDIS_URL=settings.redis_url)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Cache(app)


def test_a_memoize_hit_is_one_round_trip(app: Flask, cache: Cache, settings: Settings) -> None:
    """memoize reads the function's version keys, then the value: the versions are kept
    in the process and read again with the value, in one round trip (Flask-Caching's own
    Redis backend takes two)."""
    @cache.memoize(60)
    def square(n: int) -> int:
        return n * n

    conns = connections_for(settings)
    with app.app_context():
        square(3)
        square(3)
        before = conns.round_trips
        assert [square(3) for _ in range(10)] == [9] * 10
        assert conns.round_trips - before == 10


def test_delete_memoized_in_another_process_is_seen_at_once(settings: Settings) -> None:
    """Two backends (as two processes would have): the versions one keeps are read again
    with every value, so the other's delete_memoized makes the next call compute."""
    cache = Cache()
    here, there = (make_app(settings, CACHE_KEY_PREFIX="shared_") for _ in range(2))
    cache.init_app(here)
    cache.init_app(there)
    calls: list[int] = []

    @cache.memoize(60)
    def price(n: int) -> int:
        calls.append(n)
        return len(calls)

    with here.app_context():
        assert [price(1), price(1), price(1)] == [1, 1, 1]
    with there.app_context():
        assert price(1) == 1
        cache.delete_memoized(price)
    with here.app_context():
        # Never the old value. (The first call after the change is computed under the
        # version it had read, and once more under the new one: see docs/flask.md.)
        fresh = price(1)
        assert fresh > 1 and price(1) == price(1) >= fresh
    with there.app_context():
        settled = price(1)
        assert settled > 1
        cache.delete_memoized(price, 1)
    with here.app_context():
        assert price(1) > settled
        cache.clear()


def test_memoize_caching_none_computes_after_another_process_s_delete_memoized(
        settings: Settings) -> None:
    """memoize(cache_none=True) asks has() when get() returns None: the entry under the
    version another process dropped is still in Redis, and must not be taken for a
    stored None."""
    cache = Cache()
    here, there = (make_app(settings, CACHE_KEY_PREFIX="shared_") for _ in range(2))
    cache.init_app(here)
    cache.init_app(there)
    calls: list[int] = []

    @cache.memoize(60, cache_none=True)
    def product(n: int) -> str:
        calls.append(n)
        return f"computed #{len(calls)}"

    with here.app_context():
        assert product(1) == product(1) == "computed #1"
    with there.app_context():
        cache.delete_memoized(product)
    with here.app_context():
        assert product(1) == "computed #2"
        assert product(1) is not None
        cache.clear()


# -- one computation per missing value ------------------------------------------------------
def run_in_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    start = threading.Barrier(count)
    results: list[Any] = []

    def run() -> None:
        start.wait()
        results.append(target())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_memoize_computes_a_missing_value_once_for_concurrent_callers(
        app: Flask, cache: Cache) -> None:
    calls: list[int] = []

    @cache.memoize(60)
    def report(n: int) -> str:
        calls.append(n)
        time.sleep(0.3)
        return f"report {n}"

    def call() -> str:
        with app.app_context():
            return str(report(1))

    with app.app_context():
        report(0)  # the function's version key exists (see docs/flask.md)
    assert run_in_threads(8, call) == ["report 1"] * 8
    assert calls == [0, 1]


def test_a_view_slower_than_the_lease_still_computes_once(settings: Settings) -> None:
    """The lease a miss takes is renewed while the view computes: a view that takes 1 s
    under a 0.3 s lease is not computed again by the requests waiting for it."""
    app = make_app(settings, CACHE_OPTIONS={"data_lock_timeout": 0.3})
    cache = Cache(app)
    calls: list[int] = []

    @cache.memoize(60)
    def report(n: int) -> str:
        calls.append(n)
        time.sleep(1.0)
        return f"report {n}"

    def call() -> str:
        with app.app_context():
            return str(report(1))

    try:
        with app.app_context():
            cache._memoize_version(report)  # the version key exists (see docs/flask.md)
        assert run_in_threads(4, call) == ["report 1"] * 4
        assert calls == [1]
    finally:
        with app.app_context():
            cache.clear()


def test_a_cached_view_runs_once_for_concurrent_requests(app: Flask, cache: Cache) -> None:
    calls: list[int] = []

    @app.route("/slow")
    @cache.cached(timeout=60)
    def slow() -> str:
        calls.append(1)
        time.sleep(0.3)
        return "computed"

    results = run_in_threads(8, lambda: app.test_client().get("/slow").data)
    assert results == [b"computed"] * 8 and calls == [1]


def test_a_failing_function_frees_its_lease_at_once(app: Flask, cache: Cache) -> None:
    """The lease a miss took is freed when the app context ends without a set (here: the
    function raised), so the next caller computes without waiting for the lease to run
    out."""
    @cache.memoize(60)
    def flaky(fail: bool) -> str:
        if fail:
            raise RuntimeError("database down")
        return "fine"

    with app.app_context():
        flaky.uncached(False)
        key = flaky.make_cache_key(flaky.uncached, True)
        with pytest.raises(RuntimeError):
            flaky(True)
    started = time.monotonic()
    with app.app_context():
        assert cache.get(key) is None  # takes the lease: it was freed
    assert time.monotonic() - started < 1


def test_cache_can_come_after_the_first_request_and_still_frees_leases(
        settings: Settings) -> None:
    """Flask refuses setup methods once the app has handled a request; Flask-Caching's
    backends allow a late Cache(app), and ours does too, still freeing at the end of an
    app context the lease a get took with no set after it."""
    app = make_app(settings, CACHE_OPTIONS={"lock_wait": 3})
    app.add_url_rule("/", "index", lambda: "ok")
    assert app.test_client().get("/").data == b"ok"
    cache = Cache(app)
    with app.app_context():
        assert cache.get("report") is None  # a miss: this context takes the lease
    started = time.monotonic()
    with app.app_context():
        assert cache.get("report") is None  # takes the lease: it was freed
        cache.set("report", "done")
    assert time.monotonic() - started < 1
    with app.app_context():
        assert cache.get("report") == "done"
        cache.clear()


def test_cache_aside_by_hand_waits_for_the_other_request_s_set(app: Flask, cache: Cache) -> None:
    """A ``get`` that missed holds the key until its ``set``: another request's ``get``
    waits for that value instead of computing it again."""
    holder = app.app_context()
    holder.push()
    try:
        assert cache.get("profile") is None  # miss: this context computes it
        seen: list[Any] = []

        def other() -> None:
            with app.app_context():
                seen.append(cache.get("profile"))

        waiter = threading.Thread(target=other)
        waiter.start()
        time.sleep(0.3)
        assert seen == []  # still waiting
        cache.set("profile", {"name": "Ada"})
        waiter.join(5)
        assert seen == [{"name": "Ada"}]
    finally:
        holder.pop()


def test_single_flight_can_be_turned_off(settings: Settings) -> None:
    app = make_app(settings, CACHE_OPTIONS={"single_flight": False})
    cache = Cache(app)
    with app.app_context():
        assert cache.get("k") is None

    def other() -> Any:
        with app.app_context():
            return cache.get("k")

    started = time.monotonic()
    assert run_in_threads(1, other) == [None]
    assert time.monotonic() - started < 1


def memoized_report(cache: Cache, url: str, loads_key: str) -> Callable[[], str]:
    """The memoized report, counted in Redis. Flask-Caching names a memoized function by
    its module and qualified name, so the parent and its children build it here: the
    same name, the same version key."""
    import redis

    @cache.memoize(60)
    def report() -> str:
        redis.Redis.from_url(url).incr(loads_key)
        time.sleep(0.5)
        return "report"

    return report


def compute_in_a_child(url: str, prefix: str, loads_key: str) -> None:
    """Run by each child process: the memoized report."""
    from redis_middleware import Settings as _Settings

    settings = _Settings(redis_url=url, key_prefix=prefix, secret_key=(SECRET,))
    app = make_app(settings)
    report = memoized_report(Cache(app), url, loads_key)
    with app.app_context():
        print(report(), flush=True)


@pytest.mark.real_redis
def test_processes_compute_a_missing_memoized_value_once(redis_server: RedisServer) -> None:
    """Three processes miss the same memoized value at once: one computes it, the others
    wait for it. (The version key exists first: docs/flask.md says why.)"""
    settings = make_settings(redis_server.url)
    app = make_app(settings)
    cache = Cache(app)
    loads_key = f"{settings.key_prefix}:data:test-loads"
    report = memoized_report(cache, settings.redis_url, loads_key)
    with app.app_context():
        cache._memoize_version(report)  # the version key exists (see docs/flask.md)
    code = ("import sys; from tests.test_flask_cache_backend import compute_in_a_child; "
            "compute_in_a_child(*sys.argv[1:])")
    children = [subprocess.Popen([sys.executable, "-c", code, settings.redis_url,
                                  settings.key_prefix, loads_key], stdout=subprocess.PIPE,
                                 cwd=Path(__file__).parent.parent) for _ in range(3)]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    client = raw_client(settings)
    try:
        assert outputs == [b"report\n"] * 3
        assert client.get(loads_key) == b"1"
        client.delete(loads_key)
    finally:
        client.close()
    with app.app_context():
        cache.clear()


# -- Redis down ------------------------------------------------------------------------------
@pytest.fixture
def down(tmp_path: Path) -> Iterator[tuple[Flask, Cache, RedisServer]]:
    server = start_redis_server(tmp_path / "first")
    settings = make_settings(server.url, breaker_cooldown=0.2)
    app = make_app(settings, CACHE_OPTIONS={"breaker_cooldown": 0.2})
    try:
        yield app, Cache(app), server
    finally:
        connections_for(settings).close()
        if server.proc.poll() is None:
            stop_redis_server(server)


@pytest.mark.real_redis
def test_redis_down_a_memoized_function_still_answers_even_in_debug(
        down: tuple[Flask, Cache, RedisServer], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Flask-Caching re-raises backend errors in debug mode and logs a traceback per call
    otherwise: ours raises nothing, and logs one WARNING per incident."""
    app, cache, server = down
    app.debug = True
    calls: list[int] = []

    @cache.memoize(60)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    @app.route("/page")
    @cache.cached(timeout=60)
    def page() -> str:
        return "page"

    with app.app_context():
        assert square(2) == 4 and square(2) == 4 and calls == [2]
    stop_redis_server(server)
    with caplog.at_level(logging.WARNING), app.app_context():
        assert [square(2), square(3), square(2)] == [4, 9, 4]
        assert app.test_client().get("/page").data == b"page"
        backend = cache.cache
        assert backend.get("k") is None and backend.set("k", 1) is False
        assert backend.add("k", 1) is False and backend.has("k") is False
        assert backend.get_many("a", "b") == [None, None] and backend.inc("n") is None
        assert backend.delete("k") is False and backend.set_many({"a": 1}) == []
        # Nothing was deleted or cleared, and they say so (cachelib: the keys deleted;
        # whether the cache has been cleared).
        assert backend.delete_many("a", "b") == [] and backend.unlink("a") == []
        assert cache.clear() is False
    assert calls == [2, 2, 3, 2]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)
    restarted = start_redis_server(tmp_path / "again", port=server.port)
    try:
        deadline = time.monotonic() + 5
        with app.app_context():
            while cache.set("back", 1) is False:
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.05)
            assert cache.get("back") == 1
    finally:
        stop_redis_server(restarted)
