"""Redis Cluster drills. (The scenario modules run on a three-master cluster too: their
``scenarios`` marker adds it to their backends, see ``conftest.pytest_generate_tests``.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redis_middleware._redis.connections import connections_for

from .support.clients import Clients, make_settings, raw_client
from .support.cluster import master_of, replication_role, start_redis_cluster

pytestmark = pytest.mark.real_redis


def _eventually(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.slow
def test_apps_follow_cluster_failovers(tmp_path: Path) -> None:
    """Three masters with a replica each. A manual failover of every master (``CLUSTER
    FAILOVER`` on each replica) loses no session data; then the master holding a session
    is killed outright and its replica takes over. ASGI and WSGI apps follow both, with a
    503 at worst while a master is missing, never a 500."""
    cluster = start_redis_cluster(tmp_path, replicas=1, node_timeout_ms=1000)
    settings = make_settings(cluster.url, breaker_cooldown=0.2)
    asgi, wsgi = Clients("asgi", settings), Clients("wsgi", settings)
    statuses: list[int] = []

    def write_until_ok(client: Any, payload: dict[str, int]) -> None:
        def ok() -> bool:
            statuses.append(client.post("/set", json=payload).status_code)
            return statuses[-1] == 200
        _eventually(ok, "the app did not follow the new master")

    try:
        clients = [asgi("RedisMiddleware", limit="10000/minute"),
                   wsgi("RedisMiddleware", limit="10000/minute")]
        for client in clients:
            write_until_ok(client, {"before": 1})
        replicas = [s for s in cluster.servers if replication_role(s) == "slave"]
        for replica in replicas:
            with replica.client() as c:
                c.execute_command("CLUSTER", "FAILOVER")
        _eventually(lambda: all(replication_role(r) == "master" for r in replicas), "no failover")
        for client in clients:
            write_until_ok(client, {"after": 2})
            assert client.get("/get").json() == {"before": 1, "after": 2}

        admin = raw_client(settings)
        session_key = next(k.decode() for k in admin.scan_iter(
            match=f"{settings.key_prefix}:session:*", target_nodes="primaries")
            if admin.type(k) == b"hash")
        admin.close()
        victim = master_of(cluster.servers, session_key)
        # redis-py's sync cluster client asks one "default" node for script keys; make it
        # the victim, so that every run also covers losing that node.
        sync_client = connections_for(settings).sync_client()
        sync_client.set_default_node(sync_client.get_node("127.0.0.1", victim.port))
        victim.proc.kill()
        victim.proc.wait()
        for client in clients:
            write_until_ok(client, {"after_kill": 3})
            assert client.get("/get").status_code == 200
        assert set(statuses) <= {200, 503}, statuses
    finally:
        asgi.close()
        wsgi.close()
        cluster.stop()
