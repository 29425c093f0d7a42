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
