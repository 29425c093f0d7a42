"""Redis Clusters of our own processes (built with CLUSTER commands) and what the
failover drills ask of them."""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .servers import RedisServer, start_redis_server, stop_redis_server


def free_cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (and below 65536)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisCluster:
    """Masters (and replicas, if asked) on loopback ports, made into a cluster with
    redis-cli."""

    servers: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def stop(self) -> None:
        for s in self.servers:
            if s.proc.poll() is None:
                stop_redis_server(s)


def start_redis_cluster(base: Path, replicas: int = 0,
                        node_timeout_ms: int = 2000) -> RedisCluster:
    """Three masters, each with ``replicas`` replicas, ready (``cluster_state:ok``).

    Built with CLUSTER commands (what ``redis-cli --cluster create`` sends), so that a
    server binary alone is enough (Redis or Valkey)."""
    cluster = RedisCluster([])
    try:
        for i in range(3 * (1 + replicas)):
            cluster.servers.append(start_redis_server(
                base / str(i), "--cluster-enabled", "yes",
                "--cluster-config-file", str(base / f"nodes-{i}.conf"),
                "--cluster-node-timeout", str(node_timeout_ms), port=free_cluster_port()))
        masters, others = cluster.servers[:3], cluster.servers[3:]
        for i, node in enumerate(masters):
            first, last = i * 16384 // 3, (i + 1) * 16384 // 3 - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        with masters[0].client() as c:
            for node in cluster.servers[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        ids = []
        for node in masters:
            with node.client() as c:
                ids.append(c.execute_command("CLUSTER", "MYID").decode())
        _wait_for(lambda: all(_knows(n, len(cluster.servers)) for n in cluster.servers),
                  "the nodes did not meet")
        for i, node in enumerate(others):
            with node.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", ids[i % 3])

        def ready() -> bool:
            for s in cluster.servers:
                with s.client() as c:
                    if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO").decode():
                        return False
                    info = c.info("replication")  # a replica counts once it has synced
                    if info["role"] == "slave" and info["master_link_status"] != "up":
                        return False
            return True

        _wait_for(ready, "the cluster did not become ready")
        return cluster
    except BaseException:
        cluster.stop()
        raise


def replication_role(server: RedisServer) -> str:
    """``master`` or ``slave``, as the server says now."""
    with server.client() as c:
        return str(c.info("replication")["role"])


def master_of(servers: list[RedisServer], key: str) -> RedisServer:
    """The cluster node that serves ``key``'s slot now."""
    alive = next(s for s in servers if s.proc.poll() is None)
    with alive.client() as c:
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        ranges = c.execute_command("CLUSTER", "SLOTS")
    port = next(r[2][1] for r in ranges if r[0] <= slot <= r[1])
    return next(s for s in servers if s.port == port)


def _knows(node: RedisServer, count: int) -> bool:
    with node.client() as c:
        lines = c.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
    return len(lines) == count and not any("handshake" in line for line in lines)


def _wait_for(condition: Any, failure: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.1)
