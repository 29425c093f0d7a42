"""What Starlette's SessionMiddleware promises, kept by ours where a server-side store
can keep it (our tests, written from that contract), plus the header and race rules of
the session layer, on ASGI and WSGI alike."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from redis_middleware import ConfigError, Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.asgi import SessionMiddleware

from .support import apps
from .support.clients import Clients, make_settings

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]


async def view(request: Request) -> JSONResponse:
    return JSONResponse({"session": request.session})  # the session as JSON, directly


async def update(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse({"session": request.session})


async def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": request.session})


async def dict_ops(request: Request) -> JSONResponse:
    session = request.session
    session["n"] = 1
    merged = session | {"extra": True}
    return JSONResponse({
        "is_dict": isinstance(session, dict), "dumps": json.loads(json.dumps(session)),
        "copy": dict(session), "merged": merged, "equal": session == {"n": 1},
        "spread": {**session}, "keys": sorted(session), "len": len(session),
    })


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/view", view), Route("/update", update, methods=["POST"]),
                             Route("/clear", clear, methods=["POST"]),
                             Route("/dict", dict_ops)])


@contextmanager
def serve(app: Any, settings: Settings, base_url: str = "http://testserver") -> Iterator[
        TestClient]:
    """A test client whose event loop's Redis clients are closed before it ends."""
    with TestClient(app, base_url=base_url) as client:
        try:
            yield client
        finally:
            client.portal.call(connections_for(settings).aclose)


def client_for(settings: Settings, base_url: str = "http://testserver", **options: Any
               ) -> Any:
    return serve(SessionMiddleware(starlette_app(), settings, **options), settings, base_url)


def set_cookie(response: Any) -> str:
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    return str(headers[0])


def test_the_session_is_a_json_serialisable_dict(settings: Settings) -> None:
    with client_for(settings) as client:
        assert client.get("/view").json() == {"session": {}}
        assert client.post("/update", json={"some": "data"}).json() == {
            "session": {"some": "data"}}
        assert client.get("/view").json() == {"session": {"some": "data"}}
        assert client.get("/dict").json() == {
            "is_dict": True, "dumps": {"some": "data", "n": 1},
            "copy": {"some": "data", "n": 1}, "merged": {"some": "data", "n": 1, "extra": True},
            "equal": False, "spread": {"some": "data", "n": 1}, "keys": ["n", "some"],
            "len": 2}


def test_clearing_expires_the_cookie(settings: Settings) -> None:
    with client_for(settings) as client:
        client.post("/update", json={"some": "data"})
        response = client.post("/clear")
        assert response.json() == {"session": {}}
        assert "Max-Age=0" in set_cookie(response)
        assert client.get("/view").json() == {"session": {}}


def test_a_foreign_or_invalid_cookie_is_an_empty_session(settings: Settings) -> None:
    with client_for(settings) as client:
        client.post("/update", json={"some": "data"})
        good = client.cookies["session"]
    # One character of the signed id changed (the signature's last character may differ
    # only in base64 padding bits, so the id is what is altered).
    tampered = ("b" if good[0] != "b" else "c") + good[1:]
    starlette_style = "eyJzb21lIjogImRhdGEifQ==.Z2Fy.c2ln"  # a client-side session cookie
    with client_for(settings) as fresh:
        assert fresh.get("/view", headers={"cookie": f"session={good}"}).json() == {
            "session": {"some": "data"}}
        for bad in ("invalid", tampered, starlette_style, ""):
            response = fresh.get("/view", headers={"cookie": f"session={bad}"})
            assert response.json() == {"session": {}}
            assert "set-cookie" not in response.headers


def test_cookie_attributes_like_starlettes_options(settings: Settings) -> None:
    with client_for(settings, base_url="https://testserver", cookie_path="/app",
                    cookie_domain="example.com", cookie_samesite="strict",
                    cookie_secure=True, absolute_lifetime=600) as client:
        header = set_cookie(client.post("/update", json={"a": 1}))
    for part in ("Path=/app", "Domain=example.com", "SameSite=Strict", "Secure", "HttpOnly",
                 "Max-Age=600"):
        assert part in header


def test_max_age_none_is_a_browser_session_cookie(settings: Settings) -> None:
    with client_for(settings, cookie_persistent=False) as client:
        header = set_cookie(client.post("/update", json={"a": 1}))
    assert "Max-Age" not in header and "Expires" not in header


def test_a_sub_path_app_uses_its_path(settings: Settings) -> None:
    inner = SessionMiddleware(starlette_app(), settings, cookie_path="/second_app")
    outer = Starlette(routes=[Mount("/second_app", app=inner)])
    with serve(outer, settings) as client:
        response = client.post("/second_app/update", json={"a": 1})
        assert response.json() == {"session": {"a": 1}}
        assert "Path=/second_app" in set_cookie(response)
        assert client.get("/second_app/view").json() == {"session": {"a": 1}}


def test_samesite_none_is_always_secure_even_over_http(make_client: Clients) -> None:
    client = make_client(cookie_samesite="none")  # secure left to auto
    header = client.post("/set", json={"a": 1}).headers["set-cookie"]
    assert "SameSite=None" in header and "Secure" in header


def test_samesite_none_with_secure_off_is_refused_at_startup(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="SESSION_COOKIE_SECURE"):
        settings.replace(session_cookie_samesite="none", session_cookie_secure=False)


def vary_app(vary: list[str]) -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        value = str(request.session.get("a"))
        response = PlainTextResponse(value)
        for line in vary:
            response.headers.append("Vary", line)
        return response
    return Starlette(routes=[Route("/", endpoint)])


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        pytest.param([], ["Cookie"], id="added"),
        pytest.param(["X-Cookie-Consent"], ["X-Cookie-Consent, Cookie"],
                     id="a-token-containing-cookie-is-another-token"),
        pytest.param(["Accept", "Origin, accept"], ["Accept, Origin, accept, Cookie"],
                     id="two-lines-merged-once"),
        pytest.param(["Accept, cookie"], ["Accept, cookie"], id="already-there"),
        pytest.param(["*"], ["*"], id="star"),
    ],
)
def test_vary_cookie_is_merged_by_tokens(settings: Settings, vary: list[str],
                                         expected: list[str]) -> None:
    with serve(SessionMiddleware(vary_app(vary), settings), settings) as client:
        assert client.get("/").headers.get_list("vary") == expected


def test_vary_merge_on_wsgi(settings: Settings) -> None:
    from redis_middleware.wsgi import ENVIRON_KEY
    from redis_middleware.wsgi import SessionMiddleware as WSGISessions

    from .support.wsgi_transport import WSGITransport

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ[ENVIRON_KEY].get("a")
        start_response("200 OK", [("Vary", "X-Cookie-Consent"), ("vary", "Accept")])
        return [b"ok"]

    import httpx

    with httpx.Client(transport=WSGITransport(WSGISessions(app, settings)),
                      base_url="http://testserver") as client:
        assert client.get("/").headers.get_list("vary") == ["X-Cookie-Consent, Accept, Cookie"]


def test_a_login_overlapping_a_slow_request_keeps_both(make_client: Clients,
                                                      settings: Settings) -> None:
    """The slow request loaded the old id before the login moved it: its change lands in
    the new session, and its response carries no cookie at all."""
    browser = make_client()
    browser.post("/set", json={"a": 1})
    old = {"cookie": f"session={browser.cookies['session']}"}
    slow: dict[str, Any] = {}

    def slow_write() -> None:
        slow["response"] = make_client().post("/set?sleep=0.5", json={"late": True},
                                              headers=old)

    thread = threading.Thread(target=slow_write)
    thread.start()
    assert apps.sleeping.wait(10)  # the slow request has its session: now the login
    login = browser.post("/login?user=ann", headers=old)
    thread.join()
    assert slow["response"].status_code == 200
    assert "set-cookie" not in slow["response"].headers
    new = login.cookies["session"]
    assert make_client().get("/get", headers={"cookie": f"session={new}"}).json() == {
        "a": 1, "late": True, "user_id": "ann"}
    assert make_client().get("/get", headers=old).json() == {}


def test_logout_still_refuses_a_late_write(make_client: Clients, settings: Settings) -> None:
    """Only a login forwards late writes; after a logout they are refused (no resurrection)."""
    browser = make_client()
    browser.post("/set", json={"a": 1})
    old = {"cookie": f"session={browser.cookies['session']}"}
    slow: dict[str, Any] = {}
    client = make_client()  # built before the race: its setup is not part of the timing
    thread = threading.Thread(target=lambda: slow.update(response=client.post(
        "/set?sleep=1.0", json={"late": True}, headers=old)))
    thread.start()
    assert apps.sleeping.wait(10)  # the slow request has its session: now the logout
    browser.post("/clear", headers=old)
    thread.join()
    assert "Max-Age=0" in slow["response"].headers["set-cookie"]
    assert make_client().get("/get", headers=old).json() == {}


def test_ordinary_extension_sizes_fit_the_defaults(make_client: Clients) -> None:
    """Flask-Login's 128-hex-digit _id, a few flashes, a CSRF token with metadata, a cart."""
    client = make_client()
    body = {"_id": "f" * 128, "_flashes": [["message", "x" * 200]] * 5,
            "csrf": {"token": "t" * 88, "issued": 1764620000},
            "cart": [{"sku": f"item-{i}", "qty": i} for i in range(50)]}
    assert client.post("/set", json=body).status_code == 200
    assert client.get("/get").json() == body


def test_size_caps_still_hold(make_client: Clients) -> None:
    client = make_client()
    response = client.post("/set", json={"big": "x" * (64 * 1024 + 1)})
    assert response.status_code == 413 and "MAX_VALUE_BYTES" in response.json()["detail"]


def test_a_large_value_is_logged_once_as_not_compact(
    make_client: Clients, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis_middleware.sansio.sessions import core as sessions

    monkeypatch.setattr(sessions, "_compact_warned", False)
    client = make_client()
    with caplog.at_level("WARNING", logger="redis_middleware.sessions"):
        client.post("/set", json={"big": "x" * 100})
        client.post("/set", json={"big2": "y" * 100})
    lines = [r for r in caplog.records if "hash-max-listpack-value" in r.getMessage()]
    assert len(lines) == 1


def test_default_caps_fit_real_extensions() -> None:
    settings = make_settings("memory://")
    assert settings.session_max_value_bytes == 64 * 1024
    assert settings.session_max_bytes == 1024 * 1024
