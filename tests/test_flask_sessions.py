"""``flask.session`` through the Flask adapter."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware.sansio.sessions.core import SessionCore

from .support.audit import audit_keyspace


def test_flask_session_through_the_adapter(settings: Settings) -> None:
    from flask import Flask, session

    from redis_middleware.flask import init_app

    app = Flask(__name__)
    init_app(app, settings)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        session.regenerate()  # type: ignore[attr-defined]
        session["user_id"] = user
        return {"ok": True}

    @app.get("/me")
    def me() -> Any:
        return {"user": session.get("user_id"), "new": session.new}

    client = app.test_client()
    first = client.post("/login/ann")
    assert len(first.headers.getlist("Set-Cookie")) == 1  # one cookie: ours
    assert client.get("/me").json == {"user": "ann", "new": False}
    assert "Cookie" in client.get("/me").headers["Vary"]
    audit_keyspace(settings)


def test_lone_surrogates_in_keys_and_values_round_trip(settings: Settings) -> None:
    """What json.loads gives for a hostile body (``{"\\udfff": "\\ud800"}``) is saved,
    as Flask's own cookie session saves it, and reads back as the same strings."""
    import json

    from flask import Flask, request, session

    from redis_middleware.flask import init_app

    app = Flask(__name__)
    init_app(app, settings)

    @app.post("/put")
    def put() -> Any:
        session.update(request.get_json())
        return {"ok": True}

    app.get("/dump")(lambda: json.dumps(dict(session)))  # ASCII-escaped
    client = app.test_client()
    body = '{"\\udfff": 1, "v": "a\\ud800", "s": "é"}'
    assert client.post("/put", data=body, content_type="application/json").status_code == 200
    assert json.loads(client.get("/dump").data) == json.loads(body)
    audit_keyspace(settings)


def test_flask_answers_503_without_a_traceback_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flask import Flask, session

    from redis_middleware.flask import init_app

    from .support.clients import SECRET
    from .support.servers import free_port

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key=SECRET)
    app = Flask(__name__)
    init_app(app, settings)
    app.get("/me")(lambda: {"user": session.get("user_id")})
    cookie = SessionCore(settings).cookies.set_cookie("abcd" + "x" * 43, False)
    client = app.test_client()
    client.set_cookie("session", cookie.split(";")[0].split("=", 1)[1])
    with caplog.at_level(logging.ERROR):
        response = client.get("/me")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_save_that_fails_answers_the_stack_s_503_without_the_view_s_headers() -> None:
    """The login was not saved: the 503 carries none of the view's headers (a redirect's
    Location, a Cache-Control a shared cache could keep the 503 for, an ETag, Flask-Login's
    remember cookie), only what the stack's own 503 carries."""
    from flask import Flask, redirect, session
    from flask_login import LoginManager, UserMixin, login_user

    from redis_middleware.flask import init_app

    from .support.clients import SECRET
    from .support.servers import free_port

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key=SECRET)
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET
    init_app(app, settings)
    login_manager = LoginManager(app)

    class User(UserMixin):
        id = "42"

    login_manager.user_loader(lambda user_id: User() if user_id == "42" else None)

    @app.post("/login")
    def login() -> Any:
        login_user(User(), remember=True)
        session["cart"] = [1]
        response = redirect("/account")
        response.headers["Cache-Control"] = "public, max-age=600"
        response.set_etag("v1")
        response.set_cookie("theme", "dark")
        return response

    response = app.test_client().post("/login", headers={"Accept": "text/html"})
    assert response.status_code == 503
    assert sorted(response.headers.keys()) == ["Cache-Control", "Content-Length",
                                               "Content-Type", "Retry-After"]
    assert response.headers["Cache-Control"] == "no-store"  # ours, not the view's
    assert response.headers["Content-Type"].startswith("text/html")
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert b"Session store unavailable" in response.data


def test_the_interface_alone_is_a_whole_session_backend(settings: Settings) -> None:
    """No middleware at all: Flask opens and saves the session through the interface."""
    from flask import Flask, session

    from redis_middleware.flask import RedisSessionInterface

    app = Flask(__name__)
    app.session_interface = RedisSessionInterface(settings)
    app.add_url_rule("/set/<value>", "set", lambda value: session.update(x=value) or "ok",
                     methods=["POST"])
    app.add_url_rule("/", "get", lambda: str(session.get("x")))
    client = app.test_client()
    assert client.post("/set/1").status_code == 200
    assert client.get("/").text == "1"
    audit_keyspace(settings)
