"""A process forked while another of its threads held one of the package's locks (a
request thread of a server that forks, a thread building a Cluster client, which
connects under its lock): the child must not wait for a thread it does not have."""

from __future__ import annotations

import os
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis import connections
from redis_middleware._redis.connections import connections_for
from redis_middleware.sansio.flow import Call

from .support.clients import make_settings
from .support.forks import held, in_forked_child
from .support.servers import RedisServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


def one_get(key: str) -> Any:
    (value,) = yield (Call.of("GET", key),)
    return value


def test_a_child_forked_while_a_thread_held_the_connections_locks_uses_them(
        redis_server: RedisServer) -> None:
    settings = make_settings(redis_server.url)
    conns = connections_for(settings)  # nothing run yet: the child's first use builds
    other: Settings = make_settings(redis_server.url, socket_timeout=3.5)

    def child() -> bytes:
        value = conns.run(one_get("fork-safety:missing"))  # builds its client: the lock
        fresh = connections_for(other)  # a new target: the registry's lock
        return f"{value}:{fresh.run(one_get('fork-safety:missing'))}".encode()

    with held(connections._registry_lock), held(conns._lock):
        got = in_forked_child(child)
    assert got == b"None:None", "the forked child hung on a lock its parent's thread held"


def test_a_child_forked_while_a_thread_built_a_flask_cache_store_builds_its_own(
        redis_server: RedisServer) -> None:
    """The Flask-Caching backend's stores, shared by apps of one configuration, are built
    under a lock: a child forked while a thread of its parent held it builds its own."""
    from flask import Flask
    from flask_caching import Cache

    from redis_middleware import flask_cache

    settings = make_settings(redis_server.url)

    def child() -> bytes:
        app = Flask(__name__)
        app.config.update(CACHE_TYPE="redis_middleware.flask.FlaskCache",
                          CACHE_REDIS_URL=settings.redis_url,
                          CACHE_OPTIONS={"key_prefix": settings.key_prefix,
                                         "secret_key": settings.secret_key})
        cache = Cache(app)
        with app.app_context():
            cache.set("k", "v")
            return str(cache.get("k")).encode()

    with held(flask_cache._shared_lock):
        got = in_forked_child(child)
    assert got == b"v", "the forked child hung on a lock its parent's thread held"


def test_a_child_forked_after_its_parent_swept_presence_sweeps_too(
        redis_server: RedisServer) -> None:
    """A WSGI app that served requests (its presence sweeper thread running) and then
    forked: the child's first request starts a sweeper of its own (the parent's thread
    did not come along), even with the sweeper's lock held by a thread at the fork."""
    import threading

    from redis_middleware.wsgi import PresenceMiddleware

    from .support import apps

    middleware = PresenceMiddleware(apps.wsgi_app, make_settings(
        redis_server.url, presence_sweep_interval=30))

    def sweepers() -> int:
        return sum(t.name == "redis-middleware-presence-sweeper" and t.is_alive()
                   for t in threading.enumerate())

    def child() -> bytes:
        before = sweepers()
        list(middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "t",
                         "SERVER_PORT": "80", "wsgi.url_scheme": "http"},
                        lambda status, headers, exc_info=None: None))
        return f"{before}:{sweepers()}".encode()

    try:
        middleware.start_sweeper()  # as the parent's first request does
        with held(middleware._lock):
            got = in_forked_child(child)
    finally:
        middleware.close()
    assert got == b"0:1", f"sweepers in the child before and after a request: {got!r}"


def test_a_child_forked_while_a_thread_started_the_refresh_threads_refreshes(
        redis_server: RedisServer) -> None:
    """The data cache's background refreshes run on a pool of threads started under a
    lock: a child forked while a thread of its parent held that lock serves a stale value
    and refreshes it in the background with threads of its own."""
    import time

    from redis_middleware import DataCache
    from redis_middleware.datacache import refresh

    settings = make_settings(redis_server.url)
    runs = iter(range(1, 100))

    def child() -> bytes:
        cache = DataCache(settings)

        def read() -> int:
            return int(cache.get_or_set("fork:stale", lambda: next(runs), ttl=0.2, stale=30))

        first = read()
        time.sleep(0.3)  # stale now: served, and refreshed in the background
        stale = later = read()
        deadline = time.monotonic() + 5
        while later == first and time.monotonic() < deadline:
            time.sleep(0.02)
            later = read()  # the stale value until the refresh has stored its own
        return f"{first}:{stale}:{later}".encode()

    with held(refresh._pool_lock):
        got = in_forked_child(child)
    first, stale, later = (int(n) for n in (got or b"0:0:0").split(b":"))
    assert (first, stale) == (1, 1) and later > 1, f"first, stale, refreshed: {got!r}"


def test_a_refresh_running_in_the_parent_at_the_fork_does_not_stop_the_childs() -> None:
    """A key whose background refresh ran in a thread of the parent at the fork: the
    child, which has no such thread, refreshes that key itself when it is stale."""
    import threading

    from redis_middleware.datacache.refresh import Refresher

    gate = threading.Event()

    class Blocked:  # the parent's refresh, in flight at the fork
        def run(self, flow: object) -> None:
            gate.wait(10)

    refresher = Refresher(Blocked())  # type: ignore[arg-type]
    refresher.refresh("k", iter(()))  # type: ignore[arg-type]
    try:
        got = in_forked_child(lambda: str(refresher.refreshing("k")).encode())
    finally:
        gate.set()
    assert got == b"False", "the child would wait for the parent's refresh thread"
