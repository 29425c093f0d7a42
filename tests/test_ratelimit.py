"""Rate-limit scenarios, run for ASGI and WSGI on fakeredis and on a real redis-server."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support import apps
from .support.audit import audit_keyspace
from .support.clients import Clients, make_settings

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]


def ratelimit_keys(settings: Settings) -> list[str]:
    return [k for k in audit_keyspace(settings) if ":ratelimit:" in k]


def test_sixth_request_of_five_per_minute(make_client: Clients) -> None:
    client = make_client("RateLimitMiddleware", limit="5/minute")
    remaining = []
    for _ in range(5):
        response = client.get("/noop")
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "5"
        assert "retry-after" not in response.headers
        remaining.append(response.headers["x-ratelimit-remaining"])
    assert remaining == ["4", "3", "2", "1", "0"]
    blocked = client.get("/noop")
    assert blocked.status_code == 429
    assert blocked.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert 1 <= int(blocked.headers["x-ratelimit-reset"]) <= 60
    assert blocked.json()["detail"] == "Rate limit exceeded: 5 per minute"
    assert apps.calls["/noop"] == 5  # the app was not called
    other = make_client("RateLimitMiddleware", limit="5/minute", peer="5.6.7.8")
    assert other.get("/noop").status_code == 200


def test_headers_on_errors_and_streams(make_client: Clients) -> None:
    client = make_client("RateLimitMiddleware", limit="10/minute")
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.headers["x-ratelimit-remaining"] == "9"
    stream = client.get("/stream")
    assert stream.text == "chunk0;chunk1;chunk2;"
    assert stream.headers["x-ratelimit-remaining"] == "8"


def test_spoofed_forwarded_for_is_ignored_from_untrusted_peers(
    make_client: Clients, settings: Settings
) -> None:
    client = make_client("RateLimitMiddleware", limit="2/minute", peer="1.2.3.4")
    for i in range(2):
        assert client.get("/noop", headers={"x-forwarded-for": f"9.9.9.{i}"}).status_code == 200
    assert client.get("/noop", headers={"x-forwarded-for": "8.8.8.8"}).status_code == 429


def test_trusted_proxy_chain_resolves_the_client(make_client: Clients, settings: Settings) -> None:
    client = make_client("RateLimitMiddleware", limit="2/minute", peer="10.0.0.5",
                         trusted_proxies="10.0.0.0/8")
    headers = {"x-forwarded-for": "spoofed, 7.7.7.7"}
    assert client.get("/noop", headers=headers).status_code == 200
    assert client.get("/noop", headers={"x-forwarded-for": "other, 7.7.7.7"}).status_code == 200
    assert client.get("/noop", headers=headers).status_code == 429
    assert client.get("/noop", headers={"x-forwarded-for": "6.6.6.6"}).status_code == 200
    for junk in ["<script>", "1.2.3", "::::", "x" * 500, "\u00ff\u00fe"]:
        response = client.get("/noop", headers={"x-forwarded-for": junk.encode("latin-1")})
        assert response.status_code in (200, 429)
    idents = {k.split(":")[2] for k in ratelimit_keys(settings)}
    assert idents == {"{ip@7.7.7.7}".replace("@", ":").replace(":", "%3A"), "{ip%3A6.6.6.6}",
                      "{ip%3Aunknown}"}


def test_ipv6_clients_are_grouped_by_64(make_client: Clients) -> None:
    first = make_client("RateLimitMiddleware", limit="2/minute", peer="2001:db8:1:2::1")
    second = make_client("RateLimitMiddleware", limit="2/minute", peer="2001:db8:1:2:ffff::9")
    assert first.get("/noop").status_code == 200
    assert second.get("/noop").status_code == 200
    assert first.get("/noop").status_code == 429


def test_user_limits_follow_the_user_across_addresses(make_client: Clients) -> None:
    outer = (("SessionMiddleware", {}),)
    home = make_client("RateLimitMiddleware", limit="3/minute", key="user_or_ip",
                       outer=outer, peer="1.1.1.1")
    home.post("/login?user=zoe")
    cookie = {"cookie": f"session={home.cookies['session']}"}
    work = make_client("RateLimitMiddleware", limit="3/minute", key="user_or_ip",
                       outer=outer, peer="2.2.2.2")
    assert home.get("/get").status_code == 200  # the login itself counted for 1.1.1.1
    assert work.get("/get", headers=cookie).status_code == 200
    assert home.get("/get").status_code == 200
    assert work.get("/get", headers=cookie).status_code == 429  # zoe's 4th, wherever
    assert make_client("RateLimitMiddleware", limit="3/minute", key="user_or_ip",
                       outer=outer, peer="2.2.2.2").get("/get").status_code == 200


def test_rules_exempt_cost_and_methods(make_client: Clients) -> None:
    client = make_client(
        "RateLimitMiddleware", limit="100/minute", exempt=["/text"],
        rules={"/set": {"limit": "4/minute", "cost": 2, "methods": ["POST"]},
               "/items/{id}": "1/minute"},
    )
    assert "x-ratelimit-limit" not in client.get("/text").headers
    assert client.post("/set", json={}).headers["x-ratelimit-remaining"] == "2"
    assert client.post("/set", json={}).status_code == 200
    assert client.post("/set", json={}).status_code == 429
    assert client.get("/set").headers["x-ratelimit-limit"] == "100"  # GET: default limit
    assert client.get("/items/1").status_code == 404  # counted, then the app's 404
    assert client.get("/items/2").status_code == 429  # same rule, same bucket


def test_a_rejected_request_consumes_nothing(make_client: Clients, settings: Settings) -> None:
    client = make_client("RateLimitMiddleware", limit="10/minute;2/hour")
    assert client.get("/noop").status_code == 200
    assert client.get("/noop").status_code == 200
    for _ in range(3):
        blocked = client.get("/noop")
        assert blocked.status_code == 429
        assert blocked.headers["x-ratelimit-limit"] == "2"
    from redis_middleware.wsgi import RateLimiter

    usage = RateLimiter(settings, limit="10/minute;2/hour").usage("ip:127.0.0.1")
    assert [u.used for u in usage["default"]] == [2, 2]  # the minute limit was not charged


def test_one_round_trip_for_any_number_of_limits(make_client: Clients, settings: Settings) -> None:
    client = make_client("RateLimitMiddleware", limit="10/second;100/minute;1000/hour")
    client.get("/noop")
    conns = connections_for(settings)
    before = conns.round_trips
    for _ in range(5):
        client.get("/noop")
    assert conns.round_trips - before == 5
    assert len(ratelimit_keys(settings)) == 3


def test_usage_and_reset_api(make_client: Clients, settings: Settings) -> None:
    from redis_middleware.wsgi import RateLimiter

    client = make_client("RateLimitMiddleware", limit="2/minute")
    client.get("/noop")
    client.get("/noop")
    assert client.get("/noop").status_code == 429
    limiter = RateLimiter(settings, limit="2/minute")
    (usage,) = limiter.usage("ip:127.0.0.1")["default"]
    assert (usage.used, usage.remaining, usage.limit) == (2, 0, "2 per minute")
    assert 0 < usage.reset_after <= 60
    assert limiter.reset("ip:127.0.0.1") == 1
    assert client.get("/noop").status_code == 200


def test_dry_run_limits_nothing(make_client: Clients, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client("RateLimitMiddleware", limit="1/minute", dry_run=True)
    assert [client.get("/noop").status_code for _ in range(3)] == [200, 200, 200]
    assert any("dry run" in r.message for r in caplog.records)


def test_reset_as_an_epoch_timestamp(make_client: Clients) -> None:
    """``ratelimit_reset="epoch"``: X-RateLimit-Reset is when the window resets, as
    slowapi, Flask-Limiter and GitHub send it; Retry-After stays in seconds."""
    client = make_client("RateLimitMiddleware", limit="1/minute", reset="epoch")
    before = time.time()
    first = client.get("/noop")
    assert before + 1 <= int(first.headers["x-ratelimit-reset"]) <= time.time() + 61
    blocked = client.get("/noop")
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 60


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_the_default_limit_can_stack_with_route_rules(make_client: Clients,
                                                      strategy: str) -> None:
    """``default_stacks=True`` (Flask-Limiter's ``override_defaults=False``): a path with
    its own rule is counted by the default too, and shares the default's budget."""
    client = make_client("RateLimitMiddleware", limit="3/minute", rules={"/get": "10/minute"},
                         default_stacks=True, strategy=strategy)
    assert [client.get("/get").status_code for _ in range(2)] == [200, 200]
    assert client.get("/noop").status_code == 200  # the third of the default's 3
    blocked = client.get("/get")
    assert blocked.status_code == 429 and blocked.headers["x-ratelimit-limit"] == "3"
    replaced = make_client("RateLimitMiddleware", limit="3/minute",
                           rules={"/get": "10/minute"}, strategy=strategy)
    assert [replaced.get("/get").status_code for _ in range(4)] == [200] * 4


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter"])
def test_counters_per_method(make_client: Clients, strategy: str) -> None:
    """``per_method=True`` (Flask-Limiter's ``per_method``): GET and POST each have the
    rule's budget."""
    client = make_client("RateLimitMiddleware", rules={"/set": "2/minute"},
                         per_method=True, strategy=strategy)
    assert [client.get("/set").status_code for _ in range(3)] == [200, 200, 429]
    assert [client.post("/set", json={"a": 1}).status_code for _ in range(3)] == [
        200, 200, 429]
    shared = make_client("RateLimitMiddleware", rules={"/set": "2/minute"}, strategy=strategy)
    shared.get("/set")
    shared.get("/set")
    assert shared.post("/set", json={"a": 1}).status_code == 429


def test_draft_headers(make_client: Clients) -> None:
    response = make_client("RateLimitMiddleware", limit="5/minute", headers="draft").get("/noop")
    assert response.headers["ratelimit"] == '"5-per-60s";r=4;t=60'
    assert response.headers["ratelimit-policy"] == '"5-per-60s";q=5;w=60'
    assert "x-ratelimit-limit" not in response.headers


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
def test_limits_library_strategies(make_client: Clients, strategy: str) -> None:
    client = make_client("RateLimitMiddleware", limit="3/minute", strategy=strategy)
    statuses = [client.get("/noop").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    blocked = client.get("/noop")
    assert blocked.headers["x-ratelimit-remaining"] == "0"
    assert int(blocked.headers["retry-after"]) >= 1


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
def test_memory_strategies_count_across_event_loops(strategy: str) -> None:
    """On memory://, requests run on several event loops (a plain Starlette TestClient
    starts one per request) share one counter store: 2/minute lets 2 through, not 4."""
    from starlette.testclient import TestClient

    from redis_middleware.asgi import RateLimitMiddleware

    app = RateLimitMiddleware(apps.asgi_app(), make_settings("memory://"),
                              limit="2/minute", strategy=strategy)
    client = TestClient(app)  # no ``with``: a new event loop for every request
    statuses = [client.get("/noop").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_high_concurrency_admits_exactly_n(make_client: Clients) -> None:
    client = make_client("RateLimitMiddleware", limit="25/minute")
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: client.get("/noop").status_code, range(80)))
    assert statuses.count(200) == 25 and statuses.count(429) == 55


def _hammer(args: tuple[str, str, int]) -> int:
    url, prefix, n = args
    from redis_middleware.sansio.request import RequestInfo
    from redis_middleware.wsgi import RateLimiter

    from .support.clients import SECRET

    settings = Settings(redis_url=url, key_prefix=prefix, secret_key=SECRET,
                        ratelimit_limit="50/minute")
    limiter = RateLimiter(settings)
    allowed = 0
    request = RequestInfo("GET", "/", b"", (), "3.3.3.3", "http")
    for _ in range(n):
        check = limiter.core.prepare(request, lambda: None)
        assert check is not None
        decision = limiter.check(check)
        allowed += bool(decision and decision.allowed)
    return allowed


@pytest.mark.real_redis
def test_exact_across_processes(redis_server: Any) -> None:
    settings = make_settings(redis_server.url)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        allowed = pool.map(_hammer, [(redis_server.url, settings.key_prefix, 40)] * 4)
    assert sum(allowed) == 50


def test_websocket_connect_is_limited(settings: Settings) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from redis_middleware.asgi import RateLimitMiddleware

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app = RateLimitMiddleware(Starlette(routes=[WebSocketRoute("/ws", ws)]), settings,
                              limit="1/minute")
    with TestClient(app, client=("4.4.4.4", 1)) as client:
        with client.websocket_connect("/ws") as socket:
            assert socket.receive_text() == "hi"
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
            pass
        assert info.value.code == 1008
        client.portal.call(connections_for(settings).aclose)


@pytest.mark.real_redis
@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_fail_open_and_fail_closed(interface: str, strategy: str, tmp_path: Any) -> None:
    from .support.servers import start_redis_server, stop_redis_server

    server = start_redis_server(tmp_path)
    settings = make_settings(server.url, breaker_cooldown=0.2)
    clients = Clients(interface, settings)
    try:
        client = clients("RateLimitMiddleware", limit="100/minute", strategy=strategy,
                         rules={"/auth": {"limit": "5/minute", "fail": "closed"}})
        assert client.get("/noop").headers["x-ratelimit-remaining"] == "99"
        stop_redis_server(server)
        started = time.monotonic()
        opened = client.get("/noop")
        assert opened.status_code == 200 and "x-ratelimit-limit" not in opened.headers
        closed = client.get("/auth")
        assert closed.status_code == 503 and closed.headers["retry-after"] == "1"
        assert time.monotonic() - started < 2
        server = start_redis_server(tmp_path, port=server.port)
        deadline = time.monotonic() + 2
        while "x-ratelimit-limit" not in client.get("/noop").headers:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/auth").status_code == 404  # limited again, and passed
    finally:
        clients.close()
        stop_redis_server(server)


@pytest.mark.parametrize("kind", ["bearer", "header:X-Api-Key"])
def test_limits_per_credential_stay_hashed_in_the_namespace(
        make_client: Clients, settings: Settings, kind: str) -> None:
    """An API limited per token or API key: each credential has its own budget; hostile
    values (long, odd bytes, key syntax) become hashed keys inside our namespace."""
    client = make_client("RateLimitMiddleware", limit="2/minute", key=kind)

    def send(value: str) -> int:
        header = (b"authorization", f"Bearer {value}".encode("latin-1")) if (
            kind == "bearer") else (b"x-api-key", value.encode("latin-1"))
        return int(client.get("/noop", headers=[header]).status_code)

    assert [send("alpha") for _ in range(3)] == [200, 200, 429]
    assert send("beta") == 200
    hostile = ["{tag}:x*", "a" * 3000, "\u00ff\u00fe; drop", "x:y:{z}"]
    for value in hostile:
        assert send(value) == 200
    keys = audit_keyspace(settings)
    assert keys and all(value not in key for key in keys for value in [
        "alpha", "beta", *hostile])


def _starlette_app_with_auth(settings: Settings, auth_outside: bool) -> Any:
    """A Starlette app whose AuthenticationMiddleware sets ``scope["user"]`` from an
    ``X-User`` header, outside (before) or inside (after) our rate limiter."""
    from starlette.applications import Starlette
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        BaseUser,
        SimpleUser,
    )
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from redis_middleware.asgi import RateLimitMiddleware

    class NamedOnly(BaseUser):  # defines display_name only: identity raises
        def __init__(self, name: str) -> None:
            self.name = name

        @property
        def is_authenticated(self) -> bool:
            return True

        @property
        def display_name(self) -> str:
            return self.name

    class HeaderAuth(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> Any:
            name = conn.headers.get("x-user")
            if not name:
                return None
            user = NamedOnly(name[1:]) if name.startswith("~") else SimpleUser(name)
            return AuthCredentials(["authenticated"]), user

    async def whoami(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.user.display_name if request.user.is_authenticated
                                 else "anonymous")

    auth = Middleware(AuthenticationMiddleware, backend=HeaderAuth())
    limit = Middleware(RateLimitMiddleware, settings=settings, limit="2/minute",
                       key="user_or_ip")
    # Starlette runs the first middleware of the list outermost.
    stack = [auth, limit] if auth_outside else [limit, auth]
    return Starlette(routes=[Route("/me", whoami)], middleware=stack)


def test_a_per_user_limit_counts_starlettes_authenticated_user(settings: Settings) -> None:
    from starlette.testclient import TestClient

    app = _starlette_app_with_auth(settings, auth_outside=True)
    with TestClient(app, client=("10.9.0.1", 1)) as client:
        def me(user: str) -> int:
            return int(client.get("/me", headers={"x-user": user}).status_code)

        assert [me("ann") for _ in range(3)] == [200, 200, 429]
        assert me("ben") == 200  # same address, another user: a fresh budget
        assert [me("~cleo") for _ in range(3)] == [200, 200, 429]  # display_name only
        keys = audit_keyspace(settings)
        assert any("user%3Aann" in k for k in keys) and any("user%3Acleo" in k for k in keys)
        client.portal.call(connections_for(settings).aclose)


def test_auth_inside_our_middleware_is_not_seen_yet(settings: Settings) -> None:
    """Our middleware runs first, so the user is unknown: user_or_ip counts the address."""
    from starlette.testclient import TestClient

    app = _starlette_app_with_auth(settings, auth_outside=False)
    with TestClient(app, client=("10.9.0.2", 1)) as client:
        statuses = [client.get("/me", headers={"x-user": u}).status_code
                    for u in ("ann", "ben", "cleo")]
        assert statuses == [200, 200, 429]  # one budget: the address's
        assert all("ip%3A10.9.0.2" in k for k in audit_keyspace(settings))
        client.portal.call(connections_for(settings).aclose)


@pytest.mark.parametrize("middleware", ["RateLimitMiddleware", "RedisMiddleware"])
def test_an_app_s_own_retry_after_http_date_is_left_as_it_is(
        make_client: Clients, middleware: str) -> None:
    """A 503 of the app with ``Retry-After`` as an HTTP-date (RFC 9110 10.2.3) passes
    through the limiter unchanged and alone; our own 429 says delta-seconds."""
    from email.utils import parsedate_to_datetime

    client = make_client(middleware, limit="2/minute")
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    response = client.get("/c/down", params={"status": "503", "retry": date})
    assert response.status_code == 503
    assert response.headers.get_list("retry-after") == [date]
    assert parsedate_to_datetime(response.headers["retry-after"]).year == 2026
    client.get("/c/down", params={"status": "503", "retry": date})
    refused = client.get("/c/down", params={"status": "503", "retry": date})
    assert refused.status_code == 429
    assert refused.headers["retry-after"].isdigit()
