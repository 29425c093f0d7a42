"""The fixtures: a private redis-server, backends, the client matrix and the keyspace
audit. What they build lives in ``tests/support/``; the pure tests of ``tests/sansio/``
use none of them (their own conftest turns off the clean-up below)."""
# ruff: noqa: E402 (the helpers are imported after their assertions are registered)

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The helpers' asserts explain their failures as the tests' own do: registered before
# the imports below load them.
pytest.register_assert_rewrite("tests.support")

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support.audit import audit_keyspace
from .support.clients import Clients, close_sync_clients, make_settings
from .support.cluster import RedisCluster, start_redis_cluster
from .support.servers import RedisServer, start_redis_server, stop_redis_server

# The demos' product table (examples/_pages.py): one SQLite file per test process, since
# parallel test processes run the demos side by side and rename products.
_DEMO_DB = Path(tempfile.gettempdir()) / f"redis-middleware-tests-demo-{os.getpid()}.sqlite3"
_DEMO_DB.unlink(missing_ok=True)  # a file an earlier run left under this process id
os.environ["DEMO_DB"] = str(_DEMO_DB)


def pytest_unconfigure(config: pytest.Config) -> None:
    _DEMO_DB.unlink(missing_ok=True)  # this process's demo table: nothing left behind


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses a backend runs on memory:// and a real server; a test of a
    scenario module (``pytestmark = pytest.mark.scenarios``) also on a Redis Cluster."""
    if "backend_url" not in metafunc.fixturenames:
        return
    params: list[Any] = ["memory", pytest.param("redis", marks=pytest.mark.real_redis)]
    if metafunc.definition.get_closest_marker("scenarios") is not None:
        params.append(pytest.param("cluster", marks=pytest.mark.real_redis))
    metafunc.parametrize("backend_url", params, indirect=True)


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


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


@pytest.fixture
def conns(settings: Settings) -> Any:
    return connections_for(settings)


@pytest.fixture(params=["asgi", "wsgi"])
def make_client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Clients]:
    clients = Clients(request.param, settings)
    yield clients
    clients.close()


@pytest.fixture
def audit(settings: Settings) -> Iterator[None]:
    """Run the keyspace audit after the test."""
    yield
    audit_keyspace(settings)


@pytest.fixture(autouse=True)
def _reset_app_calls() -> None:
    from .support import apps

    apps.calls.clear()
    apps.sleeping.clear()


@pytest.fixture(autouse=True)
def _close_sync_clients() -> Iterator[None]:
    yield
    close_sync_clients()


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """Give the root logger back its level and handlers after every test: an app that
    configures logging when it starts (Litestar's default sets the root to INFO) would
    otherwise change what every later test in the process logs and captures."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after every test: a socket a test left open is reported by that test,
    not by whichever later test happens to trigger the collector."""
    yield
    import gc

    gc.collect()
