"""Django: the session engine behaves as Django's engines do (the behaviours Django's own
backend tests check, written here as our tests), contrib.auth / messages / admin work on
it, and the middleware count, cache and see ``request.user``; on memory:// and a real
redis-server, through Django's test client and real servers (gunicorn, uvicorn)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest

from redis_middleware.config.settings import Settings

from .support.clients import SECRET, raw_client
from .support.django_project import configured, django_project, redis_keys, store

__all__ = ["configured", "django_project"]  # the fixtures this module uses


# -- the engine: what Django's backend tests check ---------------------------------------
def test_a_new_session_is_neither_accessed_nor_modified(configured: Settings) -> None:
    s = store()
    assert (s.modified, s.accessed) == (False, False)
    assert s.get("cat") is None
    assert s.accessed and not s.modified


def test_setting_popping_and_defaults_mark_the_session(configured: Settings) -> None:
    s = store()
    s["cat"] = "dog"
    assert s.modified
    assert s.pop("cat") == "dog"
    fresh = store()
    assert fresh.pop("absent", "default") == "default"
    assert fresh.accessed and not fresh.modified
    with pytest.raises(KeyError):
        fresh.pop("absent")
    assert fresh.setdefault("foo", "bar") == "bar"
    assert fresh.setdefault("foo", "baz") == "bar"
    fresh.update({"n": 1})
    assert fresh.modified and fresh["n"] == 1


def test_reading_after_a_reset_marks_accessed_not_modified(configured: Settings) -> None:
    s = store()
    s["x"] = 1
    s.modified = s.accessed = False
    assert list(s.keys()) == ["x"] and list(s.values()) == [1] and list(s.items()) == [("x", 1)]
    assert "x" in s
    assert s.accessed and not s.modified
    s.clear()
    assert list(s.items()) == [] and s.modified


def test_save_exists_delete(configured: Settings) -> None:
    s = store()
    s["a"] = "b"
    s.save()
    assert s.exists(s.session_key)
    assert s["a"] == "b"  # saving keeps the data
    s.delete(s.session_key)
    assert not s.exists(s.session_key)
    assert redis_keys(configured) == []


def test_flush_deletes_and_forgets_the_key(configured: Settings) -> None:
    s = store()
    s["foo"] = "bar"
    s.save()
    old = s.session_key
    s.flush()
    assert not s.exists(old)
    assert s.session_key is None
    assert s.modified and s.accessed


def test_cycle_key_keeps_the_data_and_kills_the_old_key(configured: Settings) -> None:
    s = store()
    s["a"], s["b"] = "c", "d"
    s.save()
    old, data = s.session_key, list(s.items())
    s.cycle_key()
    assert s.session_key != old
    assert not s.exists(old)
    assert s.exists(s.session_key)
    assert list(s.items()) == data
    reloaded = store(s.session_key)
    assert dict(reloaded.items()) == dict(data)
    assert dict(store(old).items()) == {}  # the old cookie is no session


def test_cycle_key_of_a_session_not_loaded_yet(configured: Settings) -> None:
    s = store()
    s["a"], s["b"] = "c", "d"
    s.save()
    again = store(s.session_key)
    again.cycle_key()
    assert sorted(again.items()) == [("a", "c"), ("b", "d")]
    assert again.session_key != s.session_key


def test_cycle_key_of_an_unsaved_session_creates_it_at_save(configured: Settings) -> None:
    s = store()
    s["x"] = 1
    s.cycle_key()
    assert s.session_key is not None and s.modified
    s.save()
    assert dict(store(s.session_key).items()) == {"x": 1}


def test_keys_this_engine_did_not_issue_are_no_session(configured: Settings) -> None:
    from redis_middleware.sansio.sessions.cookies import new_session_id

    for bad in ("1", "", "12345678", "x" * 47, "../../etc/passwd" + "a" * 31, "a}b{" * 12):
        s = store(bad)
        assert s.session_key is None, bad
    unknown = new_session_id()
    s = store(unknown)
    assert s.load() == {}
    assert s.session_key is None  # an unknown key is never reused
    assert not s.exists(unknown)
    s["cat"] = "x"
    s.save()
    assert s.session_key not in (None, unknown)
    assert redis_keys(configured) and all(unknown.encode() not in k for k in redis_keys(configured))


def test_the_session_key_is_read_only(configured: Settings) -> None:
    s = store()
    with pytest.raises(AttributeError):
        s.session_key = "x" * 47


def test_expiry_helpers_follow_django(configured: Settings) -> None:
    from django.conf import settings as django_conf
    from django.test import override_settings
    from django.utils import timezone

    s = store()
    assert s.get_expiry_age() == django_conf.SESSION_COOKIE_AGE
    s.set_expiry(0)
    assert s.get_expiry_age() == django_conf.SESSION_COOKIE_AGE
    assert s.get_expire_at_browser_close()
    now = timezone.now()
    s.set_expiry(10)
    assert s.get_expiry_age(modification=now) == 10
    assert s.get_expiry_date(modification=now) == now + timedelta(seconds=10)
    s.set_expiry(now + timedelta(seconds=10))
    assert s.get_expiry_age(modification=now) == 10
    s.set_expiry(None)
    assert s.get_expiry_age() == django_conf.SESSION_COOKIE_AGE
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        assert store().get_expire_at_browser_close()


def test_redis_expires_the_session_when_django_says(configured: Settings) -> None:
    s = store()
    s["a"] = 1
    s.set_expiry(30)
    s.save()
    client = raw_client(configured)
    try:
        (key,) = redis_keys(configured, "session:{*")
        assert 25 <= client.ttl(key) <= 30
        s.set_expiry(None)
        s.save()
        assert client.ttl(key) > 86400  # SESSION_COOKIE_AGE (two weeks) again
    finally:
        client.close()
    past = store()
    past["foo"] = "bar"
    past.set_expiry(-timedelta(seconds=10))
    past.save()  # an expiry in the past: gone at once, no error
    assert "foo" not in store(past.session_key)


def test_a_save_never_resurrects_a_session_deleted_elsewhere(configured: Settings) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    s1 = store()
    s1["data"] = "one"
    s1.save(must_create=True)
    store(s1.session_key).delete()  # a logout in another request
    s1["data"] = "two"
    with pytest.raises(UpdateError):
        s1.save()
    assert s1.load() == {}
    assert redis_keys(configured, "session:{*") == []


def test_two_requests_changing_different_keys_both_keep_their_change(
        configured: Settings) -> None:
    s = store()
    s["a"], s["b"] = 0, 0
    s.save()
    first, second = store(s.session_key), store(s.session_key)
    first["a"], second["b"] = 1, 2
    assert first["b"] == 0 and second["a"] == 0  # both loaded before either saved
    first.save()
    second.save()
    assert dict(store(s.session_key).items()) == {"a": 1, "b": 2}


def test_only_changed_fields_are_written(configured: Settings) -> None:
    s = store()
    s["cart"], s["theme"] = ["teapot"], "dark"
    s.save()
    client = raw_client(configured)
    try:
        (key,) = redis_keys(configured, "session:{*")
        client.hset(key, "theme", '"light"')  # another request changed it meanwhile
        again = store(s.session_key)
        again["cart"] = [*again["cart"], "mug"]
        again.save()
        assert client.hget(key, "theme") == b'"light"'  # not overwritten with "dark"
        assert client.hget(key, "cart") == b'["teapot","mug"]'
    finally:
        client.close()


def test_lone_surrogates_in_keys_and_values_round_trip(configured: Settings) -> None:
    """What json.loads gives for a hostile body (``{"\\udfff": "\\ud800"}``) is saved,
    as Django's own engines save it, and loads back as the same strings."""
    hostile = json.loads('{"\\udfff": "a\\ud800", "_auth_user_id": "\\ud800", "s": "é"}')
    s = store()
    s.update(hostile)
    s.save()
    again = store(s.session_key)
    assert dict(again.items()) == hostile
    again["s"] = "ü"
    again.save()
    assert dict(store(s.session_key).items()) == {**hostile, "s": "ü"}
    (key,) = redis_keys(configured, "session:{*")
    client = raw_client(configured)
    try:
        assert client.hget(key, '\x01"\\udfff"') == b'"a\\ud800"'
        assert client.hget(key, "s") == '"ü"'.encode()  # valid text: as before
    finally:
        client.close()


def test_the_layout_is_the_middleware_s(configured: Settings) -> None:
    """One hash per session under <prefix>:session:, one field per key holding its JSON,
    the session key itself nowhere in Redis, every key with a TTL."""
    from .support.audit import audit_keyspace

    s = store()
    s.update({"user_id": "42", "cart": [1, 2], "theme": "dark"})
    s.save()
    (key,) = redis_keys(configured, "session:{*")
    client = raw_client(configured)
    try:
        fields = {k: v for k, v in client.hgetall(key).items() if not k.startswith(b"\x00")}
        assert fields == {b"user_id": b'"42"', b"cart": b"[1,2]", b"theme": b'"dark"'}
    finally:
        client.close()
    assert s.session_key.encode() not in key
    assert all(s.session_key.encode() not in k for k in redis_keys(configured, "*"))
    audit_keyspace(configured)


@pytest.mark.real_redis
def test_a_three_field_session_takes_what_the_middleware_s_takes(redis_server: Any) -> None:
    """Same memory as the ASGI/WSGI middleware's session with the same content."""
    from django.test import override_settings
    from werkzeug.test import Client

    from redis_middleware.wsgi import SessionMiddleware
    from redis_middleware.wsgi.sessions import ENVIRON_KEY

    from .support.clients import make_settings

    settings = make_settings(redis_server.url)
    with override_settings(REDIS_MIDDLEWARE={"redis_url": settings.redis_url,
                                             "key_prefix": settings.key_prefix,
                                             "secret_key": (SECRET,)}):
        s = store()
        s.update({"user_id": "42", "cart": [1, 2], "theme": "dark"})
        s.save()
        (django_key,) = redis_keys(settings, "session:{*")
        client = raw_client(settings)
        try:
            django_bytes = client.memory_usage(django_key, samples=0)
            def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
                environ[ENVIRON_KEY].update({"user_id": "43", "cart": [3, 4], "theme": "mild"})
                start_response("200 OK", [])
                return [b""]

            Client(SessionMiddleware(app, settings)).get("/")
            (middleware_key,) = [k for k in redis_keys(settings, "session:{*")
                                 if k != django_key]
            assert django_bytes == client.memory_usage(middleware_key, samples=0)
            assert django_bytes <= 200
        finally:
            client.close()


def test_round_trips(configured: Settings) -> None:
    """Loading is one round trip; a save one more; a key rotation one (a script's first
    use in the process loads it: one more, not counted)."""
    from redis_middleware._redis.connections import connections_for

    conns = connections_for(configured)

    def trips() -> int:
        return conns.round_trips - conns.script_loads

    s = store()
    s["x"] = 1
    before = trips()
    s.save()
    assert trips() - before == 1
    again = store(s.session_key)
    before = trips()
    assert again["x"] == 1
    assert trips() - before == 1
    before = trips()
    again.cycle_key()
    assert trips() - before == 1
    again["y"] = 2
    before = trips()
    again.save()
    assert trips() - before == 1


def test_must_create_of_a_given_key_is_one_round_trip(configured: Settings) -> None:
    """``save(must_create=True)`` of a key the store did not issue: the save script
    itself refuses a key in use, so no existence check goes first; a user's index
    never lists a session whose create was refused."""
    from django.contrib.sessions.backends.base import CreateError

    from redis_middleware._redis.connections import connections_for
    from redis_middleware.sansio.sessions.cookies import new_session_id
    from redis_middleware.sansio.sessions.core import SessionCore

    conns = connections_for(configured)
    store().save()  # the script is loaded on the server
    key = new_session_id()
    before = conns.round_trips
    store(key).save(must_create=True)
    assert conns.round_trips - before == 1
    assert store().exists(key)
    owner = store(key)
    owner["_auth_user_id"] = "7"
    owner.save()
    taken = store(key)
    before = conns.round_trips
    with pytest.raises(CreateError):
        taken.save(must_create=True)
    assert conns.round_trips - before == 1
    assert store(key)["_auth_user_id"] == "7"
    claimer = store(key)
    claimer["_auth_user_id"] = "8"  # loads user 7's session, then claims it
    with pytest.raises(CreateError):
        claimer.save(must_create=True)
    assert store(key)["_auth_user_id"] == "7"
    core = SessionCore(configured)
    assert conns.run(core.list_flow("8")) == []
    assert [i.ref for i in conns.run(core.list_flow("7"))] == [core.ref(key)]


def test_a_subclass_changes_the_cookie_age(configured: Settings) -> None:
    from redis_middleware.django.sessions import SessionStore

    class ShortSessions(SessionStore):
        def get_session_cookie_age(self) -> int:
            return 60

    s = ShortSessions()
    s["a"] = 1
    s.save()
    client = raw_client(configured)
    try:
        (key,) = redis_keys(configured, "session:{*")
        assert 55 <= client.ttl(key) <= 60
    finally:
        client.close()
    ShortSessions.clear_expired()  # Redis expires sessions: nothing to do, no error


def test_a_subclass_issuing_keys_of_its_own_is_a_clear_error(configured: Settings) -> None:
    """The engine accepts only the keys it issues: a subclass that makes Django-style
    keys gets a clear error from save(), not a session that create() restarts forever."""
    import asyncio

    from django.core.exceptions import ImproperlyConfigured
    from django.utils.crypto import get_random_string

    from redis_middleware.django.sessions import SessionStore

    class DjangoKeys(SessionStore):
        def _get_new_session_key(self) -> str:
            return get_random_string(32)

        async def _aget_new_session_key(self) -> str:
            return get_random_string(32)

    s = DjangoKeys()
    s["a"] = 1
    with pytest.raises(ImproperlyConfigured, match="_get_new_session_key"):
        s.save()
    a = DjangoKeys()
    a["a"] = 1
    with pytest.raises(ImproperlyConfigured, match="_get_new_session_key"):
        asyncio.run(a.asave())
    assert redis_keys(configured, "session:{*") == []


def test_a_custom_serializer_round_trips_values(configured: Settings) -> None:
    from django.test import override_settings

    with override_settings(SESSION_SERIALIZER="tests.test_django.ReprSerializer"):
        s = store()
        s["when"] = (2026, 12, 2)
        s.save()
        assert store(s.session_key)["when"] == (2026, 12, 2)


class ReprSerializer:
    """A serializer that keeps tuples (JSON would make them lists)."""

    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()

    def loads(self, data: bytes) -> Any:
        import ast

        return ast.literal_eval(data.decode())


async def test_the_async_methods(configured: Settings) -> None:
    from redis_middleware._redis.connections import connections_for

    try:
        from django.contrib.sessions.backends.base import UpdateError

        s = store()
        assert await s.aget("cat") is None
        await s.aset("a", "c")
        await s.aset("b", "d")
        await s.asave()
        assert await s.aexists(s.session_key)
        old = s.session_key
        await s.acycle_key()
        assert not await s.aexists(old) and await s.aexists(s.session_key)
        assert sorted(await s.aitems()) == [("a", "c"), ("b", "d")]
        other = store(s.session_key)
        assert await other.aget("a") == "c"
        await other.adelete()
        await s.aset("a", "z")
        with pytest.raises(UpdateError):
            await s.asave()
        assert await s.aload() == {}
        fresh = store()
        await fresh.aset("k", 1)
        await fresh.aflush()
        assert fresh.session_key is None
        await store().aclear_expired()
    finally:
        await connections_for(configured).aclose()


def test_log_out_everywhere_covers_django_logins(configured: Settings) -> None:
    from redis_middleware.wsgi import SessionStore as Sessions

    phone, laptop = store(), store()
    for s in (phone, laptop):
        s["_auth_user_id"] = "7"
        s.save()
    sessions = Sessions(configured)
    assert len(sessions.list("7")) == 2
    assert sessions.revoke_all("7") == 2
    assert store(phone.session_key).get("_auth_user_id") is None
    assert store(laptop.session_key).get("_auth_user_id") is None


# -- Django's own features on it ---------------------------------------------------------
def client() -> Any:
    from django.test import Client

    return Client(REMOTE_ADDR="10.1.2.3")


def log_in(c: Any, name: str) -> Any:
    """The demo's login form, with the account's password."""
    from examples.django_app.accounts import DEMO_USERS

    return c.post("/login", {"username": name, "password": DEMO_USERS[name]})


def test_auth_login_rotates_the_key_and_logout_deletes_the_session(
        configured: Settings) -> None:
    c = client()
    c.get("/")
    log_in(c, "alice")
    first = c.cookies["sessionid"].value
    page = c.get("/profile").content.decode()
    assert "alice" in page and "Signed in as alice." in page  # contrib.messages, in Redis
    assert "Signed in as" not in c.get("/profile").content.decode()  # shown once
    log_in(c, "bob")  # another user: the session is flushed
    assert c.cookies["sessionid"].value != first
    assert "bob" in c.get("/profile").content.decode()
    assert not store(first).exists(first)
    c.post("/logout")
    assert redis_keys(configured, "session:{*") == []
    assert "Log in" in c.get("/").content.decode()


def test_the_admin_logs_in_on_redis_sessions(configured: Settings) -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if not User.objects.filter(username="admin").exists():
        User.objects.create_superuser("admin", "admin@example.com", "a-long-password-42")
    c = client()
    login_page = c.get("/admin/login/")
    assert login_page.status_code == 200
    response = c.post("/admin/login/?next=/admin/", {
        "username": "admin", "password": "a-long-password-42", "next": "/admin/"})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert c.get("/admin/").status_code == 200
    session = store(c.cookies["sessionid"].value)
    assert session["_auth_user_id"] == str(User.objects.get(username="admin").pk)


def test_the_middleware_counts_request_user(configured: Settings) -> None:
    from django.test import override_settings

    from redis_middleware.wsgi import Presence

    with override_settings(REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,), "limit": "3/minute", "key": "user"}):
        alice, bob = client(), client()  # same address, two users
        log_in(alice, "alice")
        log_in(bob, "bob")
        statuses = [alice.get("/api/ping").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # the anonymous login was not counted
        assert bob.get("/api/ping").status_code == 200  # a different user, a fresh budget
        from django.contrib.auth import get_user_model

        pk = str(get_user_model().objects.get(username="alice").pk)
        assert Presence(configured).is_online(pk)
        counters = redis_keys(configured, "ratelimit")
        assert f"{{user%3A{pk}}}".encode() in b" ".join(counters)


def test_the_cache_serves_hits_and_keeps_the_view_s_response(configured: Settings) -> None:
    c = client()
    first = c.get("/products")
    assert first.headers["X-Cache"] == "MISS"
    second = c.get("/products")
    assert second.headers["X-Cache"] == "HIT" and second.content == first.content
    assert second.status_code == 200 and "Age" in second.headers
    c.post("/products", {"id": "1", "name": "Samovar"})
    third = c.get("/products")
    assert third.headers["X-Cache"] == "MISS" and b"Samovar" in third.content
    conditional = c.get("/products", HTTP_IF_NONE_MATCH=third.headers.get("ETag", '"x"'))
    assert conditional.status_code in (200, 304)


def _redis_down() -> Any:
    """Settings whose Redis is a loopback port nothing listens on, failing fast."""
    from django.test import override_settings

    from .support.servers import free_port

    return override_settings(REDIS_MIDDLEWARE={
        "redis_url": f"redis://127.0.0.1:{free_port()}/0", "secret_key": (SECRET,),
        "connect_timeout": 0.2, "socket_timeout": 0.2, "session_on_redis_error": "fail"})


def test_redis_down_answers_503_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with _redis_down():
        from redis_middleware.sansio.sessions.cookies import new_session_id

        c = client()
        c.cookies["sessionid"] = new_session_id()
        with caplog.at_level(logging.WARNING):
            responses = [c.get("/profile", HTTP_ACCEPT="text/html") for _ in range(3)]
        assert {r.status_code for r in responses} == {503}
        assert all(r.headers.get("Retry-After") for r in responses)
        assert "text/html" in responses[0].headers["Content-Type"]
        assert "sessionid" not in responses[0].cookies  # the cookie is left alone
        assert not [r for r in caplog.records if r.exc_info]  # no traceback
        assert len([r for r in caplog.records if "session store" in r.getMessage()]) <= 1


def test_the_middleware_s_503s_are_not_logged_again_by_django(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our one line per incident, not Django's ``django.request`` ERROR per request too."""
    from redis_middleware.sansio import incidents
    from redis_middleware.sansio.sessions.cookies import new_session_id

    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident
    with _redis_down():
        c = client()
        c.cookies["sessionid"] = new_session_id()
        with caplog.at_level(logging.WARNING):
            responses = [c.get("/") for _ in range(5)]
        assert {r.status_code for r in responses} == {503}
        assert {r.headers["Content-Type"] for r in responses} == {"application/problem+json"}
        assert not [r for r in caplog.records if r.name == "django.request"]
        assert len([r for r in caplog.records if "session store" in r.getMessage()]) == 1


def test_django_logs_each_429_but_not_the_503s_of_an_incident(
        configured: Settings, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429 is ordinary traffic: Django's ``django.request`` WARNING per refusal is kept.
    A fail-closed limiter's 503 is an incident we log once: Django logs none of them."""
    from django.test import override_settings

    from redis_middleware.sansio import incidents

    from .support.servers import free_port

    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident
    base = {"key_prefix": configured.key_prefix, "secret_key": (SECRET,), "limit": "1/minute"}
    with override_settings(REDIS_MIDDLEWARE={**base, "redis_url": configured.redis_url}):
        with caplog.at_level(logging.WARNING):
            statuses = [client().get("/api/ping").status_code for _ in range(3)]
        assert statuses == [200, 429, 429]
        assert len([r for r in caplog.records if r.name == "django.request"]) == 2
    caplog.clear()
    with override_settings(REDIS_MIDDLEWARE={
            **base, "redis_url": f"redis://127.0.0.1:{free_port()}/0", "ratelimit_fail": "closed",
            "connect_timeout": 0.2, "socket_timeout": 0.2}):
        with caplog.at_level(logging.WARNING):
            statuses = [client().get("/api/ping").status_code for _ in range(3)]
        assert statuses == [503] * 3
        assert not [r for r in caplog.records if r.name == "django.request"]
        assert len([r for r in caplog.records if "rate limit" in r.getMessage()]) <= 1


def test_redis_down_with_read_only_sessions(caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``session_on_redis_error="readonly"``: pages that read the session answer as for
    a visitor with an empty session, a login's writes are dropped with a log line, the
    browser's cookie is not replaced by a key that was never stored (the user gets their
    session back when Redis does), a logout still deletes it, and nothing answers 500."""
    from django.test import override_settings

    from redis_middleware.sansio import incidents
    from redis_middleware.sansio.sessions.cookies import new_session_id

    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident

    from .support.servers import free_port

    with override_settings(REDIS_MIDDLEWARE={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0", "secret_key": (SECRET,),
            "connect_timeout": 0.2, "socket_timeout": 0.2,
            "session_on_redis_error": "readonly"}):
        c = client()
        cookie = new_session_id()
        c.cookies["sessionid"] = cookie
        with caplog.at_level(logging.WARNING):
            pages = [c.get("/api/ping") for _ in range(3)]
            home = c.get("/", HTTP_ACCEPT="text/html")
            login = log_in(c, "alice")
        assert [p.json() for p in pages] == [{"pong": True, "user": None}] * 3
        assert home.status_code == 200
        assert login.status_code < 500
        for response in (*pages, home, login):
            assert "sessionid" not in response.cookies  # neither replaced nor deleted
        assert c.cookies["sessionid"].value == cookie
        assert not [r for r in caplog.records if r.exc_info]  # no traceback
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "read-only" in m]) == 1  # one per incident
        assert len([m for m in messages if "session changes dropped" in m]) == 1
        out = c.post("/logout")
        assert out.status_code < 500 and out.cookies["sessionid"].value == ""  # deleted


def test_the_test_client_s_session_and_force_login(configured: Settings) -> None:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="gil")
    c = client()
    c.force_login(user)
    assert c.get("/api/ping").json() == {"pong": True, "user": "gil"}
    session = c.session  # Django's Client.session: a store on our engine
    session["theme"] = "dark"
    session.save()
    assert store(c.cookies["sessionid"].value)["theme"] == "dark"
    assert c.session["_auth_user_id"] == str(user.pk)


def test_a_password_change_keeps_the_user_signed_in(configured: Settings) -> None:
    """update_session_auth_hash() rewrites the session's auth hash (and rotates the key),
    so the session stays valid after set_password()."""
    from django.contrib.auth import get_user_model, update_session_auth_hash
    from django.test import RequestFactory

    user, _ = get_user_model().objects.get_or_create(username="hana")
    c = client()
    c.force_login(user)
    key = c.cookies["sessionid"].value
    request = RequestFactory().get("/")
    request.session = store(key)
    request.user = user
    user.set_password("a-new-long-password-77")
    user.save()
    update_session_auth_hash(request, user)
    request.session.save()
    c.cookies["sessionid"] = request.session.session_key
    assert c.get("/api/ping").json()["user"] == "hana"
    assert not store(key).exists(key)  # the old key died with the rotation


def test_a_session_deleted_during_a_request_is_not_resurrected(configured: Settings) -> None:
    """Django's middleware turns the engine's UpdateError into SessionInterrupted (400)."""
    from django.contrib.sessions.exceptions import SessionInterrupted
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    s = store()
    s["a"] = 1
    s.save()

    def view(request: Any) -> HttpResponse:
        request.session["a"] = 2
        store(s.session_key).delete()  # a logout in another tab, meanwhile
        return HttpResponse("ok")

    request = RequestFactory().get("/", HTTP_COOKIE=f"sessionid={s.session_key}")
    request.COOKIES["sessionid"] = s.session_key
    with pytest.raises(SessionInterrupted):
        SessionMiddleware(view)(request)
    assert redis_keys(configured, "session:{*") == []


def test_a_background_refresh_runs_the_view_with_the_request_s_attributes(
        configured: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """stale-while-revalidate: the stale entry is served at once and the view runs again
    in a worker thread, with the same request attributes (user, session) as the
    original, never a bare request."""
    import time

    from django.test import override_settings

    from .support import django_urls

    django_urls.calls.clear()
    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,), "routes": {"/swr": {"ttl": 1, "freshness": "origin"}}}):
        c = client()
        assert c.get("/swr").headers["X-Cache"] == "MISS"
        time.sleep(1.2)
        stale = c.get("/swr")
        assert stale.headers["X-Cache"] == "STALE" and stale.content == b"render 1"
        deadline = time.monotonic() + 5
        while len(django_urls.calls) < 2:
            assert time.monotonic() < deadline, "no background refresh"
            time.sleep(0.05)
        assert django_urls.calls[1] == {"user": True, "session": True}
        time.sleep(0.2)
        assert c.get("/swr").content == b"render 2"
    assert not [r for r in caplog.records if "refresh failed" in r.getMessage()]


# -- configuration: Django's SECRET_KEY, the system check -------------------------------------
def _project_settings(monkeypatch: pytest.MonkeyPatch, **django: Any) -> Any:
    """Django's settings changed as given, with no redis-middleware secret of our own
    (neither in REDIS_MIDDLEWARE nor in the environment)."""
    from django.test import override_settings

    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return override_settings(**django)


def test_a_short_django_secret_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis_middleware.django import django_settings
    from redis_middleware.errors import ConfigError

    with _project_settings(monkeypatch, SECRET_KEY="only-twenty-chars-ab", REDIS_MIDDLEWARE={
            "redis_url": "redis://127.0.0.1:6399/0"}), pytest.raises(ConfigError) as caught:
        django_settings()
    assert caught.value.name == "SECRET_KEY"
    message = str(caught.value)
    assert "Django's SECRET_KEY" in message and "20 characters" in message
    assert "32" in message and "REDIS_MIDDLEWARE['secret_key']" in message


def test_without_django_s_secret_key_our_own_secret_is_enough(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No SECRET_KEY (``settings.configure()`` without one: Django raises when it is
    read): REDIS_MIDDLEWARE's secret is enough for the cache backend; with neither, the
    error names both."""
    from redis_middleware.django import django_settings
    from redis_middleware.django.cache import RedisCache
    from redis_middleware.errors import ConfigError

    ours = "s" * 40
    with _project_settings(monkeypatch, SECRET_KEY="", REDIS_MIDDLEWARE={
            "redis_url": "memory://", "secret_key": ours}):
        assert django_settings().secret_key == (ours,)
        cache = RedisCache("memory://", {"OPTIONS": {"NAMESPACE": "no-django-secret"}})
        cache.set("k", {"v": 1})
        assert cache.get("k") == {"v": 1}
    with _project_settings(monkeypatch, SECRET_KEY="", REDIS_MIDDLEWARE={
            "redis_url": "redis://127.0.0.1:6399/0"}), pytest.raises(ConfigError) as caught:
        django_settings()
    assert caught.value.name == "SECRET_KEY"
    assert "SECRET_KEY is not set" in str(caught.value)
    assert "REDIS_MIDDLEWARE['secret_key']" in str(caught.value)


def test_a_short_secret_of_our_own_keeps_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis_middleware.django import django_settings
    from redis_middleware.errors import ConfigError

    with _project_settings(monkeypatch, SECRET_KEY="short", REDIS_MIDDLEWARE={
            "redis_url": "redis://127.0.0.1:6399/0", "secret_key": "also-short"}), \
            pytest.raises(ConfigError) as caught:
        django_settings()
    assert caught.value.name == "REDIS_MIDDLEWARE_SECRET_KEY"


@pytest.mark.parametrize("key", [bytes(range(200, 232)), "é".encode() * 40],
                         ids=["random-bytes", "utf-8-bytes"])
def test_a_bytes_secret_key_signs_our_cookies(monkeypatch: pytest.MonkeyPatch,
                                              key: bytes) -> None:
    """``SECRET_KEY = os.urandom(32)`` (not UTF-8) or UTF-8 bytes: used, never a
    UnicodeDecodeError; all its bytes count."""
    from redis_middleware.django import django_settings

    with _project_settings(monkeypatch, SECRET_KEY=key, SECRET_KEY_FALLBACKS=[b"\xff" * 40],
                           REDIS_MIDDLEWARE={"redis_url": "redis://127.0.0.1:6399/0"}):
        secrets = django_settings().secret_key
    assert len(secrets) == 2 and len(secrets[1]) == 40
    first = key.decode() if key[0] < 0x80 or key.startswith(b"\xc3") else None
    assert secrets[0] == (first or key.decode("latin-1"))
    with _project_settings(monkeypatch, SECRET_KEY=key[:16],
                           REDIS_MIDDLEWARE={"redis_url": "redis://127.0.0.1:6399/0"}):
        from redis_middleware.errors import ConfigError

        with pytest.raises(ConfigError, match="Django's SECRET_KEY"):
            django_settings()


def test_short_fallbacks_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fallback under 32 characters never signed a cookie of ours: skipped, while
    SECRET_KEY and the long fallbacks verify."""
    from redis_middleware.django import django_settings

    with _project_settings(monkeypatch, SECRET_KEY="k" * 40,
                           SECRET_KEY_FALLBACKS=["old-short", "o" * 32],
                           REDIS_MIDDLEWARE={"redis_url": "redis://127.0.0.1:6399/0"}):
        assert django_settings().secret_key == ("k" * 40, "o" * 32)


def test_manage_py_check_reports_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """``"redis_middleware.django"`` in INSTALLED_APPS: ``check`` fails on a setting
    that cannot work, and warns when a short SECRET_KEY leaves a random secret."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with _project_settings(monkeypatch, SECRET_KEY="x" * 20, REDIS_MIDDLEWARE={
            "redis_url": "redis://127.0.0.1:6399/0"}), \
            pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert "redis_middleware.E001" in str(caught.value)
    assert "Django's SECRET_KEY was found but has 20 characters" in str(caught.value)
    with _project_settings(monkeypatch, REDIS_MIDDLEWARE={"ratelimit_limit": "lots"}), \
            pytest.raises(SystemCheckError, match=r"redis_middleware\.E001"):
        call_command("check")

    from redis_middleware.django.checks import check_settings

    with _project_settings(monkeypatch, SECRET_KEY="x" * 20, REDIS_MIDDLEWARE={
            "redis_url": "memory://"}):
        (warning,) = check_settings()
    assert warning.id == "redis_middleware.W001" and "20 characters" in warning.msg
    assert check_settings() == []  # the project's own settings are fine


# -- streaming responses ----------------------------------------------------------------------
def test_streaming_responses_pass_through_the_cache_middleware(configured: Settings) -> None:
    """A streaming response (``StreamingHttpResponse``, ``FileResponse``): the whole body
    arrives, and the cached one is served again from Redis."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,), "routes": {"/stream": 60}}):
        c = client()
        first = c.get("/stream")
        assert first.headers["X-Cache"] == "MISS"
        assert b"".join(first.streaming_content) == b"chunk 0;chunk 1;chunk 2;"
        second = c.get("/stream")
        assert second.headers["X-Cache"] == "HIT"
        assert second.content == b"chunk 0;chunk 1;chunk 2;"
        plain = c.get("/swr")  # a route the cache does not know: passed through
        assert plain.status_code == 200 and "X-Cache" not in plain.headers
        streamed = client().get("/stream", HTTP_CACHE_CONTROL="no-cache")
        assert b"".join(streamed.streaming_content) == b"chunk 0;chunk 1;chunk 2;"


# -- Django's default middleware --------------------------------------------------------------
def _django_default_middleware() -> list[str]:
    """MIDDLEWARE of Django's startproject template."""
    import ast
    import re
    from pathlib import Path

    import django

    template = (Path(django.__file__).parent / "conf" / "project_template" / "project_name"
                / "settings.py-tpl").read_text()
    found = re.search(r"^MIDDLEWARE = (\[.*?\])$", template, re.S | re.M)
    assert found
    names: list[str] = ast.literal_eval(found[1])
    return names


def test_the_documented_and_example_stacks_keep_django_s_defaults() -> None:
    """docs/django.md's MIDDLEWARE and the example project's: every middleware of
    Django's default list, its SessionMiddleware replaced by ours, in Django's order."""
    import re
    from pathlib import Path

    from django.conf import settings as django_conf

    ours = "redis_middleware.django.middleware.SessionMiddleware"
    expected = [ours if m.endswith(".SessionMiddleware") else m
                for m in _django_default_middleware()]
    assert "django.middleware.clickjacking.XFrameOptionsMiddleware" in expected
    doc = (Path(__file__).resolve().parent.parent / "docs" / "django.md").read_text()
    documented = re.findall(r'"([\w.]+)"', doc.split("MIDDLEWARE = [", 1)[1].split("]", 1)[0])
    for where, stack in {"the example": django_conf.MIDDLEWARE,
                         "docs/django.md": documented}.items():
        assert [m for m in stack if m in expected] == expected, where


def test_the_example_sends_x_frame_options(configured: Settings) -> None:
    assert client().get("/").headers["X-Frame-Options"] == "DENY"


# -- the demo: real authentication, the admin's static files ----------------------------------
def test_the_demo_logs_in_with_a_password_only(configured: Settings) -> None:
    """A name alone, or a wrong password, signs nobody in (the form says why); the
    demo account's password does."""
    from examples.django_app.accounts import DEMO_USERS

    c = client()
    assert 'type="password"' in c.get("/").content.decode()
    wrong = "Please enter a correct username and password"
    for data, error in (({"username": "alice"}, "This field is required"),
                        ({"username": "alice", "password": "wrong"}, wrong),
                        ({"username": "nobody", "password": "x"}, wrong)):
        refused = c.post("/login", data)
        assert refused.status_code == 200
        assert error in refused.content.decode()
        assert "sessionid" not in refused.cookies
        assert c.get("/api/ping").json()["user"] is None
    signed_in = c.post("/login", {"username": "alice", "password": DEMO_USERS["alice"]})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/profile"
    assert c.get("/api/ping").json()["user"] == "alice"


def test_typing_a_superuser_s_name_opens_no_admin(configured: Settings) -> None:
    """After ``createsuperuser admin``, "admin" in the demo's box is refused without the
    password; the admin's login page with it works (its CSS loads, DEBUG off)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if not User.objects.filter(username="root").exists():
        User.objects.create_superuser("root", "root@example.com", "a-long-password-43")
    c = client()
    c.post("/login", {"username": "root"})
    assert c.get("/api/ping").json()["user"] is None
    assert c.get("/admin/").status_code == 302  # to the admin's login page
    page = c.get("/admin/login/").content.decode()
    assert '/static/admin/css/base.css' in page
    css = c.get("/static/admin/css/base.css")  # a FileResponse, streamed
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    body = b"".join(css.streaming_content)
    css.close()
    assert b"body" in body and len(body) > 1000
    c.post("/admin/login/?next=/admin/", {"username": "root", "password": "a-long-password-43",
                                          "next": "/admin/"})
    assert c.get("/admin/").status_code == 200


# -- the response cache and the session -------------------------------------------------------
def test_a_signed_in_user_s_page_is_never_served_to_others(configured: Settings) -> None:
    """A cached route whose page names the user: the page computed for a signed-in user
    (its session read) is not stored for everyone; the page of a visitor without a
    session cookie is, even though the middleware (auth, the per-user limit) read the
    empty session."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,), "key": "user_or_ip",
            "routes": {"/hello": 60, "/same": 60}}):
        alice, visitor, other = client(), client(), client()
        log_in(alice, "alice")
        mine = alice.get("/hello")
        assert mine.content == b"hello alice" and mine.headers["X-Cache"] == "MISS"
        assert "Cookie" in mine.headers["Vary"]
        seen = visitor.get("/hello")
        assert seen.content == b"hello visitor"  # not alice's page
        assert seen.headers["X-Cache"] == "MISS"
        again = other.get("/hello")
        assert again.content == b"hello visitor" and again.headers["X-Cache"] == "HIT"
        assert "sessionid" not in again.cookies
        # A page that reads nothing of the user, asked for by visitors without a cookie
        assert visitor.get("/same").headers["X-Cache"] == "MISS"
        assert other.get("/same").headers["X-Cache"] == "HIT"


def test_vary_cookies_stores_a_signed_in_user_s_page_per_session(configured: Settings) -> None:
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,),
            "routes": {"/hello": {"ttl": 60, "vary_cookies": ["sessionid"]}}}):
        alice, bob = client(), client()
        log_in(alice, "alice")
        log_in(bob, "bob")
        assert alice.get("/hello").headers["X-Cache"] == "MISS"
        again = alice.get("/hello")
        assert again.headers["X-Cache"] == "HIT" and again.content == b"hello alice"
        other = bob.get("/hello")
        assert other.headers["X-Cache"] == "MISS" and other.content == b"hello bob"


def test_a_visitor_s_stored_page_is_not_served_to_a_signed_in_user(
        configured: Settings) -> None:
    """The page a visitor without a session cookie stored (the empty session read by
    auth) is the entry of requests without that cookie: a signed-in user computes her
    own."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,), "routes": {"/hello": 60}}):
        visitor, other, alice = client(), client(), client()
        stored = visitor.get("/hello")
        assert stored.content == b"hello visitor" and stored.headers["X-Cache"] == "MISS"
        assert other.get("/hello").headers["X-Cache"] == "HIT"
        log_in(alice, "alice")
        mine = alice.get("/hello")
        assert mine.content == b"hello alice" and mine.headers["X-Cache"] == "MISS"
        assert alice.get("/hello").content == b"hello alice"  # hers is not stored either


def test_a_route_the_same_for_everyone_serves_a_user_s_page_to_others(
        configured: Settings) -> None:
    """``per_user: False``: the route's word that its page does not depend on who asks,
    so the page computed for alice (her session read) is stored and bob gets it."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,),
            "routes": {"/hello": {"ttl": 60, "per_user": False}}}):
        alice, bob, visitor = client(), client(), client()
        log_in(alice, "alice")
        log_in(bob, "bob")
        first = alice.get("/hello")
        assert first.content == b"hello alice" and first.headers["X-Cache"] == "MISS"
        shared = bob.get("/hello")
        assert shared.headers["X-Cache"] == "HIT" and shared.content == b"hello alice"
        assert visitor.get("/hello").headers["X-Cache"] == "HIT"


def test_a_page_that_changed_the_session_is_never_stored(configured: Settings) -> None:
    """Even on a route the same for everyone: the response that wrote the session (its
    cookie is set by Django's middleware, outside the cache) is not kept."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.support.django_urls", REDIS_MIDDLEWARE={
            "redis_url": configured.redis_url, "key_prefix": configured.key_prefix,
            "secret_key": (SECRET,),
            "routes": {"/visits": {"ttl": 60, "per_user": False}}}):
        alice, bob = client(), client()
        log_in(alice, "alice")
        assert alice.get("/visits").headers["X-Cache"] == "MISS"
        counted = bob.get("/visits")
        assert counted.headers["X-Cache"] == "MISS" and "sessionid" in counted.cookies


def test_no_two_django_modules_import_each_other() -> None:
    """The settings module knows nothing of the session engine: the engine notices new
    settings by itself (no import runs back up)."""
    import ast
    from pathlib import Path

    import redis_middleware.django

    root = Path(redis_middleware.django.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    names.add(node.module.split(".")[0])
                else:
                    names.update(alias.name for alias in node.names)
        imports[path.stem] = names
    assert [(a, b) for a in imports for b in imports[a] if a in imports.get(b, set())] == []

