"""Flask's session contract, kept by the Flask adapter: what Flask's own session and
flash tests rely on, for a server-side store (our tests, through the public API)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, flash, get_flashed_messages, session
from markupsafe import Markup

from redis_middleware import ConfigError, Settings
from redis_middleware.flask import RedisSessionInterface, flask_settings, init_app, init_stack

from .support.audit import audit_keyspace
from .support.clients import SECRET

pytestmark = pytest.mark.usefixtures("audit")

FLASK_SECRET = "f" * 40


class App(Flask):
    """A Flask app whose routes are named by their rule (so lambdas can be views)."""

    def __init__(self) -> None:
        super().__init__(__name__)

    def add_url_rule(self, rule: str, endpoint: str | None = None, *args: Any,
                     **options: Any) -> None:
        methods = ",".join(sorted(options.get("methods") or ["GET"]))
        super().add_url_rule(rule, endpoint or f"{methods} {rule}", *args, **options)


@pytest.fixture(params=["init_app", "init_stack"])
def make_app(request: pytest.FixtureRequest, settings: Settings) -> Callable[..., Flask]:
    """A Flask app on our sessions, installed alone or with the whole stack."""
    def make(**config: Any) -> Flask:
        app = App()
        app.config.update(TESTING=True, **config)
        if request.param == "init_app":
            init_app(app, settings)
        else:
            init_stack(app, settings, limit="1000/minute", exempt=["/health"])
        return app
    return make


def cookie_header(response: Any, name: str = "session") -> str | None:
    return next((h for h in response.headers.getlist("Set-Cookie")
                 if h.startswith(name + "=")), None)


def test_values_round_trip_as_flasks_serializer_makes_them(make_app: Any) -> None:
    app = make_app()
    stamp = dt.datetime(2026, 12, 1, 20, 30, tzinfo=dt.UTC)
    ident = uuid.uuid4()

    @app.post("/set")
    def set_values() -> str:
        session.update(t=(1, "a"), b=b"\\x00raw", m=Markup("<b>x</b>"), u=ident, d=stamp,
                       nested={"k": [1, (2, 3)]}, plain="text")
        return "ok"

    @app.get("/get")
    def get_values() -> str:
        assert session["t"] == (1, "a") and isinstance(session["t"], tuple)
        assert session["b"] == b"\\x00raw"
        assert session["m"] == Markup("<b>x</b>") and isinstance(session["m"], Markup)
        assert session["u"] == ident and session["d"] == stamp
        assert session["nested"] == {"k": [1, (2, 3)]} and session["plain"] == "text"
        return "same"

    client = app.test_client()
    client.post("/set")
    assert client.get("/get").text == "same"


def test_flash_messages_with_categories(make_app: Any) -> None:
    app = make_app()

    @app.post("/flash")
    def add() -> str:
        flash("Saved your changes, all of them, with a message longer than sixty bytes")
        flash("Careful", "warning")
        flash("<b>bold</b>", "error")
        return "ok"

    @app.get("/show")
    def show() -> Any:
        return {"all": get_flashed_messages(with_categories=True)}

    @app.get("/errors")
    def errors() -> Any:
        return {"errors": get_flashed_messages(category_filter=["error"])}

    client = app.test_client()
    client.post("/flash")
    assert client.get("/show").json == {"all": [
        ["message", "Saved your changes, all of them, with a message longer than sixty bytes"],
        ["warning", "Careful"], ["error", "<b>bold</b>"]]}
    assert client.get("/show").json == {"all": []}  # consumed
    client.post("/flash")
    assert client.get("/errors").json == {"errors": ["<b>bold</b>"]}


def test_test_request_context_and_app_context_have_a_session(make_app: Any) -> None:
    app = make_app()
    with app.test_request_context("/"):
        session["x"] = 1
        assert session["x"] == 1 and session.new
    with app.app_context(), app.test_request_context():
        assert "x" not in session  # no cookie: a new session


def test_session_transaction(make_app: Any) -> None:
    app = make_app()
    app.get("/who")(lambda: {"user": session.get("user"), "n": session.get("n")})
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["user"] = "ann"
    assert client.get("/who").json == {"user": "ann", "n": None}
    with client.session_transaction() as sess:
        assert sess["user"] == "ann"
        sess["n"] = 2
    assert client.get("/who").json == {"user": "ann", "n": 2}


def test_modified_accessed_new_mean_what_flask_says(make_app: Any) -> None:
    app = make_app()
    seen: dict[str, Any] = {}

    @app.post("/cart")
    def cart() -> str:
        seen["new"] = session.new
        session.setdefault("cart", []).append(1)
        session.modified = True  # Flask's idiom after an in-place change
        seen["modified"] = session.modified
        return "ok"

    @app.get("/peek")
    def peek() -> str:
        seen["accessed_before"] = session.accessed
        value = str(session.get("cart"))
        seen["accessed_after"] = session.accessed
        seen["modified_read"] = session.modified
        return value

    client = app.test_client()
    client.post("/cart")
    assert seen == {"new": True, "modified": True}
    client.post("/cart")
    assert seen["new"] is False
    response = client.get("/peek")
    assert response.text == "[1, 1]"
    assert seen["accessed_after"] and not seen["modified_read"]
    assert "Cookie" in response.headers["Vary"]
    assert "Vary" not in app.test_client().get("/health").headers  # untouched session


def test_permanent_sessions_follow_flask(make_app: Any) -> None:
    app = make_app(PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=2),
                   SESSION_REFRESH_EACH_REQUEST=True)

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    app.post("/visit")(lambda: session.update(v=1) or "ok")
    app.get("/read")(lambda: str(session.get("user_id")))
    client = app.test_client()
    browser_only = cookie_header(client.post("/visit"))
    assert browser_only is not None and "Max-Age" not in browser_only  # not permanent
    logged_in = cookie_header(client.post("/login"))
    assert logged_in is not None and "Max-Age=7200" in logged_in
    refreshed = cookie_header(client.get("/read"))  # SESSION_REFRESH_EACH_REQUEST
    assert refreshed is not None and "Max-Age=7200" in refreshed


def test_refresh_each_request_resends_an_untouched_permanent_session(make_app: Any) -> None:
    """Flask's default: a permanent session's cookie is re-sent by every request, also
    by one that never reads the session, with Vary: Cookie and both Max-Age and Expires."""
    from email.utils import parsedate_to_datetime

    app = make_app(PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=2))

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    app.get("/nothing")(lambda: "")
    client = app.test_client()
    first = cookie_header(client.post("/login"))
    assert first is not None
    response = client.get("/nothing")
    refreshed = cookie_header(response)
    assert refreshed is not None and "Max-Age=7200" in refreshed
    expires = re.search(r"Expires=([^;]+)", refreshed)
    assert expires is not None
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert abs((parsedate_to_datetime(expires[1]) - expected).total_seconds()) < 5
    assert refreshed.split(";")[0] == first.split(";")[0]  # the same session
    assert response.headers["Vary"] == "Cookie"
    assert client.get("/nothing").headers.get("Vary") == "Cookie"
    browser_only = app.test_client()
    browser_only.post("/login")
    with browser_only.session_transaction() as sess:
        sess.permanent = False
    assert cookie_header(browser_only.get("/nothing")) is None  # not permanent: nothing


def test_no_refresh_each_request(make_app: Any) -> None:
    app = make_app(SESSION_REFRESH_EACH_REQUEST=False)

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    app.get("/read")(lambda: str(session.get("user_id")))
    client = app.test_client()
    client.post("/login")
    assert cookie_header(client.get("/read")) is None


def test_clear_expires_the_cookie(make_app: Any) -> None:
    app = make_app()
    app.post("/in")(lambda: session.update(a=1) or "ok")
    app.post("/out")(lambda: session.clear() or "ok")
    app.get("/a")(lambda: str(session.get("a")))
    client = app.test_client()
    client.post("/in")
    header = cookie_header(client.post("/out"))
    assert header is not None and "Max-Age=0" in header
    assert client.get("/a").text == "None"


def test_exempt_paths_of_the_stack_still_have_a_session(settings: Settings) -> None:
    app = App()
    init_stack(app, settings, limit="1000/minute", exempt=["/health"])
    app.get("/health")(lambda: {"ok": True, "user": session.get("user")})
    app.post("/login")(lambda: session.update(user="u") or "ok")
    client = app.test_client()
    client.post("/login")
    assert client.get("/health").json == {"ok": True, "user": "u"}


def test_cookie_attributes_come_from_flask_config(settings: Settings) -> None:
    bare = Settings(redis_url=settings.redis_url, key_prefix=settings.key_prefix,
                    secret_key=(SECRET,))
    app = App()
    app.config.update(SESSION_COOKIE_NAME="sid", SESSION_COOKIE_DOMAIN="example.test",
                      SESSION_COOKIE_PATH="/app", SESSION_COOKIE_SECURE=True,
                      SESSION_COOKIE_HTTPONLY=False, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_PARTITIONED=True)
    init_app(app, bare)
    app.post("/app/set")(lambda: session.update(a=1) or "ok")
    response = app.test_client().post("/app/set", base_url="https://example.test")
    header = cookie_header(response, "sid")
    assert header is not None
    parts = {p.strip().split("=")[0] for p in header.split(";")}
    assert {"Domain", "Path", "Secure", "SameSite", "Partitioned"} <= parts
    assert "HttpOnly" not in parts and "Path=/app" in header and "SameSite=Strict" in header


def test_explicit_settings_win_over_flask_config(settings: Settings) -> None:
    app = App()
    app.config.update(SESSION_COOKIE_NAME="from_flask", SESSION_COOKIE_SAMESITE="Strict")
    mine = flask_settings(app, settings.replace(session_cookie_name="from_settings"))
    assert mine.session_cookie_name == "from_settings"
    assert mine.session_cookie_samesite == "strict"  # Settings left the default: Flask's
    assert flask_settings(app, settings, cookie_name="opt").session_cookie_name == "opt"


def test_flask_secret_key_and_fallbacks_sign_and_verify(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("REDIS_MIDDLEWARE_KEY_PREFIX", settings.key_prefix)
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    old = App()
    old.config["SECRET_KEY"] = "o" * 40
    init_app(old)
    old.post("/set")(lambda: session.update(a=1) or "ok")
    cookie = cookie_header(old.test_client().post("/set"))
    assert cookie is not None

    new = App()
    new.config.update(SECRET_KEY=FLASK_SECRET, SECRET_KEY_FALLBACKS=["o" * 40])
    interface = init_app(new)
    assert interface.core_for(new)[0].settings.secret_key == (FLASK_SECRET, "o" * 40)
    new.get("/a")(lambda: str(session.get("a")))
    client = new.test_client()
    client.set_cookie("session", cookie.split(";")[0].split("=", 1)[1])
    response = client.get("/a")
    assert response.text == "1"  # verified by the fallback
    resigned = cookie_header(response)
    assert resigned is not None and resigned != cookie  # and re-signed by the new key


def test_a_short_flask_secret_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "memory://")
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = App()
    app.config["SECRET_KEY"] = "dev"
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        init_app(app)


@pytest.mark.parametrize("install", [init_app, init_stack])
def test_a_secret_key_option_replaces_a_short_flask_secret(
        install: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Options rank above Flask's configuration: a ``secret_key`` option given beside a
    short SECRET_KEY (a test suite's "dev") signs, and the short one is not even checked."""
    monkeypatch.setenv("REDIS_URL", "memory://")
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = App()
    app.config["SECRET_KEY"] = "dev"
    install(app, secret_key="k" * 40)
    app.post("/")(lambda: session.update(a=1) or "")
    app.get("/")(lambda: dict(session))
    client = app.test_client()
    client.post("/")
    assert client.get("/").json == {"a": 1}
    interface = app.session_interface
    assert isinstance(interface, RedisSessionInterface)
    assert interface.core_for(app)[0].settings.secret_key == ("k" * 40,)


@pytest.mark.parametrize("install", [init_app, init_stack])
def test_a_short_secret_set_after_install_keeps_the_last_one_that_worked(
        install: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An app factory or a test suite that sets a SECRET_KEY too short to sign with
    after init_app: the previous configuration goes on, one WARNING, no traceback and
    no 500 per request."""
    from redis_middleware.sansio import incidents

    monkeypatch.setattr(incidents, "_last_logged", {})
    monkeypatch.setenv("REDIS_URL", "memory://")
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = App()
    app.config["SECRET_KEY"] = "0" * 40
    install(app)
    app.post("/")(lambda: session.update(a=1) or "")
    app.get("/")(lambda: dict(session))
    client = app.test_client()
    client.post("/")
    app.config["SECRET_KEY"] = "dev"
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        answers = [client.get("/") for _ in range(3)]
    assert [(a.status_code, a.json) for a in answers] == [(200, {"a": 1})] * 3
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "at least 32 characters" in caplog.records[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_application_root_is_the_default_cookie_path(settings: Settings) -> None:
    app = App()
    app.config["APPLICATION_ROOT"] = "/shop"
    interface = RedisSessionInterface(settings.replace(secret_key=(SECRET,)))
    assert interface.core_for(app)[0].settings.session_cookie_path == "/shop"
    audit_keyspace(settings)


def test_init_stack_on_memory_uses_flasks_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret generated for memory:// is no choice: Flask's SECRET_KEY signs instead,
    also after the stack's options were applied."""
    monkeypatch.setenv("REDIS_URL", "memory://")
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = App()
    app.config["SECRET_KEY"] = FLASK_SECRET
    middleware = init_stack(app, limit="100/minute")
    assert middleware.core.sessions is not None
    assert middleware.core.sessions.settings.secret_key == (FLASK_SECRET,)


# -- configuration read per request ---------------------------------------------------
def test_cookie_configuration_changed_after_install_is_followed(make_app: Any) -> None:
    """App factories and test suites change app.config after init_app / init_stack."""
    app = make_app()
    app.post("/set")(lambda: session.update(a=1) or "ok")
    app.config.update(SESSION_COOKIE_NAME="late", APPLICATION_ROOT="/shop",
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=True,
                      PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=5))
    client = app.test_client()
    header = cookie_header(client.post("/set"), "late")
    assert header is not None
    assert "Path=/shop" in header and "SameSite=Strict" in header and "Secure" in header
    app.config["SESSION_COOKIE_PATH"] = "/other"
    header = cookie_header(app.test_client().post("/set"), "late")
    assert header is not None and "Path=/other" in header


def test_permanent_lifetime_changed_after_install_is_followed(make_app: Any) -> None:
    app = make_app()

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(minutes=5)
    header = cookie_header(app.test_client().post("/login"))
    assert header is not None and "Max-Age=300" in header


@pytest.mark.parametrize("install", [init_app, init_stack])
def test_secret_key_rotated_after_install_is_followed(
    install: Any, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """As Flask's own sessions: a new SECRET_KEY no longer reads the old cookies until the
    old key is listed in SECRET_KEY_FALLBACKS."""
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("REDIS_MIDDLEWARE_KEY_PREFIX", settings.key_prefix)
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = App()
    app.config.update(TESTING=True, SECRET_KEY="0" * 40)
    install(app)
    app.post("/")(lambda: session.update(a=1) or "")
    app.get("/")(lambda: dict(session))
    client = app.test_client()
    client.post("/")
    assert client.get("/").json == {"a": 1}
    app.config["SECRET_KEY"] = "?" * 40
    assert client.get("/").json == {}
    app.config.update(SECRET_KEY="+" * 40, SECRET_KEY_FALLBACKS=["0" * 40])
    assert client.get("/").json == {"a": 1}


def test_refresh_each_request_changed_after_install_is_followed(make_app: Any) -> None:
    app = make_app(SESSION_REFRESH_EACH_REQUEST=False)

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    app.get("/read")(lambda: str(session.get("user_id")))
    client = app.test_client()
    client.post("/login")
    assert cookie_header(client.get("/read")) is None
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    assert cookie_header(client.get("/read")) is not None


# -- secrets ------------------------------------------------------------------------------
def test_a_bytes_secret_key_that_is_not_utf8_signs(make_app: Any) -> None:
    """``os.urandom(32)`` is a usual Flask SECRET_KEY: one character per byte."""
    app = make_app(SECRET_KEY=bytes(range(200, 232)))
    app.post("/set")(lambda: session.update(a=1) or "ok")
    app.get("/get")(lambda: str(session.get("a")))
    client = app.test_client()
    assert client.post("/set").status_code == 200
    assert client.get("/get").text == "1"


def test_bytes_secrets_keep_the_length_rule_and_utf8_text_reads_as_before() -> None:
    from redis_middleware.flask import secret_text

    assert secret_text(b"\xff" * 32) == "\xff" * 32  # lossless, one character per byte
    assert secret_text("é".encode() * 20) == "é" * 20  # UTF-8 text: as it always read
    assert secret_text(b"\xff" * 31) != secret_text(b"\xff" * 32)
    app = App()
    app.config["SECRET_KEY"] = b"\xff" * 16  # 16 random bytes: too short
    with pytest.raises(ConfigError, match="32"):
        flask_settings(app, Settings(redis_url="memory://"))


def test_a_bytes_secret_key_beside_settings_with_their_own_secret(settings: Settings) -> None:
    app = App()
    app.config["SECRET_KEY"] = b"\x80" * 32
    init_app(app, settings)  # used to raise UnicodeDecodeError
    app.post("/set")(lambda: session.update(a=1) or "ok")
    assert app.test_client().post("/set").status_code == 200


def test_init_stack_with_a_real_redis_url_takes_flasks_secret(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached here
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY", raising=False)
    app = App()
    app.config["SECRET_KEY"] = FLASK_SECRET
    middleware = init_stack(app, limit="100/minute")
    assert middleware.settings.secret_key == (FLASK_SECRET,)
    assert middleware.core.sessions is not None
    assert middleware.core.sessions.settings.secret_key == (FLASK_SECRET,)


def test_a_permanent_session_lasts_flasks_default_lifetime(make_app: Any) -> None:
    """PERMANENT_SESSION_LIFETIME left at Flask's 31 days is still Flask's word."""
    app = make_app()

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    header = cookie_header(app.test_client().post("/login"))
    assert header is not None and f"Max-Age={31 * 86400}" in header


# -- ``session.modified``: Flask's meaning (assigned to), and what the response carries --

def expires_in(header: str) -> float:
    """Seconds from now until the cookie's Expires."""
    from email.utils import parsedate_to_datetime

    found = re.search(r"Expires=([^;]+)", header)
    assert found is not None, header
    return (parsedate_to_datetime(found[1]) - dt.datetime.now(dt.UTC)).total_seconds()


def cookie_clock_ahead(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    """Move the clock the cookies' Expires is computed from (and nothing else's)."""
    import time
    from types import SimpleNamespace

    from redis_middleware.sansio.sessions import cookies

    now = time.time
    monkeypatch.setattr(cookies, "time", SimpleNamespace(time=lambda: now() + seconds))


def no_refresh_app(make_app: Any) -> tuple[Flask, dict[str, Any]]:
    """A signed-in permanent session, with SESSION_REFRESH_EACH_REQUEST off: its cookie
    is sent again only when the session is modified."""
    app = make_app(SESSION_REFRESH_EACH_REQUEST=False,
                   PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=2))
    seen: dict[str, Any] = {}

    @app.post("/login")
    def login() -> str:
        session["user_id"] = "7"
        session.permanent = True
        return "ok"

    @app.get("/read")
    def read() -> str:
        user = str(session.get("user_id"))
        seen["modified"] = session.modified
        return user

    return app, seen


def resent_later(client: Any, monkeypatch: pytest.MonkeyPatch, ahead: int, path: str
                 ) -> Any:
    """Log in, move the clock ``ahead`` seconds, POST ``path``: its response, which must
    send the same session's cookie again with an expiry that starts now (7200 s)."""
    first = cookie_header(client.post("/login"))
    assert first is not None
    cookie_clock_ahead(monkeypatch, ahead)
    response = client.post(path)
    resent = cookie_header(response)
    assert resent is not None, "an assigned permanent session sends its cookie again"
    assert resent.split(";")[0] == first.split(";")[0]  # the same session, no new id
    assert abs(expires_in(resent) - (ahead + 7200)) < 5  # the expiry starts again now
    return response


def test_an_equal_value_is_modified_and_resends_the_permanent_cookie(
        make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, seen = no_refresh_app(make_app)

    @app.post("/again")
    def again() -> str:
        session["user_id"] = "7"  # the value it holds
        seen["modified"] = session.modified
        return "ok"

    client = app.test_client()
    response = resent_later(client, monkeypatch, 3600, "/again")
    assert seen["modified"] is True
    assert "Max-Age=7200" in (cookie_header(response) or "")
    assert "Cookie" in response.headers["Vary"]

    read = client.get("/read")  # a read is no modification: no cookie
    assert read.text == "7" and seen["modified"] is False
    assert cookie_header(read) is None


def test_modified_set_by_hand_resends_the_cookie_and_false_takes_it_back(
        make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, seen = no_refresh_app(make_app)

    @app.post("/mark")
    def mark() -> str:
        session.modified = True  # nothing changed
        seen["modified"] = session.modified
        return "ok"

    @app.post("/unmark")
    def unmark() -> str:
        session["user_id"] = "7"
        session.modified = False  # Flask's way to send no cookie for it
        seen["modified"] = session.modified
        return "ok"

    client = app.test_client()
    resent_later(client, monkeypatch, 600, "/mark")
    assert seen["modified"] is True

    response = client.post("/unmark")
    assert seen["modified"] is False
    assert cookie_header(response) is None
    assert client.get("/read").text == "7"


@pytest.mark.parametrize(("change", "modified"), [
    pytest.param(lambda s: s.update(n=1), True, id="update-with-an-equal-value"),
    pytest.param(lambda s: s.update(), True, id="update-with-nothing"),
    pytest.param(lambda s: setattr(s, "permanent", False), True, id="permanent-equal"),
    pytest.param(lambda s: s.setdefault("n", 2), False, id="setdefault-of-a-present-key"),
    pytest.param(lambda s: s.setdefault("m", 2), True, id="setdefault-of-a-new-key"),
    pytest.param(lambda s: s.pop("m", None), False, id="pop-of-an-absent-key"),
    pytest.param(lambda s: s.get("n"), False, id="a-read"),
])
def test_what_counts_as_modified_is_what_flask_counts(
        make_app: Any, change: Callable[[Any], Any], modified: bool) -> None:
    app = make_app()
    seen: dict[str, Any] = {}

    @app.post("/change")
    def change_it() -> str:
        change(session)
        seen["modified"] = session.modified
        return "ok"

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["n"] = 1
    response = client.post("/change")
    assert seen["modified"] is modified
    # A browser-session cookie is sent again exactly when the session is modified.
    assert (cookie_header(response) is not None) is modified
    with client.session_transaction() as sess:
        assert sess.get("n") == 1


def test_an_emptied_session_expires_even_a_cookie_with_nothing_behind_it(
        make_app: Any) -> None:
    """Flask removes the cookie of a session modified to be empty, whether or not a
    stored session stood behind it."""
    app = make_app()
    app.post("/out")(lambda: session.clear() or "ok")
    app.get("/read")(lambda: str(session.get("n")))
    stale = app.test_client()
    stale.set_cookie("session", "not-a-signed-id")
    header = cookie_header(stale.post("/out"))
    assert header is not None and "Max-Age=0" in header
    assert cookie_header(app.test_client().get("/read")) is None  # nothing assigned


@pytest.mark.parametrize("install", ["init_app", "init_stack"])
def test_an_equal_value_sends_no_write_to_redis(install: str, settings: Settings) -> None:
    """The cookie is sent again; Redis runs only the read of the session (a recent
    slide: HGETALL alone), no script and no write."""
    import redis

    if settings.target.kind == "memory":
        pytest.skip("counted by a real server's INFO commandstats")
    settings = settings.replace(session_slide_interval=60)
    app = App()
    app.config.update(TESTING=True, SESSION_REFRESH_EACH_REQUEST=False)
    (init_app if install == "init_app" else init_stack)(app, settings)

    @app.post("/<step>")
    def assign(step: str) -> str:  # /login stores the values, /again assigns them again
        session["user_id"] = "7"
        session["cart"] = [1, 2]
        if step == "login":
            session.permanent = True
        else:
            session.modified = True
        return "ok"

    client = app.test_client()
    client.post("/login")
    client.post("/again")  # the first load after the login slides the expiry
    admin = redis.Redis.from_url(settings.redis_url)
    try:
        admin.config_resetstat()
        response = client.post("/again")
        stats: dict[str, Any] = admin.info("commandstats")
    finally:
        admin.close()
    used = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    # The server is this test run's: only commands that write are counted against the
    # request (another client's read would not be ours to refuse).
    writes = {"hset", "hdel", "hmset", "del", "unlink", "expire", "pexpire", "pexpireat",
              "eval", "evalsha", "set", "zadd", "zrem", "sadd", "srem", "publish"}
    assert used.get("hgetall", 0) >= 1 and not writes & set(used), used
    assert cookie_header(response) is not None
