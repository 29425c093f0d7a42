"""Session scenarios, each run for ASGI and WSGI on fakeredis and on a real redis-server."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.sansio.sessions.scripts import META, MOVED

from .support import apps
from .support.audit import audit_keyspace
from .support.clients import Clients, make_settings, raw_client

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]

VALUES = {
    "s": "text é ✓", "i": 42, "f": 1.5, "t": True, "n": None,
    "l": [1, "two", [3.0]], "d": {"k": {"nested": [None, False]}},
}


def session_keys(settings: Settings) -> list[str]:
    return [k for k in audit_keyspace(settings) if ":session:{" in k]


def live_sessions(settings: Settings) -> list[str]:
    """Session hashes that hold a session (not a regenerated id's forwarding entry)."""
    client = raw_client(settings)
    return [k for k in session_keys(settings) if client.hexists(k, META)]


def cookie_of(response: Any, name: str = "session") -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header
    return None


def test_json_values_round_trip_exactly(make_client: Clients, settings: Settings) -> None:
    client = make_client(session_max_value_bytes=200)
    assert client.post("/set", json=VALUES).status_code == 200
    assert client.get("/get").json() == VALUES
    (key,) = session_keys(settings)
    redis = raw_client(settings)
    assert redis.type(key) == b"hash"
    cookie_value = client.cookies["session"]
    session_id = cookie_value.rsplit(".", 1)[0]
    dump = b"".join(k + v for k, v in redis.hgetall(key).items()) + key.encode()
    assert session_id.encode() not in dump and cookie_value.encode() not in dump
    assert redis.hget(key, "i") == b"42"  # one field per key, JSON-encoded


# A hostile JSON body: json.loads gives lone surrogates, which have no UTF-8 form.
HOSTILE = '{"v": "a\\ud800b", "\\udfff": [1], "user_id": "bob\\ud800", "s": "text é ✓"}'


def test_lone_surrogates_in_values_keys_and_the_user_round_trip(
        make_client: Clients, settings: Settings) -> None:
    """Stored ASCII-escaped (as Django's and Flask's sessions store them), and read back
    as the same strings; valid text is stored as before. The user id works for the
    per-user limit and presence."""
    from redis_middleware.wsgi import Presence

    client = make_client("RedisMiddleware", limit="100/minute", key="user")
    sent = client.post("/set", content=HOSTILE, headers={"content-type": "application/json"})
    assert sent.status_code == 200
    got = client.get("/get")
    assert got.status_code == 200 and got.json() == json.loads(HOSTILE)
    assert "x-ratelimit-remaining" in got.headers
    assert Presence(settings).online_users() == ["bob\ud800"]
    (key,) = live_sessions(settings)
    fields = raw_client(settings).hgetall(key)
    assert fields[b"v"] == b'"a\\ud800b"' and fields[b'\x01"\\udfff"'] == b"[1]"
    assert fields[b"s"] == '"text é ✓"'.encode()  # valid text: raw UTF-8, as before
    assert client.post("/set", json={"s": 1}).status_code == 200  # the rest left as stored
    assert client.get("/get").json() == {**json.loads(HOSTILE), "s": 1}


def test_cookie_attributes(make_client: Clients) -> None:
    response = make_client().post("/set", json={"a": 1})
    header = cookie_of(response)
    assert header is not None
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Secure" not in header and "Max-Age=2592000" in header
    https = make_client(https=True).post("/set", json={"a": 1})
    assert "; Secure" in (cookie_of(https) or "")


def test_a_persistent_cookie_carries_expires_beside_max_age(make_client: Clients) -> None:
    """Clients that predate Max-Age (and some test tools) read only Expires."""
    from email.utils import parsedate_to_datetime

    before = time.time()
    header = cookie_of(make_client(session_absolute_lifetime=7200).post("/set", json={"a": 1}))
    assert header is not None and "Max-Age=7200" in header
    attrs = dict(p.strip().split("=", 1) for p in header.split(";")[1:] if "=" in p)
    expires = parsedate_to_datetime(attrs["Expires"]).timestamp()
    assert before + 7200 - 1 <= expires <= time.time() + 7200 + 1
    browser_only = make_client(session_cookie_persistent=False).post("/set", json={"a": 1})
    assert "Expires" not in (cookie_of(browser_only) or "Expires")


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("x" * 10_000, id="10KB"),
        pytest.param("\u00ff\u00fe binary", id="binary"),
        pytest.param("TAMPER", id="tampered"),
        pytest.param("TRUNCATE", id="truncated"),
    ],
)
def test_bad_cookies_are_no_session_and_cost_nothing(
    make_client: Clients, settings: Settings, cookie: str
) -> None:
    good = make_client()
    good.post("/set", json={"secret": "mine"})
    real = good.cookies["session"]
    if cookie == "TAMPER":
        cookie = real[:-2] + ("AA" if not real.endswith("AA") else "BB")
    elif cookie == "TRUNCATE":
        cookie = real[:-5]
    client = make_client()
    conns = connections_for(settings)
    before = conns.commands
    response = client.get("/get", headers={"cookie": f"session={cookie}".encode("latin-1")})
    assert response.status_code == 200
    assert response.json() == {}
    assert conns.commands == before
    assert cookie_of(response) is None


def test_untouched_and_empty_sessions_set_nothing(make_client: Clients, settings: Settings) -> None:
    client = make_client()
    conns = connections_for(settings)
    for path in ("/noop", "/get"):
        response = client.get(path)
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    assert conns.commands == 0
    assert session_keys(settings) == []
    assert make_client().get("/get").headers["vary"] == "Cookie"
    assert "vary" not in make_client().get("/noop").headers


def test_round_trips_per_request(make_client: Clients, settings: Settings) -> None:
    client = make_client()
    conns = connections_for(settings)
    client.post("/set", json={"a": 1})  # create: one round trip (plus a first script load)
    client.get("/get")
    rt = conns.round_trips
    client.get("/get")
    assert conns.round_trips - rt == 1  # read
    rt = conns.round_trips
    client.post("/set", json={"b": 2})
    assert conns.round_trips - rt == 2  # read + write
    rt = conns.round_trips
    client.get("/noop")
    assert conns.round_trips - rt <= 1  # ASGI loads eagerly; WSGI not at all


def test_only_changed_fields_are_written(make_client: Clients, settings: Settings) -> None:
    client = make_client()
    client.post("/set", json={"a": 1, "b": 2, "l": []})
    (key,) = session_keys(settings)
    redis = raw_client(settings)
    redis.hset(key, "b", "99")  # another request changed b meanwhile
    client.post("/set", json={"a": 5})
    assert client.get("/get").json() == {"a": 5, "b": 99, "l": []}
    client.post("/mutate?key=l&value=x")  # in-place mutation is detected
    assert client.get("/get").json()["l"] == ["x"]
    client.post("/del?key=a")
    assert client.get("/get").json() == {"b": 99, "l": ["x"]}


def test_concurrent_requests_keep_both_changes(make_client: Clients) -> None:
    client = make_client()
    client.post("/set", json={"seed": 0})
    cookie = {"cookie": f"session={client.cookies['session']}"}
    other = make_client()

    def change(i: int) -> None:
        c = client if i % 2 else other
        assert c.post("/set", json={f"k{i}": i}, headers=cookie).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(change, range(100)))
    data = client.get("/get", headers=cookie).json()
    assert data == {"seed": 0, **{f"k{i}": i for i in range(100)}}


def test_regenerate_moves_data_and_kills_the_old_cookie(
    make_client: Clients, settings: Settings
) -> None:
    client = make_client()
    client.post("/set", json={"cart": [1, 2]})
    old = client.cookies["session"]
    response = client.post("/login?user=alice")
    new = client.cookies["session"]
    assert cookie_of(response) is not None and new != old
    assert client.get("/get").json() == {"cart": [1, 2], "user_id": "alice"}
    stale = make_client().get("/get", headers={"cookie": f"session={old}"})
    assert stale.json() == {}
    assert len(live_sessions(settings)) == 1
    # The old id's key only forwards late writes of requests that loaded it before the
    # login, for a short while; it never loads (above) and holds no data.
    (forward,) = set(session_keys(settings)) - set(live_sessions(settings))
    admin = raw_client(settings)
    assert set(admin.hkeys(forward)) == {MOVED.encode()}
    assert 0 < admin.ttl(forward) <= settings.session_regenerate_grace


def test_clear_deletes_the_hash_and_expires_the_cookie(
    make_client: Clients, settings: Settings
) -> None:
    client = make_client()
    client.post("/set", json={"a": 1})
    old = client.cookies["session"]
    response = client.post("/clear")
    header = cookie_of(response)
    assert header is not None and "Max-Age=0" in header and "Path=/" in header
    assert session_keys(settings) == []
    replay = make_client().get("/get", headers={"cookie": f"session={old}"})
    assert replay.json() == {}


def test_logout_racing_a_slow_write_leaves_no_session(
    make_client: Clients, settings: Settings
) -> None:
    client = make_client()
    client.post("/set", json={"a": 1})
    cookie = {"cookie": f"session={client.cookies['session']}"}
    slow = make_client()
    done = threading.Event()

    def slow_write() -> None:
        slow.post("/set?sleep=0.5", json={"late": True}, headers=cookie)
        done.set()

    thread = threading.Thread(target=slow_write)
    thread.start()
    assert apps.sleeping.wait(10)  # the slow request has its session: now the logout
    make_client().post("/clear", headers=cookie)
    thread.join()
    assert done.is_set()
    assert session_keys(settings) == []


def test_unknown_id_is_never_adopted(make_client: Clients, settings: Settings) -> None:
    client = make_client()
    client.post("/set", json={"a": 1})
    cookie = client.cookies["session"]
    raw_client(settings).delete(*session_keys(settings))
    fresh = make_client()
    response = fresh.post("/set", json={"b": 2}, headers={"cookie": f"session={cookie}"})
    new_cookie = cookie_of(response)
    assert new_cookie is not None and cookie not in new_cookie


def test_idle_timeout(make_client: Clients, backend_url: str) -> None:
    settings = make_settings(backend_url, session_idle_timeout=1)
    client = make_client(settings=settings)
    client.post("/set", json={"a": 1})
    time.sleep(0.6)
    assert client.get("/get").json() == {"a": 1}  # the read slides the expiry
    time.sleep(0.6)
    assert client.get("/get").json() == {"a": 1}
    time.sleep(1.2)
    assert client.get("/get").json() == {}


def test_absolute_lifetime(make_client: Clients, backend_url: str) -> None:
    settings = make_settings(backend_url, session_idle_timeout=60, session_absolute_lifetime=2,
                             session_cookie_persistent=False)
    client = make_client(settings=settings)
    client.post("/set", json={"a": 1})
    started = time.monotonic()
    for _ in range(3):
        time.sleep(0.4)
        assert client.get("/get").json() == {"a": 1}
    time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
    assert client.get("/get").json() == {}  # however active, gone after its lifetime


def test_secret_rotation_keeps_sessions_and_resigns(
    make_client: Clients, backend_url: str
) -> None:
    old, new = "o" * 40, "n" * 40
    first = make_settings(backend_url).replace(secret_key=(old,))
    client = make_client(settings=first)
    client.post("/set", json={"a": 1})
    old_cookie = client.cookies["session"]
    rotated = first.replace(secret_key=(new, old))
    client2 = make_client(settings=rotated)
    response = client2.get("/get", headers={"cookie": f"session={old_cookie}"})
    assert response.json() == {"a": 1}
    resigned = cookie_of(response)
    assert resigned is not None
    new_cookie = resigned.split(";", 1)[0].split("=", 1)[1]
    assert new_cookie != old_cookie
    only_new = make_client(settings=first.replace(secret_key=(new,)))
    assert only_new.get("/get", headers={"cookie": f"session={new_cookie}"}).json() == {"a": 1}
    assert only_new.get("/get", headers={"cookie": f"session={old_cookie}"}).json() == {}


def test_size_limits(make_client: Clients) -> None:
    client = make_client(max_fields=3, max_value_bytes=20, max_bytes=50)
    assert client.post("/set", json={"a": "x" * 30}).status_code == 413
    assert client.post("/set", json={"a": 1, "b": 2, "c": 3}).status_code == 200
    assert client.post("/set", json={"d": 4}).status_code == 413
    assert client.get("/get").json() == {"a": 1, "b": 2, "c": 3}


def test_log_out_everywhere(make_client: Clients, settings: Settings) -> None:
    phone, laptop = make_client(), make_client()
    phone.post("/login?user=bob")
    laptop.post("/login?user=bob")
    make_client().post("/login?user=carol")
    if make_client.interface == "asgi":
        import asyncio

        from redis_middleware.asgi import SessionStore as AsyncStore

        async def go() -> tuple[int, int]:
            store = AsyncStore(settings)
            try:
                listed = await store.list("bob")
                return len(listed), await store.revoke_all("bob")
            finally:
                await connections_for(settings).aclose()

        listed, revoked = asyncio.run(go())
    else:
        from redis_middleware.wsgi import SessionStore

        store = SessionStore(settings)
        infos = store.list("bob")
        assert all(i.created <= i.last_seen and i.expires_in > 0 for i in infos)
        listed, revoked = len(infos), store.revoke_all("bob")
    assert (listed, revoked) == (2, 2)
    assert phone.get("/get").json() == {}
    assert laptop.get("/get").json() == {}
    assert len(live_sessions(settings)) == 1  # carol's


def test_revoke_one_session(make_client: Clients, settings: Settings) -> None:
    from redis_middleware.wsgi import SessionStore

    phone, laptop = make_client(), make_client()
    phone.post("/login?user=dan")
    laptop.post("/login?user=dan")
    store = SessionStore(settings)
    first, second = store.list("dan")
    assert store.revoke("dan", first.ref) is True
    assert store.revoke("dan", first.ref) is False
    assert [i.ref for i in store.list("dan")] == [second.ref]
    assert sorted([phone.get("/get").json(), laptop.get("/get").json()], key=len) == [
        {}, {"user_id": "dan"}]
