"""RedisMiddleware: the components in order, and the round-trip budget, counted exactly."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support import apps
from .support.audit import audit_keyspace
from .support.clients import Clients, make_settings, stale_if_error_is_served
from .support.wsgi_direct import call

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]

OPTIONS: dict[str, Any] = {"limit": "100/minute", "routes": {"/c/*": 60},
                           "exempt": ["/text"], "key": "user_or_ip"}


class Counter:
    def __init__(self, settings: Settings) -> None:
        self.conns = connections_for(settings)
        self.mark()

    def mark(self) -> None:
        self.start = self.conns.round_trips - self.conns.script_loads

    def trips(self) -> int:
        """Round trips since the last mark, without first-use script loads (on a
        cluster each node loads each script once, whatever warmed up before)."""
        n = self.conns.round_trips - self.conns.script_loads - self.start
        self.mark()
        return n


def stack(make_client: Clients, **options: Any) -> Any:
    return make_client("RedisMiddleware", **{**OPTIONS, **options})


def warm(client: Any) -> None:
    """Load every script once (a first use costs one more round trip)."""
    client.get("/c/warm")
    client.post("/login?user=warm")
    client.get("/get")
    client.post("/set", json={"w": 1})
    client.cookies.clear()


def test_round_trip_budget(make_client: Clients, settings: Settings) -> None:
    client = stack(make_client)
    warm(client)
    count = Counter(settings)
    miss = client.get("/c/item")  # anonymous miss: lookup + count (1) then the store (1)
    assert count.trips() == 2
    hit = client.get("/c/item")  # anonymous hit: 1 in total, app not called
    assert hit.headers["x-cache"] == "HIT"
    # The rate-limit headers are this request's, never replayed from the stored response.
    assert hit.headers.get_list("x-ratelimit-remaining") == [
        str(int(miss.headers["x-ratelimit-remaining"]) - 1)]
    assert count.trips() == 1
    assert apps.calls["/c/item"] == 1
    client.get("/noop")  # anonymous, uncached route: the rate limit only
    assert count.trips() == 1
    client.get("/text")  # exempt: nothing at all
    assert count.trips() == 0
    client.post("/login?user=ann")  # anonymous write: count, then save
    assert count.trips() == 2
    client.get("/get")  # a session read: load (1), per-user count + heartbeat (1), no save
    assert count.trips() == 2
    client.post("/set", json={"a": 1})  # read and write: 2 before, 1 after
    assert count.trips() == 3
    client.get("/get")  # heartbeat throttled: still at most 2
    assert count.trips() <= 2


def test_order_user_limits_and_cache(make_client: Clients, settings: Settings) -> None:
    client = stack(make_client, limit="3/minute")
    client.post("/login?user=bea")  # counted for the IP
    other = stack(make_client, limit="3/minute")
    assert [client.get("/get").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert other.get("/noop").status_code == 200  # same IP, but bea is counted as a user
    from redis_middleware.wsgi import Presence

    assert Presence(settings).is_online("bea")


def test_cache_hits_are_counted_unless_configured(make_client: Clients) -> None:
    counted = stack(make_client, limit="2/minute")
    assert [counted.get("/c/x").status_code for _ in range(3)] == [200, 200, 429]
    free = stack(make_client, limit="2/minute", count_cache_hits=False, peer="9.9.9.9")
    statuses = [free.get("/c/y").status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert free.get("/noop").status_code == 200  # the 2nd counted request
    assert free.get("/noop").status_code == 429


def test_components_can_be_switched_off(make_client: Clients, settings: Settings) -> None:
    client = stack(make_client, session_enabled=False, ratelimit_enabled=False)
    response = client.get("/c/item")
    assert "x-ratelimit-limit" not in response.headers and response.headers["x-cache"] == "MISS"


def test_session_writes_and_cache_in_one_stack(make_client: Clients) -> None:
    client = stack(make_client)
    client.post("/login?user=cal")
    touched = client.get("/c/item?touch=1")
    assert touched.headers["cache-status"] == 'rmw; fwd=uri-miss; detail="session"'
    assert "Cookie" in touched.headers["vary"]
    client.post("/set", json={"k": [1, 2]})
    assert client.get("/get").json() == {"user_id": "cal", "k": [1, 2]}
    client.post("/c/item")  # unsafe: invalidates
    assert client.get("/c/item").headers["x-cache"] == "MISS"


def test_options_are_validated(settings: Settings) -> None:
    from redis_middleware import ConfigError
    from redis_middleware.asgi import RedisMiddleware

    with pytest.raises(ConfigError, match="nonsense"):
        RedisMiddleware(apps.asgi_app(), settings, nonsense=1)
    with pytest.raises(ConfigError, match="RATELIMIT_LIMIT"):
        RedisMiddleware(apps.asgi_app(), settings, limit="often")


def test_flask_stack(settings: Settings) -> None:
    from flask import Flask, session

    from redis_middleware.flask import init_stack

    app = Flask(__name__)
    init_stack(app, settings, limit="2/minute")

    @app.get("/me")
    def me() -> Any:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    client = app.test_client()
    assert client.get("/me").json == {"n": 1}
    assert client.get("/me").json == {"n": 2}
    assert client.get("/me").status_code == 429


@pytest.mark.parametrize("failure", ["500", "raise"])
def test_stale_if_error_in_the_stack(make_client: Clients, monkeypatch: pytest.MonkeyPatch,
                                     failure: str) -> None:
    stale_if_error_is_served(stack(make_client), monkeypatch, failure)


def test_revalidation_and_background_refresh_in_the_stack(make_client: Clients) -> None:
    """The stack revalidates a stale entry with the app (304) and refreshes a
    stale-while-revalidate entry behind a stale answer, as the cache alone does."""
    client = stack(make_client)
    validated = "/c/item?cc=max-age%3D1&etag=%22v1%22"
    swr = "/c/item?cc=max-age%3D1%2C%20stale-while-revalidate%3D30"
    first = client.get(validated)
    client.get(swr)
    time.sleep(1.2)
    again = client.get(validated)
    assert again.headers["x-cache"] == "REVALIDATED" and again.content == first.content
    assert "x-ratelimit-limit" in again.headers  # the stack's own headers still go on it
    assert apps.calls["304"] == 1
    stale = client.get(swr)
    assert stale.headers["x-cache"] == "STALE"
    deadline = time.monotonic() + 5
    while apps.calls["/c/item"] < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert apps.calls["/c/item"] == 4  # two first responses, one 304, one refresh


def test_a_revalidated_answer_keeps_the_sessions_cookie(
        make_client: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app writes the session while answering a revalidation with 304: the client
    gets the stored body *and* the session's Set-Cookie, and the entry is not updated
    from a response that touched the session."""
    client = stack(make_client)
    target = "/c/item?cc=max-age%3D1&etag=%22v1%22"
    first = client.get(target)
    time.sleep(1.2)
    monkeypatch.setattr(apps, "write_session", True)
    answer = client.get(target)
    assert answer.headers["x-cache"] == "REVALIDATED" and answer.content == first.content
    assert "set-cookie" in answer.headers and "x-ratelimit-limit" in answer.headers
    assert client.get("/get").json() == {"w": "1"}
    client.cookies.clear()
    monkeypatch.setattr(apps, "write_session", False)
    assert client.get(target).headers["x-cache"] == "REVALIDATED"  # still stale: not stored
    assert apps.calls["304"] == 2


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_component_redis_refuses_does_not_fail_the_others(interface: str,
                                                            own_server: Any) -> None:
    """Redis refuses the cache's commands (an ACL that forgot its keys) but not the rate
    limiter's, which share its round trip: requests are still counted, with headers, and
    served uncached — never a 500."""
    settings = make_settings(f"redis://app:apppw@127.0.0.1:{own_server.port}/0")
    with own_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "app", "on", ">apppw", "+@all", "&*",
                              *(f"~{settings.key_prefix}:{part}:*"
                                for part in ("ratelimit", "session", "presence")))
    clients = Clients(interface, settings)
    try:
        client = stack(clients)
        responses = [client.get("/c/item") for _ in range(3)]
    finally:
        clients.close()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["99", "98", "97"]
    assert all(r.headers["x-cache"] == "MISS" for r in responses)
    assert apps.calls["/c/item"] == 3
    audit_keyspace(settings)


class FileWrapper:
    """A server's ``wsgi.file_wrapper`` (gunicorn's sends such a file with sendfile)."""

    def __init__(self, file: Any, block: int = 8192) -> None:
        self.file, self.block, self.closed = file, block, False

    def __iter__(self) -> Any:
        return iter(lambda: self.file.read(self.block), b"")

    def close(self) -> None:
        self.closed = True


def _file_app(environ: dict[str, Any], start_response: Any) -> Any:
    environ["redis_middleware.session"].get("user_id")  # read: the response varies on it
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"file"))


def test_a_wsgi_body_nothing_watches_is_the_apps_own(settings: Settings) -> None:
    """Sessions and rate limiting decide at the response start: the app's iterable goes
    to the server as it is (a file wrapper stays one, for sendfile); a cached route's
    body is copied for storing."""
    from redis_middleware import wsgi

    app = wsgi.RedisMiddleware(_file_app, settings, limit="100/minute",
                               routes={"/cached": 60})
    served = call(app, "/file", **{"wsgi.file_wrapper": FileWrapper})
    assert served.status == "200 OK" and isinstance(served.result, FileWrapper)
    assert served.headers["X-RateLimit-Remaining"] == "99"
    assert served.headers["Vary"] == "Cookie"
    assert served.read() == b"file" and served.result.closed

    first = call(app, "/cached", **{"wsgi.file_wrapper": FileWrapper})
    assert not isinstance(first.result, FileWrapper) and first.read() == b"file"
    again = call(app, "/cached", **{"wsgi.file_wrapper": FileWrapper})
    assert again.headers.get("X-Cache") == "HIT" and again.read() == b"file"


def _writing_app(environ: Any, start_response: Any) -> Any:
    """An app of the old style: part of its body through ``write()``, the rest returned."""
    write = start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", "10")])
    write(b"written ")
    return [b"it"]


def test_a_wsgi_apps_write_calls_reach_the_server_and_the_cached_copy(
        settings: Settings) -> None:
    """``write()`` goes to the server's own write when no part watches the body, and
    through the cache's copy on a cached route: the entry holds the whole body."""
    from redis_middleware import wsgi

    app = wsgi.RedisMiddleware(_writing_app, settings, limit="100/minute",
                               routes={"/cached": 60})
    for path, cache in (("/plain", None), ("/cached", "MISS"), ("/cached", "HIT")):
        server = _Server()
        environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
                   "QUERY_STRING": "", "SERVER_NAME": "test", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.9",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO()}
        result = app(environ, server.start_response)
        try:
            server.sent.extend(result)
        finally:
            getattr(result, "close", lambda: None)()
        assert b"".join(server.sent) == b"written it", path
        assert server.started[-1].get("X-Cache") == cache, (path, server.started)
        assert server.started[-1]["X-RateLimit-Limit"] == "100"


class _Server:
    """What a WSGI server keeps of one response: its starts and the bytes it sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.started: list[dict[str, str]] = []

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        self.started.append(dict(headers))
        return self.sent.append  # the server's write()
