"""The built-in client for a standalone Redis, against real redis-servers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as rex

from redis_middleware._redis.connections import connections_for
from redis_middleware._redis.endpoint import CLIENT_NAME, endpoint_for
from redis_middleware._redis.wire_async import AsyncWire
from redis_middleware._redis.wire_sync import SyncWire
from redis_middleware.errors import RedisCommandError, RedisUnavailableError
from redis_middleware.sansio.flow import Call, Script

from .support.clients import make_settings
from .support.servers import RedisServer, start_redis_server, stop_redis_server

pytestmark = pytest.mark.real_redis

# Commands whose replies redis-py post-processes (or not): the built-in client must
# return exactly what redis-py's execute_command returns.
PARITY = [
    ("SET", "p:s", "v"), ("GET", "p:s"), ("GET", "p:missing"), ("PING",),
    ("ZADD", "p:z", 1.5, "a", 3, "b"), ("ZSCORE", "p:z", "a"), ("ZMSCORE", "p:z", "a", "zz"),
    ("ZRANGE", "p:z", 0, -1, "WITHSCORES"), ("HSET", "p:h", "f", "1", "g", "2"),
    ("HGETALL", "p:h"), ("EXPIRE", "p:h", 100), ("TTL", "p:h"), ("PTTL", "p:missing"),
    ("CONFIG", "GET", "maxmemory-policy"), ("EXISTS", "p:s", "p:h"),
    ("EVAL", "return {1, 'x', false}", 0), ("DEL", "p:s", "p:z", "p:h"),
]


def endpoint(url: str, timeout: float = 2.0) -> Any:
    found = endpoint_for(url, 1.0, timeout)
    assert found is not None
    return found


def our_clients(admin: redis.Redis) -> list[dict[str, Any]]:
    return [c for c in admin.client_list() if c.get("name") == CLIENT_NAME]


def _parity_keys(admin: redis.Redis) -> None:
    admin.delete("p:s", "p:z", "p:h")


def test_replies_match_redis_py_exactly(redis_server: RedisServer) -> None:
    """The same commands from the same state: redis-py's replies, then ours."""
    wire = SyncWire(endpoint(redis_server.url), 4)
    with redis_server.client(protocol=3) as admin:  # the protocol our client speaks
        try:
            _parity_keys(admin)
            theirs = [admin.execute_command(*command) for command in PARITY]
            _parity_keys(admin)
            ours = [wire.execute([command])[0] for command in PARITY]
            assert ours == theirs
            assert theirs[5] == 1.5 and theirs[9] == {b"f": b"1", b"g": b"2"}  # post-processed
        finally:
            wire.close()


async def test_async_replies_match_the_sync_client(redis_server: RedisServer) -> None:
    sync, wire = SyncWire(endpoint(redis_server.url), 4), AsyncWire(endpoint(redis_server.url))
    with redis_server.client() as admin:
        try:
            _parity_keys(admin)
            theirs = sync.execute(PARITY)  # one pipeline
            _parity_keys(admin)
            assert await wire.execute(PARITY) == theirs
            _parity_keys(admin)
            assert [await wire.call(command) for command in PARITY] == theirs
            _parity_keys(admin)
            assert [sync.call(command) for command in PARITY] == theirs
        finally:
            sync.close()
            await wire.aclose()


def test_error_replies_come_back_in_place_as_redis_py_exceptions(
        redis_server: RedisServer) -> None:
    wire = SyncWire(endpoint(redis_server.url), 4)
    try:
        replies = wire.execute([("SET", "w:str", "x"), ("LPUSH", "w:str", "y"),
                                ("EVALSHA", "0" * 40, 0), ("GET", "w:str"), ("DEL", "w:str")])
        assert replies[0] is True and replies[3] == b"x" and replies[4] == 1
        assert type(replies[1]) is rex.ResponseError and "WRONGTYPE" in str(replies[1])
        assert isinstance(replies[2], rex.NoScriptError)
    finally:
        wire.close()


async def test_concurrent_requests_share_one_connection_and_few_round_trips(
        redis_server: RedisServer) -> None:
    wire = AsyncWire(endpoint(redis_server.url))
    with redis_server.client() as admin:
        try:
            await wire.execute([("PING",)])
            before = admin.info("stats")["total_reads_processed"]

            async def one(i: int) -> list[Any]:
                return await wire.execute([("SET", f"w:c:{i}", i), ("GET", f"w:c:{i}"),
                                           ("DEL", f"w:c:{i}")])

            results = await asyncio.gather(*(one(i) for i in range(200)))
            reads = admin.info("stats")["total_reads_processed"] - before - 1
            assert results == [[True, str(i).encode(), 1] for i in range(200)]
            assert reads < 20  # 200 callers' batches, a handful of writes
            assert len(our_clients(admin)) == 1
        finally:
            await wire.aclose()
        for _ in range(100):  # the server sees the close a moment after it is sent
            if our_clients(admin) == []:
                break
            await asyncio.sleep(0.02)
        assert our_clients(admin) == []


async def test_a_cancelled_caller_does_not_shift_the_replies_of_others(
        redis_server: RedisServer) -> None:
    wire = AsyncWire(endpoint(redis_server.url))
    try:
        await wire.execute([("SET", "w:x", "1")])
        slow = asyncio.ensure_future(wire.execute([("BLPOP", "w:none", 0.2)]))
        await asyncio.sleep(0.05)
        slow.cancel()
        after = await wire.execute([("GET", "w:x"), ("DEL", "w:x")])
        assert after == [b"1", 1]
    finally:
        await wire.aclose()


@pytest.mark.parametrize("interface", ["sync", "async"])
def test_a_slow_reply_times_out_and_the_next_call_reconnects(interface: str,
                                                             own_server: Any) -> None:
    ep = endpoint(own_server.url, timeout=0.3)

    async def run_async() -> tuple[float, Any]:
        wire = AsyncWire(ep)
        try:
            await wire.execute([("PING",)])
            with own_server.client() as admin:
                admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
            started = time.monotonic()
            with pytest.raises(rex.TimeoutError):
                await wire.execute([("GET", "w:t")])
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.8)
            return elapsed, await wire.execute([("PING",)])
        finally:
            await wire.aclose()

    if interface == "async":
        elapsed, pong = asyncio.run(run_async())
    else:
        wire = SyncWire(ep, 2)
        try:
            wire.execute([("PING",)])
            with own_server.client() as admin:
                admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
            started = time.monotonic()
            with pytest.raises(rex.TimeoutError):
                wire.execute([("GET", "w:t")])
            elapsed = time.monotonic() - started
            time.sleep(0.8)
            pong = wire.execute([("PING",)])
        finally:
            wire.close()
    assert 0.25 < elapsed < 0.8
    assert pong == [True]


@pytest.mark.parametrize("interface", ["sync", "async"])
def test_connections_killed_between_calls_are_replaced(interface: str, own_server: Any) -> None:
    ep = endpoint(own_server.url)
    kill = ("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    async def run_async() -> list[Any]:
        wire = AsyncWire(ep)
        try:
            await wire.execute([("SET", "w:k", "v")])
            with own_server.client() as admin:
                admin.execute_command(*kill)
            await asyncio.sleep(0.05)  # the loop sees the close
            return await wire.execute([("GET", "w:k")])
        finally:
            await wire.aclose()

    if interface == "async":
        assert asyncio.run(run_async()) == [b"v"]
    else:
        wire = SyncWire(ep, 2)
        try:
            wire.execute([("SET", "w:k", "v")])
            with own_server.client() as admin:
                admin.execute_command(*kill)
            assert wire.execute([("GET", "w:k")]) == [b"v"]  # one retry, on a new connection
        finally:
            wire.close()


def test_credentials_and_database_from_the_url(tmp_path: Path) -> None:
    server = start_redis_server(tmp_path)
    try:
        with server.client() as setup:
            setup.execute_command("ACL", "SETUSER", "app", "on", ">apppw", "~*", "+@all")
            setup.config_set("requirepass", "s3cret")
        admin = redis.Redis(port=server.port, password="s3cret")
        for url in (f"redis://:s3cret@127.0.0.1:{server.port}/3",
                    f"redis://app:apppw@127.0.0.1:{server.port}/3"):
            wire = SyncWire(endpoint(url), 2)
            try:
                wire.execute([("SET", "w:db", url)])
            finally:
                wire.close()
            assert redis.Redis(port=server.port, password="s3cret", db=3).get("w:db") == (
                url.encode())
        bad = make_settings(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(RedisUnavailableError, match="unavailable"):
            connections_for(bad).run(_ping())
        admin.close()
    finally:
        stop_redis_server(server)


def _ping() -> Any:
    (pong,) = yield (Call.of("PING"),)
    return pong


def test_a_url_with_options_only_redis_py_knows_goes_through_redis_py(
        redis_server: RedisServer) -> None:
    url = redis_server.url + "?health_check_interval=10"
    assert endpoint_for(url, 1.0, 1.0) is None
    conns = connections_for(make_settings(url))
    assert conns.endpoint is None
    assert conns.run(_ping()) is True
    assert connections_for(make_settings(redis_server.url)).endpoint is not None


def test_scripts_are_loaded_once_then_run_by_sha(own_server: Any) -> None:
    conns = connections_for(make_settings(own_server.url))
    script = Script("return tonumber(ARGV[1]) + 1")

    def flow(n: int) -> Any:
        (out,) = yield (script([], [n]),)
        return out

    assert [conns.run(flow(i)) for i in range(3)] == [1, 2, 3]
    assert conns.script_loads == 1 and conns.round_trips == 4


def test_a_command_error_is_a_command_error_not_an_outage(redis_server: RedisServer) -> None:
    conns = connections_for(make_settings(redis_server.url))

    def flow() -> Any:
        yield (Call.of("SET", "w:e", "x"), Call.of("LPUSH", "w:e", "y"), Call.of("DEL", "w:e"))

    with pytest.raises(RedisCommandError, match="WRONGTYPE"):
        conns.run(flow())
    assert not conns.breaker.failing


def test_a_forked_child_opens_its_own_connection(redis_server: RedisServer) -> None:
    wire = SyncWire(endpoint(redis_server.url), 2)
    try:
        parent_id = wire.execute([("CLIENT", "ID")])[0]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report the id of the connection it used, then leave
            try:
                child_id = wire.execute([("CLIENT", "ID")])[0]
                os.write(write, str(child_id).encode())
            finally:
                os._exit(0)
        os.close(write)
        child_id = int(os.read(read, 64))
        os.close(read)
        os.waitpid(pid, 0)
        assert child_id != parent_id
        assert wire.execute([("CLIENT", "ID")]) == [parent_id]  # the parent's is intact
    finally:
        wire.close()


def test_callers_beyond_max_connections_are_served_in_turn(redis_server: RedisServer
                                                           ) -> None:
    """More threads than connections, each calling again at once: none waits out its
    ``wait`` into "all connections are busy" (which opens the breaker) while the others
    go on, because a thread that gives a connection back cannot take it again before
    the callers in line."""
    wire = SyncWire(endpoint(redis_server.url), 2, wait=0.2)  # the run lasts seconds
    wire.execute([("SET", "w:turn", "v")])
    errors: list[BaseException] = []
    served = [0] * 24

    def caller(i: int) -> None:
        try:
            for _ in range(600):
                assert wire.call(("GET", "w:turn")) == b"v"
                served[i] += 1
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(24)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and served == [600] * 24
    finally:
        wire.close()


def test_callers_beyond_max_connections_wait_then_fail(redis_server: RedisServer) -> None:
    for wait, outcome in ((2.0, "served"), (0.05, "busy")):
        wire = SyncWire(endpoint(redis_server.url), 1, wait=wait)
        blocker = threading.Thread(target=lambda w=wire: w.execute([("BLPOP", "w:none", 0.3)]))
        try:
            blocker.start()
            time.sleep(0.05)
            started = time.monotonic()
            if outcome == "served":  # waits for the one connection, then gets it
                assert wire.execute([("PING",)]) == [True]
                assert time.monotonic() - started > 0.15
            else:
                with pytest.raises(rex.ConnectionError, match="busy"):
                    wire.execute([("PING",)])
        finally:
            blocker.join()
            wire.close()


def test_tls_and_unix_socket_urls_use_the_built_in_client(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    server = start_redis_server(tmp_path, "--unixsocket", str(sock), "--unixsocketperm", "700")
    try:
        url = f"unix://{sock}?db=2"
        ep = endpoint(url)
        assert ep.path == str(sock) and ep.db == 2
        wire = SyncWire(ep, 1)
        try:
            assert wire.execute([("SET", "w:u", "1"), ("GET", "w:u")]) == [True, b"1"]
        finally:
            wire.close()
        assert redis.Redis(port=server.port, db=2).get("w:u") == b"1"
        tls = endpoint(f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none")
        assert tls.tls is not None and tls.ssl_context() is not None
    finally:
        stop_redis_server(server)


def test_resp2_on_request_matches_a_resp2_redis_py_client(redis_server: RedisServer) -> None:
    url = redis_server.url + "?protocol=2"
    ep = endpoint(url)
    assert ep.protocol == 2
    wire = SyncWire(ep, 2)
    with redis.Redis(port=redis_server.port, protocol=2) as admin:
        try:
            _parity_keys(admin)
            theirs = [admin.execute_command(*command) for command in PARITY]
            _parity_keys(admin)
            assert [wire.execute([command])[0] for command in PARITY] == theirs
            assert theirs[5] == 1.5  # ZSCORE: a bulk string in RESP2, made a float by redis-py
        finally:
            wire.close()


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_server_that_refuses_hello_and_setname_still_works(
        interface: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """RESP2-only proxies and managed services that rename HELLO or CLIENT away: the
    built-in client falls back to RESP2 and an unnamed connection, logs each once, and
    every component works (sessions, limits, cache)."""
    from .support.clients import Clients

    server = start_redis_server(tmp_path, "--rename-command", "HELLO", "",
                                "--rename-command", "CLIENT", "")
    settings = make_settings(server.url)
    clients = Clients(interface, settings)
    try:
        with caplog.at_level("WARNING", logger="redis_middleware"):
            client = clients("RedisMiddleware", limit="5/minute", routes={"/c/*": 60})
            assert client.post("/set", json={"a": 1}).status_code == 200
            assert client.get("/get").json() == {"a": 1}
            client.get("/c/item")
            assert client.get("/c/item").headers["x-cache"] == "HIT"
            assert client.get("/noop").headers["x-ratelimit-remaining"] == "0"
        messages = [r.getMessage() for r in caplog.records]
        assert sum("refuses HELLO" in m for m in messages) == 1
        assert sum("refuses CLIENT SETNAME" in m for m in messages) == 1
    finally:
        clients.close()
        stop_redis_server(server)


@pytest.mark.real_redis
@pytest.mark.parametrize("side", ["sync", "async"])
def test_one_command_replies_are_read_in_the_protocol_negotiated(side: str, tmp_path: Path
                                                                 ) -> None:
    """A server that refuses HELLO speaks RESP2: one command's reply goes through RESP2's
    callbacks (a hash comes back as a dict, not as a flat list), from the first call; an
    error reply comes back as redis-py's exception."""
    server = start_redis_server(tmp_path, "--rename-command", "HELLO", "")
    commands = [("HSET", "w:h", "f", "v", "g", "w"), ("HGETALL", "w:h"), ("SET", "w:s", "v"),
                ("LPUSH", "w:s", "x")]

    async def acalls() -> tuple[list[Any], list[Any]]:
        wire = AsyncWire(endpoint(server.url))
        try:
            return [await wire.call(c) for c in commands], await wire.execute([commands[1]])
        finally:
            await wire.aclose()

    def calls() -> tuple[list[Any], list[Any]]:
        wire = SyncWire(endpoint(server.url), 2)
        try:
            return [wire.call(c) for c in commands], wire.execute([commands[1]])
        finally:
            wire.close()

    try:
        replies, batch = calls() if side == "sync" else asyncio.run(acalls())
    finally:
        stop_redis_server(server)
    assert replies[:3] == [2, {b"f": b"v", b"g": b"w"}, True]
    assert type(replies[3]) is rex.ResponseError and "WRONGTYPE" in str(replies[3])
    assert batch == [{b"f": b"v", b"g": b"w"}]


@pytest.mark.parametrize(("hello", "old"), [
    ({b"server": b"redis", b"version": b"7.0.15"}, None),
    ({b"server": b"valkey", b"version": b"9.1.2"}, None),
    ({b"server": b"redis", b"version": b"6.2.0"}, None),
    ({b"server": b"redis", b"version": b"6.0.16"}, "redis 6.0.16"),
    ({b"server": b"redis", b"version": b"5.0.7"}, "redis 5.0.7"),
    ({b"server": b"redis", b"version": b"weird"}, None),
    ({}, None),
    ("OK", None),
])
def test_servers_older_than_6_2_are_named(hello: Any, old: str | None) -> None:
    from redis_middleware._redis.endpoint import too_old

    assert too_old(hello) == old


def test_the_server_version_is_read_from_hello_and_a_recent_one_is_quiet(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """The test server (Redis 6.2+ or Valkey) passes the check with nothing logged."""
    from redis_middleware import Settings
    from redis_middleware._redis.connections import connections_for
    from redis_middleware.sansio.flow import Call

    with caplog.at_level("ERROR", logger="redis_middleware"):
        conns = connections_for(Settings(redis_url=redis_server.url, secret_key=("s" * 40,)))

        def ping() -> Any:
            (reply,) = yield (Call.of("PING"),)
            return reply

        assert conns.run(ping()) in (b"PONG", "PONG", True)
    assert not [r for r in caplog.records if "needs Redis 6.2" in r.getMessage()]


def test_tls_options_this_redis_py_cannot_apply_are_refused_at_startup() -> None:
    """ssl_ca_path / ssl_password reach the TLS context only on redis-py 8.0+: on an
    older redis-py the URL is refused with a ConfigError naming them, never ignored."""
    from redis_middleware._redis.endpoint import _SSL_CONTEXT_ARGS, endpoint_for
    from redis_middleware.errors import ConfigError

    url = "rediss://127.0.0.1:6390/0?ssl_ca_path=/etc/ssl/certs"
    if "ca_path" in _SSL_CONTEXT_ARGS:
        built = endpoint_for(url, 0.5, 0.5)
        assert built is not None and built.tls is not None
    else:
        with pytest.raises(ConfigError, match=r"ssl_ca_path needs redis-py 8\.0"):
            endpoint_for(url, 0.5, 0.5)
