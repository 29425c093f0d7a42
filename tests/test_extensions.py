"""Real extensions on our sessions, each as a small real app: Flask-Login, Flask-WTF,
Authlib (Starlette and Flask, against a local fake OAuth provider) and SQLAdmin."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from flask import Flask, render_template_string, request, session

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.flask import init_app, init_stack

from .support.audit import audit_keyspace

pytestmark = pytest.mark.usefixtures("audit")


@pytest.fixture(params=["init_app", "init_stack"])
def install(request: pytest.FixtureRequest, settings: Settings) -> Any:
    def apply(app: Flask) -> None:
        if request.param == "init_app":
            init_app(app, settings)
        else:
            init_stack(app, settings, limit="1000/minute")
    return apply


# -- Flask-Login -----------------------------------------------------------------------
def test_flask_login_login_required_and_logout(install: Any, settings: Settings) -> None:
    from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = Flask(__name__)
    app.config["TESTING"] = True
    install(app)
    manager = LoginManager(app)
    manager.user_loader(lambda user_id: User(user_id))

    @app.post("/login/<name>")
    def login(name: str) -> Any:
        session.regenerate()  # type: ignore[attr-defined]  # fixation defence at login
        login_user(User(name), remember=False)
        return {"ok": True}

    @app.get("/private")
    @login_required
    def private() -> Any:
        from flask_login import current_user

        return {"user": current_user.id}

    @app.post("/logout")
    def logout() -> Any:
        logout_user()
        return {"ok": True}

    client = app.test_client()
    assert client.get("/private").status_code == 401
    response = client.post("/login/ann")
    assert response.status_code == 200  # Flask-Login's _id (a 128-hex digest) fits
    assert client.get("/private").json == {"user": "ann"}
    assert client.post("/logout").status_code == 200
    assert client.get("/private").status_code == 401
    audit_keyspace(settings)


def test_flask_login_user_is_the_user_for_limits_and_logout_everywhere(
        settings: Settings) -> None:
    """Flask-Login keeps its user id under ``_user_id``: the stack's per-user limit counts
    that user (not the address), and "log out everywhere" ends the Flask-Login session."""
    from flask_login import LoginManager, UserMixin, login_required, login_user

    from redis_middleware.flask import init_stack
    from redis_middleware.wsgi import SessionStore

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = Flask(__name__)
    app.config["TESTING"] = True
    init_stack(app, settings, rules={"/private": {"limit": "2/minute", "key": "user"}},
               presence_enabled=False)
    LoginManager(app).user_loader(lambda user_id: User(user_id))

    @app.post("/login/<name>")
    def login(name: str) -> Any:
        session.regenerate()  # type: ignore[attr-defined]
        login_user(User(name))
        return {"ok": True}

    @app.get("/private")
    @login_required
    def private() -> Any:
        return {"ok": True}

    ann, bob = app.test_client(), app.test_client()
    ann.post("/login/ann")
    bob.post("/login/bob")
    assert [ann.get("/private").status_code for _ in range(3)] == [200, 200, 429]
    assert bob.get("/private").status_code == 200  # same address, another user's budget
    assert SessionStore(settings).revoke_all("ann") == 1
    assert ann.get("/private").status_code == 401  # the Flask-Login session is gone
    assert bob.get("/private").status_code == 200
    audit_keyspace(settings)


# -- Flask-WTF -------------------------------------------------------------------------
def test_flask_wtf_csrf(install: Any) -> None:
    from flask_wtf import FlaskForm
    from flask_wtf.csrf import CSRFProtect
    from wtforms import StringField

    class NameForm(FlaskForm):
        name = StringField("name")

    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="w" * 40, WTF_CSRF_ENABLED=True)
    install(app)
    CSRFProtect(app)

    @app.route("/form", methods=["GET", "POST"])
    def form() -> Any:
        f = NameForm()
        if f.validate_on_submit():
            return {"hello": f.name.data}
        return render_template_string("{{ form.csrf_token._value() }}", form=f)

    client = app.test_client()
    token = client.get("/form").text
    assert len(token) > 40
    assert client.post("/form", data={"name": "x"}).status_code == 400  # no token
    assert client.post("/form", data={"name": "ann", "csrf_token": token}).json == {
        "hello": "ann"}


# -- a fake OAuth 2 provider on loopback ---------------------------------------------------
class _Quiet(WSGIRequestHandler):
    def log_message(self, fmt: str, *args: Any) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    """Answers the token endpoint (the authorize step is the browser's redirect only)."""
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        if environ["PATH_INFO"] == "/token" and form.get("code") == ["good-code"]:
            body = json.dumps({"access_token": "tok-1", "token_type": "Bearer",
                               "expires_in": 3600}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [b'{"error": "invalid_grant"}']

    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _state_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["state"][0]


def test_authlib_starlette_oauth_state_round_trip(settings: Settings, provider: str) -> None:
    from authlib.integrations.starlette_client import OAuth, OAuthError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from redis_middleware.asgi import SessionMiddleware

    oauth = OAuth()
    oauth.register("fake", client_id="cid", client_secret="secret",
                   authorize_url=provider + "/authorize",
                   access_token_url=provider + "/token")

    async def login(request: Request) -> Response:
        return await oauth.fake.authorize_redirect(request, "http://testserver/auth")

    async def auth(request: Request) -> Response:
        try:
            token = await oauth.fake.authorize_access_token(request)
        except OAuthError as exc:
            return JSONResponse({"error": exc.error}, status_code=400)
        request.session["token"] = token["access_token"]
        return JSONResponse({"token": token["access_token"]})

    app = SessionMiddleware(Starlette(routes=[Route("/login", login), Route("/auth", auth)]),
                            settings)
    with TestClient(app) as client:
        try:
            redirect = client.get("/login", follow_redirects=False)
            assert redirect.status_code == 302  # a state is in the session now
            forged = client.get("/auth", params={"code": "good-code", "state": "forged"})
            assert forged.status_code == 400 and forged.json()["error"] == "mismatching_state"
            redirect = client.get("/login", follow_redirects=False)
            state = _state_of(redirect.headers["location"])
            done = client.get("/auth", params={"code": "good-code", "state": state})
            assert done.json() == {"token": "tok-1"}
        finally:
            client.portal.call(connections_for(settings).aclose)


def test_authlib_flask_oauth_state_round_trip(install: Any, provider: str) -> None:
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.flask_client import OAuth

    app = Flask(__name__)
    app.config["TESTING"] = True
    install(app)
    oauth = OAuth(app)
    oauth.register("fake", client_id="cid", client_secret="secret",
                   authorize_url=provider + "/authorize",
                   access_token_url=provider + "/token")

    @app.get("/login")
    def login() -> Any:
        return oauth.fake.authorize_redirect("http://localhost/auth")

    @app.get("/auth")
    def auth() -> Any:
        try:
            token = oauth.fake.authorize_access_token()
        except OAuthError as exc:
            return {"error": exc.error}, 400
        return {"token": token["access_token"], "code": request.args["code"]}

    client = app.test_client()
    assert client.get("/login").status_code == 302  # a state is in the session now
    forged = client.get("/auth", query_string={"code": "good-code", "state": "forged"})
    assert forged.status_code == 400 and forged.json["error"] == "mismatching_state"
    state = _state_of(client.get("/login").headers["Location"])
    assert client.get("/auth", query_string={"code": "good-code", "state": state}).json == {
        "token": "tok-1", "code": "good-code"}


# -- SQLAdmin ---------------------------------------------------------------------------
def test_sqladmin_login_and_logout_on_our_sessions(settings: Settings) -> None:
    from sqladmin import Admin
    from sqladmin.authentication import AuthenticationBackend
    from sqlalchemy import create_engine
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.testclient import TestClient

    from redis_middleware.asgi import SessionMiddleware

    class Backend(AuthenticationBackend):
        def __init__(self) -> None:
            # sqladmin adds Starlette's cookie sessions; ours take their place.
            self.middlewares = [Middleware(SessionMiddleware, settings=settings)]

        async def login(self, request: Request) -> bool:
            form = await request.form()
            if form.get("username") == "admin" and form.get("password") == "pw":
                request.session.regenerate()  # type: ignore[attr-defined]
                request.session["admin_token"] = "t"
                return True
            return False

        async def logout(self, request: Request) -> bool:
            request.session.clear()
            return True

        async def authenticate(self, request: Request) -> bool:
            return request.session.get("admin_token") == "t"

    app = Starlette()
    Admin(app, create_engine("sqlite://"), authentication_backend=Backend())
    with TestClient(app) as client:
        try:
            assert client.get("/admin/", follow_redirects=False).status_code == 302
            bad = client.post("/admin/login", data={"username": "admin", "password": "no"})
            assert bad.status_code == 400
            good = client.post("/admin/login", data={"username": "admin", "password": "pw"},
                               follow_redirects=False)
            assert good.status_code == 302
            assert client.get("/admin/", follow_redirects=False).status_code == 200
            client.get("/admin/logout", follow_redirects=False)
            assert client.get("/admin/", follow_redirects=False).status_code == 302
        finally:
            client.portal.call(connections_for(settings).aclose)


# -- Flask-Login during a Redis outage ----------------------------------------------------
@pytest.mark.real_redis
@pytest.mark.parametrize("stack", [False, True], ids=["init_app", "init_stack"])
def test_flask_login_during_an_outage_logs_one_line_and_answers_what_each_route_needs(
    stack: bool, own_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask-Login reads the session in its after_request hook: during an outage that
    must be neither a traceback nor a 503 for a route that never needs the session."""
    from flask_login import LoginManager, UserMixin, login_required, login_user

    from .support.clients import make_settings
    from .support.servers import stop_redis_server

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    settings = make_settings(own_server.url, breaker_cooldown=30)
    app = Flask(__name__)
    app.config["TESTING"] = False  # errors are logged and answered, as in production
    if stack:
        init_stack(app, settings, limit="1000/minute")
    else:
        init_app(app, settings)
    LoginManager(app).user_loader(lambda user_id: User(user_id))
    app.add_url_rule("/login", "login", lambda: login_user(User("ann")) and {"ok": True},
                     methods=["POST"])
    app.add_url_rule("/health", "health", lambda: {"ok": True})
    app.add_url_rule("/private", "private", login_required(lambda: {"ok": True}))
    client = app.test_client()
    assert client.post("/login").status_code == 200
    assert client.get("/private").status_code == 200
    stop_redis_server(own_server)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        statuses = [client.get(path).status_code
                    for path in ("/health", "/private", "/health", "/private")]
    assert statuses == [200, 503, 200, 503]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert len(caplog.records) == 1


@pytest.mark.real_redis
def test_flask_login_sessions_keep_redis_compact_encoding(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask-Login's _id is a 128-digit hex digest (130 bytes as JSON, over Redis'
    hash-max-listpack-value of 64): stored as its 64 bytes, the session stays a listpack,
    and the "larger encoding" warning says nothing at login."""
    from flask_login import LoginManager, UserMixin, current_user, login_user

    from .support.clients import make_settings, raw_client

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    settings = make_settings(redis_server.url)
    app = Flask(__name__)
    app.config.update(TESTING=True, SESSION_PROTECTION="strong")
    init_app(app, settings)
    LoginManager(app).user_loader(lambda user_id: User(user_id))
    app.add_url_rule("/login", "login", lambda: login_user(User("ann")) and {"ok": True},
                     methods=["POST"])
    app.add_url_rule("/me", "me", lambda: {"user": current_user.get_id(),
                                           "id": session.get("_id")})
    app.add_url_rule("/digest/<value>", "digest",
                     lambda value: session.update(digest=value) or "ok", methods=["POST"])
    client = app.test_client()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert client.post("/login").status_code == 200
    assert not caplog.records
    me = client.get("/me").json
    assert me["user"] == "ann" and len(me["id"]) == 128  # "strong" protection compared it
    redis = raw_client(settings)
    (key,) = [k for k in audit_keyspace(settings) if ":session:{" in k]
    assert redis.object("encoding", key) == b"listpack"
    client.post("/digest/" + "0a" * 64)
    client.post("/digest/short")  # stored as it is now: its packed twin goes
    assert sorted(f for f in redis.hkeys(key) if f.endswith(b"digest")) == [b"digest"]
    client.post("/digest/" + "0b" * 64)
    assert sorted(f for f in redis.hkeys(key) if f.endswith(b"digest")) == [b"\x02digest"]
    assert client.get("/me").json["user"] == "ann"
