"""Rate limiting decisions with no I/O: patterns, client addresses, rules, verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_middleware import ConfigError, Settings
from redis_middleware.config.patterns import PathPattern, RouteTable
from redis_middleware.sansio.flow import run_pure
from redis_middleware.sansio.ratelimit.client_ip import UNKNOWN, ProxyTrust
from redis_middleware.sansio.ratelimit.core import RateLimitCore
from redis_middleware.sansio.request import RequestInfo


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        pytest.param("/items/{id}", "/items/42", True, id="param"),
        pytest.param("/items/{id}", "/items/", False, id="param-empty"),
        pytest.param("/items/{id}", "/items/4/2", False, id="param-one-segment"),
        pytest.param("/api/*", "/api", True, id="wildcard-self"),
        pytest.param("/api/*", "/api/a/b", True, id="wildcard-below"),
        pytest.param("/api/*", "/apix", False, id="wildcard-not-prefix-string"),
        pytest.param("/login", "/login", True, id="exact"),
        pytest.param("/login", "/login/", True, id="exact-trailing-slash-routes-there-too"),
        pytest.param("/", "/", True, id="root"),
        pytest.param("/*", "/anything/at/all", True, id="root-wildcard"),
        pytest.param("/a.b", "/aXb", False, id="dots-are-literal"),
    ],
)
def test_patterns(pattern: str, path: str, expected: bool) -> None:
    assert PathPattern.compile(pattern).matches(path) is expected


def test_most_specific_route_wins() -> None:
    table = RouteTable({"/api/*": "wild", "/api/items/{id}": "param", "/api/items/new": "exact"})
    assert table.match("/api/items/new")[1] == "exact"  # type: ignore[index]
    assert table.match("/api/items/7")[1] == "param"  # type: ignore[index]
    assert table.match("/api/other")[1] == "wild"  # type: ignore[index]
    assert table.match("/elsewhere") is None


@pytest.mark.parametrize("bad", ["items", "/a/{b", "/a/*/b", "/a/{}"])
def test_bad_patterns_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_MIDDLEWARE_RATELIMIT_RULES"):
        Settings(ratelimit_rules={bad: "1/second"})


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded", "trusted", "expected"),
    [
        pytest.param("1.2.3.4", ["6.6.6.6"], [], [], "1.2.3.4", id="untrusted-peer-spoof"),
        pytest.param("10.0.0.1", ["spoofed, 5.5.5.5"], [], ["10.0.0.0/8"], "5.5.5.5",
                     id="trusted-proxy-rightmost"),
        pytest.param("10.0.0.1", ["5.5.5.5, 10.0.0.2"], [], ["10.0.0.0/8"], "5.5.5.5",
                     id="skip-trusted-hops"),
        pytest.param("10.0.0.1", ["1.1.1.1", "5.5.5.5"], [], ["10.0.0.0/8"], "5.5.5.5",
                     id="several-header-lines"),
        pytest.param("10.0.0.1", [], ['for=192.0.2.60;proto=http, for="[2001:db8::1]:80"'],
                     ["10.0.0.0/8"], "2001:db8::/64", id="forwarded-rfc7239"),
        pytest.param("10.0.0.1", ["not-an-ip"], [], ["10.0.0.0/8"], UNKNOWN, id="garbage"),
        pytest.param("::ffff:1.2.3.4", [], [], [], "1.2.3.4", id="v4-mapped"),
        pytest.param("2001:db8:1:2:aaaa::1", [], [], [], "2001:db8:1:2::/64", id="v6-grouped"),
        pytest.param("1.2.3.4:5678", [], [], [], "1.2.3.4", id="port-stripped"),
        pytest.param(None, [], [], [], UNKNOWN, id="no-peer"),
        pytest.param("testclient", [], [], [], UNKNOWN, id="not-an-address"),
        pytest.param("9.9.9.9", ["5.5.5.5"], [], ["*"], "5.5.5.5", id="trust-all"),
    ],
)
def test_client_address(
    peer: str | None, xff: list[str], forwarded: list[str], trusted: list[str], expected: str
) -> None:
    assert ProxyTrust(trusted).client(peer, xff, forwarded) == expected


@given(st.lists(st.text(max_size=60), max_size=5))
def test_garbage_chains_collapse_to_few_buckets(lines: list[str]) -> None:
    result = ProxyTrust(["10.0.0.0/8"]).client("10.0.0.1", lines, [])
    assert result == UNKNOWN or ":" in result or result.count(".") == 3


def test_remembered_buckets_answer_alike_and_stay_bounded() -> None:
    trust = ProxyTrust(["10.0.0.0/8"])
    for _ in range(2):  # the second pass answers from memory
        assert trust.client("10.0.0.1", ["203.0.113.9"], []) == "203.0.113.9"
        assert trust.client("10.0.0.1", ["not-an-ip"], []) == UNKNOWN
        assert trust.client("10.0.0.1", [], []) == "10.0.0.1"
    limit = trust._buckets.limit
    for i in range(3 * limit):  # a client choosing a new chain per request
        assert trust.client("10.0.0.1", [f"198.51.{i // 256 % 256}.{i % 256}"], []) == (
            f"198.51.{i // 256 % 256}.{i % 256}")
    assert len(trust._buckets) <= limit


def test_remembered_rules_answer_alike_and_stay_bounded() -> None:
    c = core(ratelimit_limit="100/minute", ratelimit_exempt=("/health",),
             ratelimit_rules={"/login": {"limit": "5/minute", "methods": ["POST"]}})
    for _ in range(2):
        assert c.rule_for("GET", "/health") is None
        assert c.rule_for("POST", "/login") is not None
        assert c.rule_for("POST", "/login").name == "/login"  # type: ignore[union-attr]
        assert c.rule_for("GET", "/login").name == "default"  # type: ignore[union-attr]
    for i in range(3 * c._routes.limit):  # a client choosing a new path per request
        assert c.rule_for("GET", f"/p/{i}").name == "default"  # type: ignore[union-attr]
    assert len(c._routes) <= c._routes.limit


def request(path: str = "/", method: str = "GET", peer: str = "1.2.3.4") -> RequestInfo:
    return RequestInfo(method, path, b"", (), peer, "http")


def core(**changes: object) -> RateLimitCore:
    return RateLimitCore(Settings().replace(**changes))


def test_remembered_checks_answer_alike_per_peer_method_and_path() -> None:
    c = core(ratelimit_limit="100/minute", ratelimit_per_method=True,
             ratelimit_rules={"/login": {"limit": "5/minute", "methods": ["POST"]}})
    seen = {}
    for _ in range(2):  # the second pass answers from memory, alike
        for peer in ("1.2.3.4", "5.6.7.8", "2001:db8::1"):
            for method, path in (("GET", "/x"), ("POST", "/x"), ("POST", "/login")):
                check = c.prepare(request(path, method, peer), lambda: None)
                assert check is not None
                found = (check.rule.name, check.identity, check.keys, check.scope)
                assert seen.setdefault((peer, method, path), found) == found
    assert seen[("1.2.3.4", "POST", "/login")][:2] == ("/login", "ip:1.2.3.4")
    assert seen[("5.6.7.8", "GET", "/x")][1:] != seen[("1.2.3.4", "GET", "/x")][1:]
    assert seen[("1.2.3.4", "GET", "/x")][2] != seen[("1.2.3.4", "POST", "/x")][2]
    for i in range(3 * c._by_peer.limit):  # a client choosing a new path per request
        assert c.prepare(request(f"/p/{i}"), lambda: None) is not None
    assert len(c._by_peer) <= c._by_peer.limit


def test_checks_that_depend_on_more_than_the_peer_are_never_remembered() -> None:
    behind_proxy = core(ratelimit_limit="100/minute", trusted_proxies=("10.0.0.0/8",))
    for client in ("203.0.113.9", "198.51.100.7"):  # the header decides, request by request
        req = RequestInfo("GET", "/x", b"", (("x-forwarded-for", client),), "10.0.0.1", "http")
        check = behind_proxy.prepare(req, lambda: None)
        assert check is not None and check.identity == "ip:" + client
    by_user = core(ratelimit_limit="100/minute", ratelimit_key="user_or_ip")
    for user in ("ada", "bob", None):
        check = by_user.prepare(request("/x"), lambda: user)  # noqa: B023 - called at once
        assert check is not None
        assert check.identity == ("user:" + user if user else "ip:1.2.3.4")


def test_rules_exempt_and_methods() -> None:
    c = core(ratelimit_limit="100/minute", ratelimit_exempt=("/health",),
             ratelimit_rules={"/login": {"limit": "5/minute", "methods": ["POST"]}})
    assert c.prepare(request("/health"), lambda: None) is None
    get_login = c.prepare(request("/login", "GET"), lambda: None)
    assert get_login is not None and get_login.rule.name == "default"  # rule is POST-only
    login = c.prepare(request("/login", "POST"), lambda: None)
    assert login is not None and login.rule.name == "/login"
    other = c.prepare(request("/x"), lambda: None)
    assert other is not None and other.rule.name == "default"
    assert other.identity == "ip:1.2.3.4"


def test_identity_kinds_are_namespaced() -> None:
    assert core(ratelimit_key="user").identity(request(), lambda: "1.2.3.4") == "user:1.2.3.4"
    assert core(ratelimit_key="user").identity(request(), lambda: None) is None
    assert core(ratelimit_key="user_or_ip").identity(request(), lambda: None) == "ip:1.2.3.4"
    custom = core(ratelimit_key=lambda r: r.path)
    assert custom.identity(request("/p"), lambda: None) == "custom:/p"


def test_keys_hold_the_pattern_not_the_raw_path() -> None:
    c = core(ratelimit_rules={"/items/{id}": "5/minute"})
    a = c.prepare(request("/items/1"), lambda: None)
    b = c.prepare(request("/items/2"), lambda: None)
    assert a is not None and b is not None and a.keys == b.keys


def test_verdicts_from_script_replies() -> None:
    c = core(ratelimit_limit="5/minute;100/hour", ratelimit_headers="both")
    check = c.prepare(request(), lambda: None)
    assert check is not None
    allowed = run_pure(c.fixed_window_flow(check), [[[0, 3, 10, 42_000, 3_000_000]]])
    headers = dict(allowed.headers)
    assert allowed.allowed
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"],
            headers["X-RateLimit-Reset"]) == ("5", "2", "42")
    assert headers["RateLimit"] == '"5-per-60s";r=2;t=42'
    assert headers["RateLimit-Policy"] == '"5-per-60s";q=5;w=60, "100-per-3600s";q=100;w=3600'
    assert "Retry-After" not in headers
    blocked = run_pure(c.fixed_window_flow(check), [[[2, 1, 100, 30_000, 1_500]]])
    headers = dict(blocked.headers)
    assert not blocked.allowed and blocked.status == 429
    assert headers["Retry-After"] == "2" and headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Limit"] == "100"


def test_dry_run_never_blocks() -> None:
    c = core(ratelimit_limit="1/minute", ratelimit_dry_run=True)
    check = c.prepare(request(), lambda: None)
    assert check is not None
    assert run_pure(c.fixed_window_flow(check), [[[1, 1, 1000]]]).allowed


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        pytest.param({"ratelimit_limit": "lots"}, "REDIS_MIDDLEWARE_RATELIMIT_LIMIT", id="limit"),
        pytest.param({"ratelimit_key": "cookie"}, "REDIS_MIDDLEWARE_RATELIMIT_KEY", id="key"),
        pytest.param({"ratelimit_strategy": "token"}, "REDIS_MIDDLEWARE_RATELIMIT_STRATEGY",
                     id="strategy"),
        pytest.param({"trusted_proxies": ("nope",)}, "REDIS_MIDDLEWARE_TRUSTED_PROXIES",
                     id="proxies"),
        pytest.param({"ratelimit_rules": {"/a": {"limit": "1/s", "cost": 0}}},
                     "REDIS_MIDDLEWARE_RATELIMIT_RULES", id="cost"),
    ],
)
def test_bad_rate_limit_settings(changes: dict[str, object], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings().replace(**changes)


def test_rules_from_the_environment() -> None:
    s = Settings.from_env({"REDIS_MIDDLEWARE_RATELIMIT_RULES": '{"/login": "5/minute"}',
                           "REDIS_MIDDLEWARE_RATELIMIT_EXEMPT": "/health, /static/*"})
    assert s.ratelimit_rules[0][0] == "/login"
    assert s.ratelimit_exempt == ("/health", "/static/*")
    with pytest.raises(ConfigError, match="RATELIMIT_RULES"):
        Settings.from_env({"REDIS_MIDDLEWARE_RATELIMIT_RULES": "[1, 2]"})


def test_per_method_usage_and_reset_cover_every_method() -> None:
    """The CLI's show/reset see per-method counters: show lists the used ones, reset
    deletes them all."""
    from redis_middleware.sansio.flow import run_pure
    from redis_middleware.sansio.ratelimit.core import RateLimitCore

    from .helpers import settings

    core = RateLimitCore(settings(ratelimit_rules={"/x": "2/minute"}, ratelimit_per_method=True))
    n = len(core._all_rules()) * 7  # seven methods, one limit per rule
    answers = []
    for i in range(n):
        answers += [b"1" if i == 0 else None, 30_000 if i == 0 else -2]
    usage = run_pure(core.usage_flow("ip:1.2.3.4"), [answers])
    assert list(usage) == ["/x GET"] and usage["/x GET"][0].used == 1
    assert run_pure(core.reset_flow("ip:1.2.3.4"), [[1] + [0] * (n - 1)]) == 1


@pytest.mark.parametrize(
    ("kind", "headers", "identity"),
    [
        pytest.param("bearer", (("authorization", "Bearer tok-1"),), "bearer:", id="bearer"),
        pytest.param("bearer", (("authorization", "bearer   tok-1  "),), "bearer:",
                     id="bearer-any-case-and-spaces"),
        pytest.param("bearer", (("authorization", "Basic dTpw"),), "ip:1.2.3.4",
                     id="another-scheme-counts-by-ip"),
        pytest.param("bearer", (), "ip:1.2.3.4", id="no-token-counts-by-ip"),
        pytest.param("header:X-Api-Key", (("x-api-key", "k-1"),), "header:x-api-key:",
                     id="api-key-header"),
        pytest.param("header:X-Api-Key", (("x-api-key", "k" * 5000),), "ip:1.2.3.4",
                     id="an-oversized-value-is-no-credential"),
    ],
)
def test_credential_identities(kind: str, headers: tuple[tuple[str, str], ...],
                               identity: str) -> None:
    """``bearer`` and ``header:<Name>``: the credential, hashed; none: the address."""
    from redis_middleware.sansio.ratelimit.core import RateLimitCore

    from .helpers import request, settings

    core = RateLimitCore(settings(ratelimit_limit="5/minute", ratelimit_key=kind))
    found = core.identity(request(headers=headers), lambda: None, kind)
    assert found is not None and found.startswith(identity)
    if not identity.startswith("ip:"):
        assert len(found) == len(identity) + 32 and "tok-1" not in found and "k-1" not in found


def test_the_same_credential_is_the_same_bucket() -> None:
    from redis_middleware.sansio.ratelimit.core import RateLimitCore

    from .helpers import request, settings

    core = RateLimitCore(settings(ratelimit_limit="5/minute", ratelimit_key="bearer"))
    one = core.identity(request(headers=(("authorization", "Bearer a"),)), lambda: None)
    again = core.identity(request(headers=(("authorization", "Bearer a"),), peer="9.9.9.9"),
                          lambda: None)
    other = core.identity(request(headers=(("authorization", "Bearer b"),)), lambda: None)
    assert one == again != other


def test_identity_kinds_are_validated() -> None:
    from redis_middleware import ConfigError, Settings

    assert Settings(redis_url="memory://", ratelimit_key="header:X-Api-Key").ratelimit_key
    with pytest.raises(ConfigError):
        Settings(redis_url="memory://", ratelimit_key="header:bad name")
    with pytest.raises(ConfigError):
        Settings(redis_url="memory://", ratelimit_rules={"/x": {"limit": "1/minute",
                                                                "key": "cookie:x"}})


@pytest.mark.parametrize(
    ("limit", "amount", "text"),
    [
        pytest.param("5/minute", 5, "5 per minute", id="one-unit"),
        pytest.param("10/2 seconds", 10, "10 per 2 seconds", id="several-units-plural"),
        pytest.param("1 per 3 hours", 1, "1 per 3 hours", id="per-spelling"),
    ],
)
def test_a_refusal_and_the_usage_name_the_limit_in_words(limit: str, amount: int,
                                                          text: str) -> None:
    c = core(ratelimit_limit=limit)
    check = c.prepare(request(), lambda: None)
    assert check is not None
    refused = run_pure(c.fixed_window_flow(check), [[[1, amount, 1000]]])
    assert refused.detail == f"Rate limit exceeded: {text}"
    (usage,) = run_pure(c.usage_flow("ip:1.2.3.4"), [[b"1", 1000]])["default"]
    assert usage.limit == text


@pytest.mark.parametrize("limit", ["5/minute", "5/minute;100/hour"])
def test_a_refusal_whose_counts_show_room_is_still_a_refusal(limit: str) -> None:
    """The limits library's strategies test a limit, then read its window: when the
    window moved on in between (a moving window's oldest hit expired), the counts read
    show room under the limit the test refused. The verdict stays the test's: a 429
    naming that limit, with a Retry-After."""
    c = core(ratelimit_limit=limit)
    check = c.prepare(request(), lambda: None)
    assert check is not None
    n = len(check.rule.items)
    refused = c.decide(check, 0, [4] * n, [30.0] * n)
    assert not refused.allowed
    assert refused.detail == "Rate limit exceeded: 5 per minute"
    assert ("Retry-After", "30") in refused.headers
