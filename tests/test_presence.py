"""Presence scenarios on fakeredis and on a real redis-server, ASGI and WSGI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.sansio.flow import gather
from redis_middleware.wsgi import Presence

from .support.audit import audit_keyspace
from .support.clients import Clients, make_settings, raw_client

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]


class Events:
    """Collects what is published on the presence channel."""

    def __init__(self, settings: Settings) -> None:
        self.client = raw_client(settings)
        self.pubsub = connections_for(settings).pubsub(asyncio_client=False)
        self.pubsub.subscribe(f"{settings.key_prefix}:presence:events")
        self.pubsub.get_message(timeout=1)  # the subscribe confirmation

    def drain(self, wait: float = 0.3) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message:
                out.append(json.loads(message["data"]))
        return out

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()
        connection_pool = getattr(self.pubsub, "connection_pool", None)
        if connection_pool is not None:
            connection_pool.disconnect()


@pytest.fixture
def fast(backend_url: str) -> Settings:
    return make_settings(backend_url, presence_ttl=1, presence_heartbeat_interval=0.5,
                         presence_sweep_interval=0.2, presence_grace=0.5)


@pytest.fixture
def events(fast: Settings) -> Any:
    collector = Events(fast)
    yield collector
    collector.close()


def presence_client(make_client: Clients, settings: Settings) -> Any:
    return make_client("PresenceMiddleware", settings=settings,
                       outer=(("SessionMiddleware", {}),))


def test_online_after_a_request_offline_after_ttl(
    make_client: Clients, fast: Settings, events: Events
) -> None:
    client = presence_client(make_client, fast)
    client.get("/noop")  # anonymous: nothing recorded
    presence = Presence(fast)
    assert presence.online_count() == 0
    client.post("/login?user=ann")
    client.get("/get")
    assert presence.is_online("ann") and presence.online_users() == ["ann"]
    seen = presence.last_seen("ann")
    assert seen is not None and abs(seen - time.time()) < 5
    (online,) = events.drain()
    assert (online["user"], online["status"], online["reason"]) == ("ann", "online", "heartbeat")
    time.sleep(1.1)
    assert not presence.is_online("ann")  # lease gone; a sweeper publishes it
    presence.sweep()  # the middleware's own sweeper may have been first (-1 or 0 then)
    (offline,) = events.drain()
    assert (offline["status"], offline["reason"], offline["seq"]) == ("offline", "timeout",
                                                                       online["seq"] + 1)
    assert presence.last_seen("ann") == seen  # survives going offline
    assert presence.online_users() == [] and presence.online_count() == 0


def test_a_user_id_with_a_lone_surrogate_is_a_member_like_any_other(
    make_client: Clients, fast: Settings, events: Events
) -> None:
    """A hostile JSON body's "\\ud800" (no UTF-8 form) as the session's user: online,
    listed, seen and taken offline as the same string; valid ids are stored as before."""
    client = presence_client(make_client, fast)
    user = "bob\ud800"
    body = '{"user_id": "bob\\ud800"}'
    assert client.post("/set", content=body,
                       headers={"content-type": "application/json"}).status_code == 200
    assert client.get("/get").status_code == 200
    presence = Presence(fast)
    assert presence.is_online(user) and presence.online_users() == [user]
    assert not presence.is_online("bob") and presence.last_seen(user) is not None
    assert presence.heartbeat("ann") is True
    raw = raw_client(fast).zrange(f"{fast.key_prefix}:presence:{{_}}:online", 0, -1)
    assert sorted(raw) == [b'\x00"bob\\ud800"', b"ann"]  # "ann" as before
    assert [(e["user"], e["status"]) for e in events.drain()] == [
        (user, "online"), ("ann", "online")]
    time.sleep(1.1)
    presence.sweep()  # the middleware's own sweeper may have been first
    assert sorted(e["user"] for e in events.drain()) == ["ann", user]
    assert presence.online_users() == [] and presence.last_seen(user) is not None
    assert presence.heartbeat(user) is True and presence.remove(user) is True
    assert presence.online_users() == []


def test_throttling_costs_one_write_per_interval(make_client: Clients, settings: Settings) -> None:
    client = presence_client(make_client, settings)
    client.post("/login?user=bo")
    conns = connections_for(settings)
    before = conns.commands
    for _ in range(100):
        client.get("/noop")
    # Each request loads its session (one command, to know the user); presence
    # itself writes once (the first request after login), then nothing more
    # until the heartbeat interval has passed.
    assert conns.commands - before == 100 + 1
    assert Presence(settings).is_online("bo")


def test_two_devices_and_two_sweepers_publish_once(fast: Settings, events: Events) -> None:
    phone, laptop = Presence(fast), Presence(fast)
    assert phone.heartbeat("cy", conn="phone") is True
    assert laptop.heartbeat("cy", conn="laptop") is False
    time.sleep(1.1)
    results: list[int] = []
    threads = [threading.Thread(target=lambda p=p: results.append(p.sweep()))
               for p in (phone, laptop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[-1] == 1 and results.count(1) == 1
    assert [e["status"] for e in events.drain()] == ["online", "offline"]


def test_explicit_remove_is_offline_at_once(fast: Settings, events: Events) -> None:
    presence = Presence(fast)
    presence.heartbeat("dee")
    assert presence.remove("dee") is True
    assert presence.remove("dee") is False
    assert [(e["status"], e["reason"]) for e in events.drain()] == [
        ("online", "heartbeat"), ("offline", "explicit")]
    assert not presence.is_online("dee")


def test_coming_back_before_the_sweep_publishes_both_transitions(
    fast: Settings, events: Events
) -> None:
    presence = Presence(fast)
    presence.heartbeat("eve")
    time.sleep(1.1)
    presence.heartbeat("eve")
    assert [e["status"] for e in events.drain()] == ["online", "offline", "online"]


def test_websocket_leases_and_reload_grace(fast: Settings, events: Events) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route, WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    from redis_middleware.asgi import PresenceMiddleware, SessionMiddleware

    from .support import apps

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.close()

    inner = Starlette(routes=[WebSocketRoute("/ws", ws),
                              Route("/login", apps._asgi_endpoint, methods=["POST"])])
    app = SessionMiddleware(PresenceMiddleware(inner, fast), fast)
    presence = Presence(fast)
    with TestClient(app) as client:
        client.post("/login?user=flo")
        events.drain()
        presence.remove("flo")
        events.drain()
        with client.websocket_connect("/ws") as socket:
            assert presence.is_online("flo")
            socket.send_text("hi")
        with client.websocket_connect("/ws") as socket:  # a reload, within the grace period
            socket.send_text("hi")
        time.sleep(0.3)
        presence.sweep()  # within the grace period: nobody goes offline
        client.portal.call(connections_for(fast).aclose)
    published = events.drain()
    assert [e["status"] for e in published] == ["online"]
    time.sleep(0.6)
    presence.sweep()
    assert [e["status"] for e in events.drain()] == ["offline"]


def test_counts_and_lists_at_ten_thousand_users(settings: Settings) -> None:
    presence = Presence(settings)
    core, conns = presence.core, connections_for(settings)
    users = [f"u{i:05d}" for i in range(10_000)]
    for start in range(0, len(users), 1000):
        conns.run(gather(*(core.heartbeat_flow(u) for u in users[start:start + 1000])))
    assert presence.online_count() == 10_000
    page = presence.online_users(offset=0, limit=100)
    assert len(page) == 100 and set(page) <= set(users)
    assert len(presence.online_users()) == 10_000
    presence.remove("u00042")
    assert presence.online_count() == 9_999
    assert not presence.is_online("u00042") and presence.is_online("u00043")
    assert len(audit_keyspace(settings)) <= 10_010


def test_rooms_are_separate(settings: Settings) -> None:
    presence = Presence(settings)
    presence.heartbeat("gil", room="lobby")
    assert presence.is_online("gil", room="lobby") and not presence.is_online("gil")
    assert presence.online_count(room="lobby") == 1 and presence.online_count() == 0


def test_event_helpers(settings: Settings) -> None:
    from redis_middleware.asgi import Presence as AsyncPresence

    sync_presence = Presence(settings)
    received: list[Any] = []

    def listen() -> None:
        for event in sync_presence.events(timeout=1.0):
            received.append(event)
            if len(received) == 2:
                return

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.3)

    async def produce() -> list[Any]:
        presence = AsyncPresence(settings)
        got: list[Any] = []

        async def consume() -> None:
            async for event in presence.events():
                got.append(event)
                if len(got) == 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        assert await presence.heartbeat("hal") is True
        assert await presence.remove("hal") is True
        await asyncio.wait_for(task, 5)
        await connections_for(settings).aclose()
        return got

    got = asyncio.run(produce())
    listener.join(5)
    for stream in (got, received):
        assert [(e.user, e.status) for e in stream] == [("hal", "online"), ("hal", "offline")]
        assert stream[1].seq == stream[0].seq + 1


@pytest.mark.real_redis
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_redis_down_skips_heartbeats(interface: str, tmp_path: Any) -> None:
    from .support.servers import start_redis_server, stop_redis_server

    server = start_redis_server(tmp_path)
    settings = make_settings(server.url, breaker_cooldown=0.2, presence_heartbeat_interval=0.1,
                             presence_sweep_interval=0.1)
    clients = Clients(interface, settings)
    try:
        client = clients("PresenceMiddleware", outer=(("SessionMiddleware", {}),))
        client.post("/login?user=ivy")
        stop_redis_server(server)
        for _ in range(3):
            time.sleep(0.12)
            assert client.get("/noop").status_code == 200
    finally:
        clients.close()
        if server.proc.poll() is None:  # the test failed before stopping it
            stop_redis_server(server)


def test_due_sweep_and_heartbeat_share_one_round_trip(make_client: Clients,
                                                       backend_url: str) -> None:
    settings = make_settings(backend_url, presence_sweep_interval=0.2,
                             presence_heartbeat_interval=0.2)
    client = presence_client(make_client, settings)
    client.post("/login?user=rt")
    client.get("/noop")  # the first heartbeat and sweep (scripts loaded)
    conns = connections_for(settings)
    time.sleep(0.25)  # both the sweep and the heartbeat are due again
    before = conns.round_trips - conns.script_loads
    client.get("/noop")
    # One to load the session (to know the user), one for presence: never three.
    assert conns.round_trips - conns.script_loads - before == 2



@pytest.mark.parametrize("middleware", ["PresenceMiddleware", "RedisMiddleware"])
@pytest.mark.parametrize("kind", ["bearer", "header:X-Api-Key"])
def test_api_clients_are_online_by_their_hashed_credential(
        make_client: Clients, settings: Settings, middleware: str, kind: str) -> None:
    """presence_key="bearer" (or header:<Name>): a request's credential is who is online,
    hashed as the rate limiter keys it; without one, the session's user as before."""
    import hashlib

    settings = settings.replace(presence_key=kind)
    client = make_client(middleware, settings=settings)
    header = ("Authorization", "Bearer tok-123") if kind == "bearer" else ("X-Api-Key", "tok-123")
    assert client.get("/noop", headers=[header]).status_code == 200
    label = "bearer" if kind == "bearer" else "header:x-api-key"
    expected = f"{label}:{hashlib.sha256(b'tok-123').hexdigest()[:32]}"
    online = Presence(settings).online_users()
    assert online == [expected] and "tok-123" not in str(online)
    assert all("tok-123" not in k for k in audit_keyspace(settings))


def test_a_presence_key_must_name_a_credential() -> None:
    from redis_middleware.errors import ConfigError

    for bad in ("ip", "user_or_ip", "header:", "cookie"):
        with pytest.raises(ConfigError):
            Settings(presence_key=bad)


def test_a_wsgi_sweeper_stops_when_closed_and_starts_again_on_use(settings: Settings) -> None:
    """``close()`` (a worker's shutdown) stops the sweeper thread at once, even between
    sweeps; a later request starts a new one."""
    from redis_middleware.wsgi import PresenceMiddleware

    from .support import apps

    middleware = PresenceMiddleware(apps.wsgi_app, settings.replace(
        presence_sweep_interval=30))
    middleware.start_sweeper()
    first = middleware._sweeper
    assert first is not None and first.is_alive()
    started = time.monotonic()
    middleware.close()
    assert not first.is_alive() and time.monotonic() - started < 2  # not after 30 s
    middleware.start_sweeper()
    again = middleware._sweeper
    assert again is not None and again is not first and again.is_alive()
    middleware.close()
    assert not again.is_alive()
