"""What a request costs Redis: the commands an authenticated read runs, counted on a real
server (commands inside scripts included), and the bound the session's sliding expiry
keeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_middleware import Settings
from redis_middleware.sansio.sessions.scripts import META, b36

from .support.clients import Clients, make_settings
from .support.servers import RedisServer

pytestmark = pytest.mark.real_redis


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def commands(admin: redis.Redis) -> dict[str, int]:
    """Calls per command since the last reset (CONFIG RESETSTAT)."""
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def counted(admin: redis.Redis, run: Any) -> dict[str, int]:
    admin.config_resetstat()
    run()
    found = commands(admin)
    found.pop("config|resetstat", None)
    found.pop("config", None)
    return found


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_an_authenticated_read_runs_at_most_four_commands(
    interface: str, redis_server: RedisServer, admin: redis.Redis
) -> None:
    """The one-line stack on a signed-in request (session cookie, a per-IP limit,
    presence on): one round trip, the session's HGETALL alone while its last slide is
    recent, and the limit's INCRBY and PTTL inside its script."""
    settings = make_settings(redis_server.url, session_slide_interval=60)
    clients = Clients(interface, settings)
    client = clients("RedisMiddleware", limit="1000/minute", key="ip")
    try:
        client.post("/login?user=ada")
        assert client.get("/get").json() == {"user_id": "ada"}  # first heartbeat, scripts
        reads = 20
        used = counted(admin, lambda: [client.get("/get") for _ in range(reads)])
        assert used.get("evalsha", 0) == reads, used  # the limit's script only
        assert used.get("hgetall", 0) == reads, used
        assert sum(used.values()) <= 4 * reads, used
        assert used.get("hset", 0) == 0 and used.get("pexpire", 0) == 0, used
        assert client.get("/get").json() == {"user_id": "ada"}
    finally:
        clients.close()


def session_key(admin: redis.Redis, settings: Settings) -> bytes:
    (key,) = [k for k in admin.scan_iter(f"{settings.key_prefix}:session:*")
              if b":user:" not in k]
    return key


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_read_without_the_script_still_sees_what_others_did(
    interface: str, redis_server: RedisServer, admin: redis.Redis
) -> None:
    """Reads after a recent slide skip the load script: what another process changed
    meanwhile is still seen, and a session it deleted is gone."""
    settings = make_settings(redis_server.url, session_slide_interval=60)
    clients = Clients(interface, settings)
    client = clients()
    try:
        client.post("/set", json={"a": 1})
        assert client.get("/get").json() == {"a": 1}  # the script: the slide is known
        key = session_key(admin, settings)
        admin.hset(key, "b", "2")  # another process writes a key
        seen: list[Any] = []
        used = counted(admin, lambda: seen.append(client.get("/get").json()))
        assert used.get("hgetall", 0) == 1 and "evalsha" not in used, used
        assert seen == [{"a": 1, "b": 2}]
        admin.delete(key)  # ... or ends the session
        assert client.get("/get").json() == {}
        assert not admin.exists(key)  # a read never brings it back
    finally:
        clients.close()


def test_a_read_without_the_script_keeps_the_absolute_lifetime(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    """A session whose absolute lifetime is over is no session on a read without the
    script either (as when a lower lifetime is deployed: the key's TTL was set under the
    old one)."""
    settings = make_settings(redis_server.url, session_slide_interval=60,
                             session_absolute_lifetime=3600)
    clients = Clients("asgi", settings)
    client = clients()
    try:
        client.post("/set", json={"a": 1})
        assert client.get("/get").json() == {"a": 1}
        key = session_key(admin, settings)
        meta = admin.hget(key, META)
        assert meta is not None
        created36, _, last36 = meta.decode().partition(":")
        # Created an hour before: its lifetime is over (the last slide stays recent).
        admin.hset(key, META, f"{b36(int(created36, 36) - 3_600_000)}:{last36}")
        seen: list[Any] = []
        used = counted(admin, lambda: seen.append(client.get("/get").json()))
        assert "evalsha" not in used, used
        assert seen == [{}]
    finally:
        clients.close()


@pytest.mark.parametrize("interval", [0, 60], ids=["script", "no-script"])
def test_an_old_cookie_after_a_login_is_no_session_without_the_script(
    interval: int, redis_server: RedisServer, admin: redis.Redis
) -> None:
    """The id a login replaced keeps only a forwarding field for a while: a read of it
    that skips the script finds no session there, as the script does, and its holder's
    write starts a session of its own."""
    settings = make_settings(redis_server.url, session_slide_interval=interval)
    clients = Clients("wsgi", settings)
    client = clients()

    def as_holder_of(cookie: str) -> dict[str, str]:
        client.cookies.clear()  # only this cookie is sent
        return {"cookie": f"session={cookie}"}

    try:
        client.post("/set", json={"a": 1})
        old = client.cookies["session"]
        assert client.get("/get").json() == {"a": 1}  # this process knows its slide
        client.post("/login?user=ada")
        new = client.cookies["session"]
        assert client.get("/get").json() == {"a": 1, "user_id": "ada"}
        used = counted(admin, lambda: client.post("/set", json={"x": 1},
                                                  headers=as_holder_of(old)))
        if interval:  # the write's own load skipped the script
            assert used.get("hgetall", 0) == 1, used
        own = client.cookies.get("session")
        assert own not in (None, old, new)
        assert client.get("/get", headers=as_holder_of(own)).json() == {"x": 1}
        assert client.get("/get", headers=as_holder_of(new)).json() == {
            "a": 1, "user_id": "ada"}
        seen: list[Any] = []
        used = counted(admin, lambda: seen.append(
            client.get("/get", headers=as_holder_of(old)).json()))
        assert seen == [{}]
        if interval:
            assert "evalsha" not in used and used.get("hgetall", 0) == 1, used
    finally:
        clients.close()


def test_the_idle_expiry_slides_once_per_interval(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    settings = make_settings(redis_server.url, session_idle_timeout=60,
                             session_slide_interval=0.4)
    clients = Clients("asgi", settings)
    client = clients()
    try:
        client.post("/set", json={"a": 1})
        key = session_key(admin, settings)
        time.sleep(0.15)
        assert client.get("/get").json() == {"a": 1}
        first = admin.pttl(key)
        assert first < 59_900  # not slid: the write was 0.15 s ago, under the interval
        time.sleep(0.4)
        assert client.get("/get").json() == {"a": 1}
        assert admin.pttl(key) > first  # slid: the interval has passed
    finally:
        clients.close()


def test_no_interval_slides_every_read(redis_server: RedisServer, admin: redis.Redis) -> None:
    settings: Settings = make_settings(redis_server.url, session_idle_timeout=60,
                                       session_slide_interval=0)
    clients = Clients("wsgi", settings)
    client = clients()
    try:
        client.post("/set", json={"a": 1})
        client.get("/get")
        used = counted(admin, lambda: [client.get("/get") for _ in range(5)])
        assert used.get("pexpire", 0) == 5, used
    finally:
        clients.close()
