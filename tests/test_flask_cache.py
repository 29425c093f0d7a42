"""The response cache under Flask: Flask's test client (which may never close a
response) and extensions that read the session on every response."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response

from redis_middleware import Settings
from redis_middleware.flask import init_stack

pytestmark = pytest.mark.usefixtures("audit")


def make_app(settings: Settings, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config["TESTING"] = True
    options.setdefault("routes", {"/page": 60, "/stream": 60, "/sized": 60})
    init_stack(app, settings, limit="1000/minute", cache_lock_wait=3, **options)
    calls = app.config["CALLS"] = []

    @app.get("/page")
    def page() -> str:
        calls.append("page")
        return "the page"

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            calls.append("stream")
            yield "a"
            yield "b"
        return Response(chunks())

    @app.get("/sized")
    def sized() -> Response:
        def chunks() -> Iterator[str]:
            calls.append("sized")
            yield "a"
            yield "b"
        return Response(chunks(), headers={"Content-Length": "2"})

    return app


def timed_get(client: Any, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def test_a_response_never_read_nor_closed_is_stored_and_frees_the_guard(
        settings: Settings) -> None:
    """Flask's test client reads the first chunk and nothing more: a body with its
    Content-Length is whole there, so it is stored at once and the guard freed."""
    app = make_app(settings)
    client = app.test_client()
    first = client.get("/page")
    assert first.headers["Cache-Status"] == "rmw; fwd=uri-miss; stored"
    second, took = timed_get(client, "/page")
    assert second.headers["X-Cache"] == "HIT", second.headers.get("Cache-Status")
    assert took < 1 and second.text == "the page"
    assert app.config["CALLS"] == ["page"]
    first.close()
    second.close()


def test_close_before_the_end_of_a_body_of_declared_length_stores_it(
        settings: Settings) -> None:
    """The client read the first of two chunks and closed: the rest is read (a known,
    bounded length), so the "stored" the response announced holds."""
    app = make_app(settings)
    client = app.test_client()
    response = client.get("/sized")
    assert response.headers["Cache-Status"] == "rmw; fwd=uri-miss; stored"
    response.close()
    again = client.get("/sized")
    assert again.headers["X-Cache"] == "HIT" and again.text == "ab"
    assert app.config["CALLS"] == ["sized"]


def test_a_stream_read_to_its_end_is_stored_before_close(settings: Settings) -> None:
    app = make_app(settings)
    client = app.test_client()
    first = client.get("/stream")
    assert first.text == "ab"  # read, never closed
    second, took = timed_get(client, "/stream")
    assert second.headers["X-Cache"] == "HIT" and second.text == "ab" and took < 1
    assert app.config["CALLS"] == ["stream"]


def test_a_stream_closed_unread_frees_the_guard_without_storing(settings: Settings) -> None:
    """A body of unknown length is not read on after the client left (it may never end):
    not stored, and the next request computes it at once, with no wait for the guard."""
    app = make_app(settings)
    client = app.test_client()
    client.get("/stream").close()
    second, took = timed_get(client, "/stream")
    assert second.headers["X-Cache"] == "MISS" and took < 1
    assert second.text == "ab"


# -- Flask-Login and the cache ------------------------------------------------------------
def login_app(settings: Settings, shared: bool = True) -> Flask:
    from flask import flash, get_flashed_messages
    from flask_login import LoginManager, UserMixin, current_user, login_user

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = Flask(__name__)
    app.config["TESTING"] = True
    routes: dict[str, Any] = {"/home": 60, "/news": 60}
    if shared:
        routes["/catalogue"] = {"ttl": 60, "per_user": False}
    init_stack(app, settings, limit="1000/minute", routes=routes)
    LoginManager(app).user_loader(lambda user_id: User(user_id))
    calls = app.config["CALLS"] = []

    @app.post("/login")
    def login() -> Any:
        login_user(User("ann"))
        flash("welcome")
        return {"ok": True}

    @app.get("/home")
    def home() -> str:
        calls.append("home")
        return f"hello {current_user.id if current_user.is_authenticated else 'guest'}"

    @app.get("/catalogue")
    def catalogue() -> str:
        calls.append("catalogue")
        return "the same for everyone"

    @app.get("/news")
    def news() -> str:
        calls.append("news")
        return ",".join(get_flashed_messages()) or "no news"

    return app


def test_with_flask_login_anonymous_pages_are_cached_and_users_get_their_own(
        settings: Settings) -> None:
    """Flask-Login reads the session on every response: anonymous requests without a
    session cookie still share one stored page, a signed-in user never gets it."""
    app = login_app(settings, shared=False)
    guest = app.test_client()
    first = guest.get("/home")
    assert first.text == "hello guest"
    assert first.headers["Cache-Status"] == "rmw; fwd=uri-miss; stored"
    assert "Cookie" in first.headers["Vary"]
    hit = app.test_client().get("/home")
    assert hit.headers["X-Cache"] == "HIT" and hit.text == "hello guest"
    assert hit.headers["Vary"] == "Cookie"  # a cache in front keeps it for guests too
    ann = app.test_client()
    assert ann.post("/login").status_code == 200
    for _ in range(2):
        mine = ann.get("/home")
        assert mine.text == "hello ann"
        assert mine.headers["Cache-Status"] == 'rmw; fwd=uri-miss; detail="session"'
    assert app.config["CALLS"] == ["home", "home", "home"]


def test_with_flask_login_a_page_marked_the_same_for_everyone_is_served_to_users(
        settings: Settings) -> None:
    app = login_app(settings)
    ann = app.test_client()
    ann.post("/login")
    assert ann.get("/catalogue").headers["Cache-Status"] == "rmw; fwd=uri-miss; stored"
    assert app.test_client().get("/catalogue").headers["X-Cache"] == "HIT"
    assert ann.get("/catalogue").headers["X-Cache"] == "HIT"
    assert app.config["CALLS"] == ["catalogue"]


def test_a_page_that_consumed_a_flash_message_is_never_stored(settings: Settings) -> None:
    app = login_app(settings, shared=False)
    ann = app.test_client()
    ann.post("/login")
    news = ann.get("/news")
    assert news.text == "welcome"
    assert news.headers["Cache-Status"] == 'rmw; fwd=uri-miss; detail="session-written"'
    assert app.test_client().get("/news").text == "no news"
