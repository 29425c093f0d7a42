"""Django's ``SessionBase`` contract on our engine: the behaviours Django's own backend
tests check that apply to an engine without a database, written as our tests, each
for the sync API and the async one (Django 5.1+), with ``USE_TZ`` on and off, on
memory:// and a real redis-server; then ``SessionMiddleware``'s behaviours on the
engine, under Django's class and ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import django
import pytest

from redis_middleware.config.settings import Settings

from .support.clients import SECRET
from .support.django_project import configured, django_project, redis_keys, store

__all__ = ["configured", "django_project"]  # the fixtures this module uses


class Api:
    """A store's methods called the sync way (``s.save()``) or the async way
    (``await s.asave()``, Django's ``a`` prefix): each scenario runs both."""

    def __init__(self, asynchronous: bool) -> None:
        self.asynchronous = asynchronous

    async def __call__(self, s: Any, name: str, *args: Any) -> Any:
        if self.asynchronous:
            return await getattr(s, "a" + name)(*args)
        return getattr(s, "__setitem__" if name == "set" else name)(*args)


@pytest.fixture(params=[True, False], ids=["USE_TZ", "naive"])
def use_tz(request: pytest.FixtureRequest) -> Iterator[bool]:
    from django.test import override_settings

    with override_settings(USE_TZ=request.param):
        yield request.param


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, configured: Settings, use_tz: bool
              ) -> AsyncIterator[Api]:
    from redis_middleware._redis.connections import connections_for

    yield Api(request.param == "async")
    await connections_for(configured).aclose()


# -- reading and writing ---------------------------------------------------------------------
async def test_a_new_session_is_neither_accessed_nor_modified(api: Api) -> None:
    s = store()
    assert (s.accessed, s.modified) == (False, False)
    assert await api(s, "get", "cat") is None
    assert s.accessed and not s.modified


async def test_set_pop_setdefault_update_mark_the_session(api: Api) -> None:
    s = store()
    await api(s, "set", "some key", 42)
    assert s.modified and await api(s, "get", "some key") == 42
    s.modified = False
    assert await api(s, "pop", "some key") == 42
    assert s.modified
    fresh = store()
    assert await api(fresh, "pop", "absent", "default") == "default"
    assert await api(fresh, "pop", "absent", None) is None
    assert fresh.accessed and not fresh.modified
    with pytest.raises(KeyError):
        await api(fresh, "pop", "absent")
    assert await api(fresh, "setdefault", "foo", "bar") == "bar"
    assert await api(fresh, "setdefault", "foo", "baz") == "bar"
    assert fresh.modified
    fresh.modified = False
    await api(fresh, "update", {"update key": 1})
    assert fresh.modified and await api(fresh, "get", "update key") == 1


async def test_reading_marks_accessed_not_modified(api: Api) -> None:
    s = store()
    await api(s, "set", "x", 1)
    s.modified = s.accessed = False
    assert await api(s, "has_key", "x") and not await api(s, "has_key", "y")
    assert list(await api(s, "keys")) == ["x"]
    assert list(await api(s, "values")) == [1]
    assert list(await api(s, "items")) == [("x", 1)]
    assert s.accessed and not s.modified
    s.clear()  # Django has no async clear()
    assert list(await api(s, "items")) == [] and s.modified


async def test_the_test_cookie(api: Api) -> None:
    s = store()
    await api(s, "set_test_cookie")
    assert await api(s, "test_cookie_worked")
    await api(s, "delete_test_cookie")
    assert not await api(s, "test_cookie_worked")


# -- save, exists, delete, flush, cycle_key, create ---------------------------------------------
async def test_save_exists_delete(api: Api, configured: Settings) -> None:
    s = store()
    await api(s, "set", "a", "b")
    await api(s, "save")
    assert await api(s, "exists", s.session_key)
    assert await api(s, "get", "a") == "b"  # saving keeps the data
    await api(s, "delete", s.session_key)
    assert not await api(s, "exists", s.session_key)
    assert redis_keys(configured) == []


async def test_an_empty_session_saves_and_exists(api: Api) -> None:
    s = store()
    await api(s, "save")
    assert s.session_key is not None and await api(s, "exists", s.session_key)


async def test_flush_deletes_and_forgets_the_key(api: Api) -> None:
    s = store()
    await api(s, "set", "foo", "bar")
    await api(s, "save")
    old = s.session_key
    await api(s, "flush")
    assert not await api(s, "exists", old)
    assert s.session_key is None
    assert s.modified and s.accessed


async def test_cycle_key_keeps_the_data_under_a_new_key(api: Api) -> None:
    s = store()
    await api(s, "set", "a", "c")
    await api(s, "set", "b", "d")
    await api(s, "save")
    old, data = s.session_key, list(await api(s, "items"))
    await api(s, "cycle_key")
    assert s.session_key != old
    assert not await api(s, "exists", old)
    assert list(await api(s, "items")) == data
    assert dict(await api(store(s.session_key), "items")) == dict(data)


async def test_cycle_key_of_a_session_not_loaded_yet(api: Api) -> None:
    s = store()
    await api(s, "set", "a", "c")
    await api(s, "set", "b", "d")
    await api(s, "save")
    again = store(s.session_key)
    assert not hasattr(again, "_session_cache")
    await api(again, "cycle_key")
    assert sorted(await api(again, "items")) == [("a", "c"), ("b", "d")]


async def test_create_stores_an_empty_session_at_once(api: Api) -> None:
    s = store()
    await api(s, "create")
    assert s.modified and await api(s, "exists", s.session_key)
    await api(s, "set", "a", 1)
    await api(s, "save")  # then an ordinary save updates it
    assert await api(store(s.session_key), "get", "a") == 1


async def test_must_create_refuses_a_key_in_use(api: Api) -> None:
    """``save(must_create=True)`` creates or raises ``CreateError``; it never writes
    into a session that exists."""
    from django.contrib.sessions.backends.base import CreateError

    s = store()
    await api(s, "set", "a", 1)
    await api(s, "save")
    other = store(s.session_key)
    await api(other, "set", "b", 2)
    with pytest.raises(CreateError):
        await api(other, "save", True)
    assert dict(await api(store(s.session_key), "items")) == {"a": 1}


async def test_a_session_deleted_by_this_request_is_not_written_back(
        api: Api, configured: Settings) -> None:
    """``delete()``, then a change: the save raises ``UpdateError`` (Django's engines
    do), and the session stays deleted under its old key."""
    from django.contrib.sessions.backends.base import UpdateError

    s = store()
    await api(s, "set", "_auth_user_id", "7")
    await api(s, "save")
    key = s.session_key
    loaded = store(key)
    assert await api(loaded, "get", "_auth_user_id") == "7"
    await api(loaded, "delete")
    with pytest.raises(UpdateError):
        await api(loaded, "save")  # SESSION_SAVE_EVERY_REQUEST: a save with no change
    await api(loaded, "set", "theme", "dark")
    with pytest.raises(UpdateError):
        await api(loaded, "save")
    assert not await api(loaded, "exists", key)
    assert await api(store(key), "load") == {}
    assert redis_keys(configured) == []


async def test_a_session_deleted_elsewhere_is_not_resurrected(api: Api) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    s1 = store()
    await api(s1, "set", "test_data", "value1")
    await api(s1, "save", True)
    await api(store(s1.session_key), "delete")  # a logout in another request
    await api(s1, "set", "test_data", "value2")
    with pytest.raises(UpdateError):
        await api(s1, "save")
    assert await api(s1, "load") == {}


async def test_keys_not_issued_here_are_no_session_and_create_nothing(
        api: Api, configured: Settings) -> None:
    from redis_middleware.sansio.sessions.cookies import new_session_id

    for bad in ("", "1", "1234567", "12345678", "someunknownkey",
                "abcdefghijklmnopqrstuvwxyz0123456789" * 20):
        assert store(bad).session_key is None, bad
    unknown = new_session_id()
    s = store(unknown)
    assert await api(s, "load") == {}
    assert s.session_key is None  # an unknown key is never reused
    assert not await api(s, "exists", unknown)
    assert redis_keys(configured) == []  # loading created no record
    await api(s, "save")
    assert s.session_key not in (None, unknown)
    assert await api(s, "get", "cat") is None


async def test_clear_expired_has_nothing_to_do(api: Api) -> None:
    from redis_middleware.django.sessions import SessionStore

    await api(SessionStore, "clear_expired")  # Redis expires each hash on its own


def test_the_clearsessions_command(configured: Settings) -> None:
    from django.core.management import call_command

    call_command("clearsessions")  # an engine without clear_expired() would fail here


def test_encode_and_decode_round_trip(configured: Settings) -> None:
    s = store()
    data = {"a test key": "a test value"}
    assert s.decode(s.encode(data)) == data


# -- expiry ------------------------------------------------------------------------------------
async def test_expiry_helpers(api: Api, use_tz: bool) -> None:
    from django.conf import settings as django_conf
    from django.test import override_settings
    from django.utils import timezone

    age = django_conf.SESSION_COOKIE_AGE
    s = store()
    assert await api(s, "get_expiry_age") == age
    await api(s, "set_expiry", 0)  # at browser close, with the usual age
    assert await api(s, "get_expiry_age") == age
    now = timezone.now()
    assert (now.tzinfo is not None) is use_tz
    for value in (10, timedelta(seconds=10), now + timedelta(seconds=10)):
        if isinstance(value, timedelta):
            with pytest.MonkeyPatch.context() as mp:  # set_expiry() adds it to now()
                mp.setattr(timezone, "now", lambda: now)
                await api(s, "set_expiry", value)
        else:
            await api(s, "set_expiry", value)
        assert await api(s, "get_expiry_date") > now
        assert s.get_expiry_date(modification=now) == now + timedelta(seconds=10)
        assert s.get_expiry_age(modification=now) == 10
    await api(s, "set_expiry", None)
    assert await api(s, "get_expiry_age") == age
    for at_close in (False, True):
        with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=at_close):
            await api(s, "set_expiry", 10)
            assert await api(s, "get_expire_at_browser_close") is False
            await api(s, "set_expiry", 0)
            assert await api(s, "get_expire_at_browser_close") is True
            await api(s, "set_expiry", None)
            assert await api(s, "get_expire_at_browser_close") is at_close


async def test_the_hash_expires_when_django_says(api: Api, configured: Settings) -> None:
    from django.utils import timezone

    from .support.clients import raw_client

    s = store()
    await api(s, "set", "a", 1)
    await api(s, "set_expiry", timezone.now() + timedelta(seconds=30))
    await api(s, "save")
    client = raw_client(configured)
    try:
        (key,) = redis_keys(configured, "session:{*")
        assert 25 <= client.ttl(key) <= 30
    finally:
        client.close()


async def test_an_expiry_in_the_past_ends_the_session_at_once(
        api: Api, configured: Settings) -> None:
    s = store()
    await api(s, "set", "foo", "bar")
    await api(s, "set_expiry", -timedelta(seconds=10))
    await api(s, "save")
    later = store(s.session_key)
    assert not await api(later, "has_key", "foo")
    assert redis_keys(configured, "session:{*") == []


# -- SessionMiddleware on the engine: Django's class and ours ------------------------------------
@pytest.fixture(params=["django", "ours"])
def middleware(request: pytest.FixtureRequest, configured: Settings) -> Any:
    from django.contrib.sessions.middleware import SessionMiddleware as Django

    from redis_middleware.django.middleware import SessionMiddleware as Ours

    return Django if request.param == "django" else Ours


def run(middleware: Any, view: Any, cookie: str | None = None) -> tuple[Any, Any]:
    """``view`` behind ``middleware``: (the request, the response)."""
    from django.conf import settings as django_conf
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    if cookie is not None:
        request.COOKIES[django_conf.SESSION_COOKIE_NAME] = cookie
    return request, middleware(view)(request)


def saved_session(**data: Any) -> str:
    s = store()
    s.update(data)
    s.save()
    key: str = s.session_key
    return key


def ok(text: str = "ok", status: int = 200) -> Any:
    from django.http import HttpResponse

    return HttpResponse(text, status=status)


def test_a_view_that_deletes_then_changes_the_session_is_interrupted(
        middleware: Any, configured: Settings) -> None:
    """The session read (by auth, say), deleted, then changed: Django's 400
    (``SessionInterrupted``), the session not written back."""
    from django.contrib.sessions.exceptions import SessionInterrupted

    key = saved_session(_auth_user_id="7", cart=["teapot"])

    def view(request: Any) -> Any:
        assert request.session.get("_auth_user_id") == "7"
        request.session.delete()
        request.session["cart"] = ["mug"]
        return ok()

    with pytest.raises(SessionInterrupted):
        run(middleware, view, key)
    assert not store().exists(key)
    assert redis_keys(configured, "session:{*") == []


def test_a_session_deleted_before_it_was_read_starts_afresh(middleware: Any) -> None:
    """Deleted before anything read it, then changed: the change reads a session that is
    gone, so it lands in a new one (Django's cache and db engines do the same), with
    none of the old data, under a new key."""
    key = saved_session(_auth_user_id="7", cart=["teapot"])

    def view(request: Any) -> Any:
        request.session.delete()
        request.session["cart"] = ["mug"]
        return ok()

    _, response = run(middleware, view, key)
    new = response.cookies["sessionid"].value
    assert new != key and not store().exists(key)
    assert dict(store(new).items()) == {"cart": ["mug"]}


def test_save_every_request_after_a_delete_is_interrupted(
        middleware: Any, configured: Settings) -> None:
    from django.contrib.sessions.exceptions import SessionInterrupted
    from django.test import override_settings

    key = saved_session(_auth_user_id="7")

    def view(request: Any) -> Any:
        request.session.get("_auth_user_id")
        request.session.delete()
        return ok()

    with override_settings(SESSION_SAVE_EVERY_REQUEST=True), pytest.raises(
            SessionInterrupted):
        run(middleware, view, key)
    assert redis_keys(configured, "session:{*") == []


def test_the_cookie_follows_django_s_settings(middleware: Any) -> None:
    from django.test import override_settings

    def view(request: Any) -> Any:
        request.session["hello"] = "world"
        return ok()

    with override_settings(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=False,
                           SESSION_COOKIE_SAMESITE="Strict",
                           SESSION_COOKIE_DOMAIN=".example.local",
                           SESSION_COOKIE_PATH="/example/"):
        request, response = run(middleware, view)
    cookie = response.cookies["sessionid"]
    assert cookie.value == request.session.session_key
    assert cookie["secure"] is True and cookie["httponly"] == ""
    assert cookie["samesite"] == "Strict" and cookie["domain"] == ".example.local"
    assert cookie["path"] == "/example/"
    assert response.headers["Vary"] == "Cookie"
    assert store(cookie.value)["hello"] == "world"


def test_a_flush_deletes_the_cookie_it_came_with(middleware: Any) -> None:
    key = saved_session(a=1)

    def view(request: Any) -> Any:
        request.session.flush()
        return ok()

    _, response = run(middleware, view, key)
    cookie = response.cookies["sessionid"]
    assert cookie.value == "" and cookie["max-age"] == 0
    assert response.headers["Vary"] == "Cookie"
    assert not store().exists(key)
    _, response = run(middleware, view)  # no cookie: nothing to delete, nothing set
    assert response.cookies == {} and response.headers["Vary"] == "Cookie"


def test_no_save_on_a_5xx(middleware: Any) -> None:
    def view(request: Any) -> Any:
        request.session["hello"] = "world"
        return ok("Horrible error", 503)

    request, response = run(middleware, view)
    assert "sessionid" not in response.cookies
    assert "hello" not in request.session.load()


def test_save_every_request_renews_the_cookie(middleware: Any) -> None:
    from django.test import override_settings

    key = saved_session(hello="world")
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        _, response = run(middleware, lambda request: ok(), key)
    assert response.cookies["sessionid"].value == key
    if django.VERSION >= (5, 2):  # 5.2 on: whenever the cookie is set, it varies on Cookie
        assert response.headers["Vary"] == "Cookie"
    else:  # 5.1: only when the view read the session
        assert "Vary" not in response.headers
    assert store(key)["hello"] == "world"


def test_an_emptied_session_keeps_its_key(middleware: Any) -> None:
    """A session emptied of data, not flushed, is still saved, and its cookie sent."""
    key = saved_session(foo="bar")

    def view(request: Any) -> Any:
        del request.session["foo"]
        return ok()

    request, response = run(middleware, view, key)
    assert request.session.session_key == key
    assert response.cookies["sessionid"].value == key
    assert store().exists(key) and dict(store(key).items()) == {}


# -- a whole request: the demo's stack, with either SessionMiddleware ----------------------------
@pytest.mark.parametrize("save_every_request", [False, True])
def test_a_user_whose_session_a_view_deleted_is_signed_out(
        middleware: Any, configured: Settings, save_every_request: bool) -> None:
    """A signed-in user's request whose view deletes the session (then changes it, or
    the project saves every request): Django's 400 (``SessionInterrupted``), and the
    next request is anonymous."""
    from django.conf import settings as django_conf
    from django.test import Client, override_settings

    from examples.django_app.accounts import DEMO_USERS

    stack = [f"{middleware.__module__}.{middleware.__name__}"
             if m.endswith(".SessionMiddleware") else m for m in django_conf.MIDDLEWARE]
    with override_settings(ROOT_URLCONF="tests.support.django_urls", MIDDLEWARE=stack,
                           SESSION_SAVE_EVERY_REQUEST=save_every_request,
                           REDIS_MIDDLEWARE={"redis_url": configured.redis_url,
                                             "key_prefix": configured.key_prefix,
                                             "secret_key": (SECRET,)}):
        c = Client()
        c.post("/login", {"username": "alice", "password": DEMO_USERS["alice"]})
        assert c.get("/api/ping").json()["user"] == "alice"
        query = "" if save_every_request else "?change=1"
        assert c.get(f"/forget{query}").status_code == 400
        assert c.get("/api/ping").json()["user"] is None
