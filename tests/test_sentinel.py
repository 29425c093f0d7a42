"""Core scenarios through Redis Sentinel (``redis+sentinel://``), and a forced failover."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .support.clients import Clients, make_settings
from .support.servers import (
    RedisServer,
    free_port,
    server_binary,
    start_redis_server,
    stop_redis_server,
)
from .test_ratelimit import test_sixth_request_of_five_per_minute  # noqa: F401
from .test_sessions import (  # noqa: F401
    test_json_values_round_trip_exactly,
    test_regenerate_moves_data_and_kills_the_old_cookie,
)
from .test_stack import test_session_writes_and_cache_in_one_stack  # noqa: F401

pytestmark = pytest.mark.real_redis
SERVICE = "rmwtest"


class SentinelSetup:
    def __init__(self, master: RedisServer, replica: RedisServer, sentinel_port: int,
                 proc: subprocess.Popen[bytes]) -> None:
        self.master, self.replica = master, replica
        self.sentinel_port, self.proc = sentinel_port, proc

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, socket_timeout=5)


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    base: Path = tmp_path_factory.mktemp("sentinel")
    master = start_redis_server(base / "master")
    replica = start_redis_server(base / "replica", "--replicaof", "127.0.0.1",
                                 str(master.port))
    port = free_port()
    conf = base / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {base}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n")
    exe = server_binary()
    assert exe is not None  # start_redis_server above would have skipped otherwise
    proc = subprocess.Popen([exe, str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    setup = SentinelSetup(master, replica, port, proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with setup.sentinel() as s, master.client() as m:
                    info = s.execute_command("SENTINEL", "REPLICAS", SERVICE)
                    if info and m.info("replication")["connected_slaves"] >= 1:
                        break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sentinel did not see the replica")
            time.sleep(0.2)
        yield setup
    finally:
        proc.terminate()
        proc.wait(10)
        stop_redis_server(replica)
        stop_redis_server(master)


@pytest.fixture
def backend_url(sentinel_setup: SentinelSetup) -> str:
    return sentinel_setup.url


class RoomWatcher(threading.Thread):
    """A subscriber of one room on its own event loop, as a server process holds one."""

    def __init__(self, settings: Any, room: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.room = settings, room
        self.items: list[Any] = []
        self.ready, self.stop = threading.Event(), threading.Event()

    def run(self) -> None:
        from redis_middleware.asgi import Broadcast

        async def watch() -> None:
            broadcast = Broadcast(self.settings)
            async with broadcast.subscribe(self.room) as subscription:
                self.ready.set()
                while not self.stop.is_set():
                    item = await subscription.get(0.1)
                    if item is not None:
                        self.items.append(item)
            await broadcast.redis.aclose()

        asyncio.run(watch())


@pytest.mark.slow
def test_apps_keep_serving_after_a_failover(sentinel_setup: SentinelSetup) -> None:
    """One forced failover (chained failovers only test Sentinel's own timing): an ASGI
    and a WSGI app both follow the new master, and so does a room's subscriber: it gets
    what is published after the failover, and a gap marker if it missed anything."""
    from redis_middleware.asgi.realtime import Gap, Message
    from redis_middleware.wsgi import Broadcast

    settings = make_settings(sentinel_setup.url, breaker_cooldown=0.2)
    asgi, wsgi = Clients("asgi", settings), Clients("wsgi", settings)
    watcher = RoomWatcher(settings, "news")
    watcher.start()
    publisher = Broadcast(settings)
    try:
        assert watcher.ready.wait(10)
        publisher.publish("news", 0)
        clients = [asgi("RedisMiddleware", limit="1000/minute"),
                   wsgi("RedisMiddleware", limit="1000/minute")]
        for client in clients:
            assert client.post("/set", json={"before": 1}).status_code == 200
        with sentinel_setup.sentinel() as s:
            old = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            s.execute_command("SENTINEL", "FAILOVER", SERVICE)
            deadline = time.monotonic() + 30
            while s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE) == old:
                assert time.monotonic() < deadline, "no failover"
                time.sleep(0.1)
        for client in clients:
            deadline = time.monotonic() + 15
            while client.post("/set", json={"after": 2}).status_code != 200:
                assert time.monotonic() < deadline, "the app did not follow the new master"
                time.sleep(0.2)
            assert client.get("/get").json()["after"] == 2
        sent = 0
        deadline = time.monotonic() + 15
        while not any(isinstance(i, Message) and i.data > 0 for i in watcher.items):
            assert time.monotonic() < deadline, "the subscriber did not follow the failover"
            sent += 1
            publisher.publish("news", sent)
            time.sleep(0.2)
        first = watcher.items[0]
        assert isinstance(first, Message) and first.data == 0
        got = [i.data for i in watcher.items if isinstance(i, Message)]
        missed = set(range(sent + 1)) - set(got)
        assert not missed or any(isinstance(i, Gap) for i in watcher.items), watcher.items
    finally:
        watcher.stop.set()
        watcher.join(10)
        publisher.redis.close()
        asgi.close()
        wsgi.close()
