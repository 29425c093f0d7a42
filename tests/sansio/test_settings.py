from __future__ import annotations

import dataclasses
import logging

import pytest

from redis_middleware import ConfigError, Settings

SECRET = "s" * 32
REAL = {"REDIS_URL": "redis://localhost:6379/0", "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}


def test_defaults_use_memory_and_generate_a_secret() -> None:
    s = Settings()
    assert s.redis_url == "memory://"
    assert s.key_prefix == "rmw"
    assert len(s.secret_key) == 1 and len(s.secret_key[0]) >= 32


def test_is_immutable() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.key_prefix = "other"  # type: ignore[misc]


def test_from_env_reads_every_documented_variable() -> None:
    s = Settings.from_env({
        **REAL,
        "REDIS_MIDDLEWARE_KEY_PREFIX": "shop",
        "REDIS_MIDDLEWARE_SOCKET_TIMEOUT": "0.25",
        "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE": "true",
        "REDIS_MIDDLEWARE_SESSION_IDLE_TIMEOUT": "60",
        "REDIS_MIDDLEWARE_SESSION_COOKIE_DOMAIN": "",
    })
    assert (s.key_prefix, s.socket_timeout, s.session_cookie_secure) == ("shop", 0.25, True)
    assert s.session_idle_timeout == 60
    assert s.session_cookie_domain is None


def test_secret_key_list_first_signs() -> None:
    s = Settings.from_env({**REAL, "REDIS_MIDDLEWARE_SECRET_KEY": f"{'a' * 32}, {'b' * 40}"})
    assert s.secret_key == ("a" * 32, "b" * 40)
    assert Settings(secret_key="c" * 32 + "," + "d" * 32).secret_key == ("c" * 32, "d" * 32)


def test_repr_hides_secrets_and_passwords() -> None:
    s = Settings(redis_url="redis://user:hunter2@localhost:6379/0", secret_key=SECRET)
    text = repr(s)
    assert SECRET not in text and "hunter2" not in text
    assert "user:***@" in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"REDIS_URL": "http://localhost"}, "REDIS_URL", id="unknown-scheme"),
        pytest.param({"REDIS_URL": "localhost:6379"}, "REDIS_URL", id="not-a-url"),
        pytest.param({"REDIS_URL": "redis://localhost:notaport/0"}, "REDIS_URL", id="bad-port"),
        pytest.param({"REDIS_URL": "redis+sentinel://h:26379"}, "REDIS_URL", id="no-service"),
        pytest.param({"REDIS_URL": "redis+cluster://h:1/3"}, "REDIS_URL", id="cluster-db"),
        pytest.param({"REDIS_URL": "rediss+cluster://h:1?ssl_ciphers=ALL"}, "REDIS_URL",
                     id="cluster-unknown-option-not-silently-dropped"),
        pytest.param({"REDIS_URL": "redis+sentinel://h:26379/m?health_check_interval=5"},
                     "REDIS_URL", id="sentinel-unknown-option"),
        pytest.param({"REDIS_MIDDLEWARE_KEY_PREFIX": "my app"}, "REDIS_MIDDLEWARE_KEY_PREFIX",
                     id="prefix-space"),
        pytest.param({"REDIS_MIDDLEWARE_KEY_PREFIX": "app*"}, "REDIS_MIDDLEWARE_KEY_PREFIX",
                     id="prefix-glob"),
        pytest.param({"REDIS_MIDDLEWARE_KEY_PREFIX": "a{b}"}, "REDIS_MIDDLEWARE_KEY_PREFIX",
                     id="prefix-hashtag"),
        pytest.param({"REDIS_MIDDLEWARE_SECRET_KEY": "short"}, "REDIS_MIDDLEWARE_SECRET_KEY",
                     id="short-secret"),
        pytest.param({"REDIS_MIDDLEWARE_SECRET_KEY": ""}, "REDIS_MIDDLEWARE_SECRET_KEY",
                     id="missing-secret"),
        pytest.param({"REDIS_MIDDLEWARE_MAX_CONNECTIONS": "ten"},
                     "REDIS_MIDDLEWARE_MAX_CONNECTIONS", id="non-integer"),
        pytest.param({"REDIS_MIDDLEWARE_MAX_CONNECTIONS": "1.5"},
                     "REDIS_MIDDLEWARE_MAX_CONNECTIONS", id="float-for-int"),
        pytest.param({"REDIS_MIDDLEWARE_SOCKET_TIMEOUT": "-1"},
                     "REDIS_MIDDLEWARE_SOCKET_TIMEOUT", id="negative-timeout"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE": "maybe"},
                     "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE", id="bad-bool"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_COOKIE_NAME": "a b"},
                     "REDIS_MIDDLEWARE_SESSION_COOKIE_NAME", id="cookie-name"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_COOKIE_SAMESITE": "sometimes"},
                     "REDIS_MIDDLEWARE_SESSION_COOKIE_SAMESITE", id="samesite"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_COOKIE_NAME": "__Host-s"},
                     "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE", id="host-prefix-needs-secure"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_COOKIE_NAME": "__Host-s",
                      "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE": "true",
                      "REDIS_MIDDLEWARE_SESSION_COOKIE_PATH": "/app"},
                     "REDIS_MIDDLEWARE_SESSION_COOKIE_PATH", id="host-prefix-needs-root-path"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_COOKIE_NAME": "__Host-s",
                      "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE": "true",
                      "REDIS_MIDDLEWARE_SESSION_COOKIE_DOMAIN": "example.com"},
                     "REDIS_MIDDLEWARE_SESSION_COOKIE_DOMAIN", id="host-prefix-no-domain"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_SLIDE_INTERVAL": "-1"},
                     "REDIS_MIDDLEWARE_SESSION_SLIDE_INTERVAL", id="slide-negative"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_IDLE_TIMEOUT": "60",
                      "REDIS_MIDDLEWARE_SESSION_SLIDE_INTERVAL": "61"},
                     "REDIS_MIDDLEWARE_SESSION_SLIDE_INTERVAL", id="slide-over-idle"),
        pytest.param({"REDIS_MIDDLEWARE_SESSION_ON_REDIS_ERROR": "ignore"},
                     "REDIS_MIDDLEWARE_SESSION_ON_REDIS_ERROR", id="on-error"),
        pytest.param({"REDIS_MIDDLEWARE_USER_FIELD": "user id"},
                     "REDIS_MIDDLEWARE_USER_FIELD", id="user-field"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**REAL, **env})
    assert isinstance(info.value, ValueError)
    assert info.value.name == variable
    assert str(info.value).startswith(variable)


def test_errors_never_echo_the_secret() -> None:
    secret = "tiny-secret"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**REAL, "REDIS_MIDDLEWARE_SECRET_KEY": secret})
    assert secret not in str(info.value)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_URL": "bogus://user:hunter2@host"})
    assert "hunter2" not in str(info.value)


def test_bad_value_is_named_in_the_message() -> None:
    with pytest.raises(ConfigError, match="'ten'"):
        Settings.from_env({"REDIS_MIDDLEWARE_MAX_CONNECTIONS": "ten"})


def test_replace_validates_and_rejects_unknown_names() -> None:
    s = Settings()
    assert s.replace(key_prefix="x").key_prefix == "x"
    with pytest.raises(ConfigError, match="REDIS_MIDDLEWARE_KEY_PREFIX"):
        s.replace(key_prefix="bad prefix")
    with pytest.raises(ConfigError, match="no_such_option"):
        s.replace(no_such_option=1)


@pytest.mark.parametrize(("name", "value"), [
    ("key_prefix", "app\n"), ("session_cookie_name", "session\n"),
    ("session_cookie_path", "/\n"), ("session_cookie_domain", "example.com\n"),
    ("user_field", "user_id\n")])
def test_a_trailing_newline_is_refused(name: str, value: str) -> None:
    # A newline in a cookie attribute splits the Set-Cookie header; in the prefix, it
    # would put keys outside the namespace the audit looks at.
    assert Settings(secret_key=SECRET).replace(**{name: value[:-1]})
    with pytest.raises(ConfigError):
        Settings(secret_key=SECRET).replace(**{name: value})


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://localhost:6379/0",
        "rediss://:pw@redis.example.com:6380/0?ssl_cert_reqs=required",
        "unix:///var/run/redis.sock?db=1",
        "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2",
        "redis+cluster://n1:7000,n2:7001",
    ],
)
def test_supported_schemes(url: str) -> None:
    s = Settings(redis_url=url, secret_key=SECRET)
    assert s.target.kind in {"memory", "standalone", "sentinel", "cluster"}


def test_sentinel_and_cluster_urls_are_parsed() -> None:
    t = Settings(redis_url="redis+sentinel://:pw@s1:26379,s2/mymaster/2", secret_key=SECRET).target
    assert (t.hosts, t.service_name, t.db, t.password) == (
        (("s1", 26379), ("s2", 26379)), "mymaster", 2, "pw")
    t = Settings(redis_url="rediss+cluster://u:p@n1:7000,[::1]:7001", secret_key=SECRET).target
    assert t.hosts == (("n1", 7000), ("::1", 7001)) and t.tls and t.username == "u"


def test_generated_secret_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    import redis_middleware.config.validation as mod

    mod._warned_generated_secret = False
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        Settings()
        Settings()
    assert sum("SECRET_KEY is not set" in r.message for r in caplog.records) == 1


def test_defaults_that_depend_on_another_setting_are_derived_from_it() -> None:
    """A short presence TTL gets a heartbeat, sweep and grace that fit it, instead of a
    ConfigError for the 30 s default heartbeat; replace() derives them again."""
    short = Settings(redis_url="memory://", presence_ttl=20)
    assert (short.presence_heartbeat_interval, short.presence_sweep_interval,
            short.presence_grace) == (2.0, 1.0, 5.0)
    back = short.replace(presence_ttl=300)
    assert (back.presence_heartbeat_interval, back.presence_sweep_interval) == (30.0, 10.0)
    assert Settings(redis_url="memory://", session_absolute_lifetime=3600
                    ).session_idle_timeout == 3600
    assert Settings(redis_url="memory://", cache_lock_timeout=2).cache_lock_wait == 2
    slides = Settings(redis_url="memory://", session_idle_timeout=5)
    assert slides.session_slide_interval == 0.5
    assert slides.replace(session_idle_timeout=3600).session_slide_interval == 60
    env = Settings.from_env({"REDIS_URL": "memory://", "REDIS_MIDDLEWARE_PRESENCE_TTL": "40"})
    assert env.presence_heartbeat_interval == 4.0


def test_a_value_set_by_hand_is_never_adjusted() -> None:
    chosen = Settings(redis_url="memory://", presence_heartbeat_interval=15)
    assert chosen.replace(presence_ttl=60).presence_heartbeat_interval == 15
    with pytest.raises(ConfigError, match="PRESENCE_HEARTBEAT_INTERVAL"):
        Settings(redis_url="memory://", presence_ttl=20, presence_heartbeat_interval=30)
    assert "presence_heartbeat_interval" not in chosen.derived


BAD_COOKIE_NAMES = [
    pytest.param("a b", id="space"), pytest.param("x;y", id="semicolon"),
    pytest.param("a=b", id="equals"), pytest.param("a,b", id="comma"),
    pytest.param("", id="empty"), pytest.param("th\xe8me", id="non-ascii"),
    pytest.param("tab\t", id="control"), pytest.param("lang\n", id="trailing-newline"),
    pytest.param('"lang"', id="quoted"), pytest.param("(a)", id="parentheses"),
]


@pytest.mark.parametrize("name", BAD_COOKIE_NAMES)
def test_a_vary_cookie_that_is_no_cookie_name_is_refused(name: str) -> None:
    """A browser never sends a cookie by such a name: the route would never split its
    entries, silently. Refused when the settings are built, from the environment and
    from code, naming the variable and the bad name."""
    import json

    from redis_middleware.config.rules import CacheRouteSpec

    routes = {"/me": {"ttl": 10, "vary_cookies": ["lang", name]}}
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**REAL, "REDIS_MIDDLEWARE_CACHE_ROUTES": json.dumps(routes)})
    assert info.value.name == "REDIS_MIDDLEWARE_CACHE_ROUTES"
    assert "vary_cookies" in str(info.value) and repr(name) in str(info.value)
    with pytest.raises(ConfigError, match="vary_cookies") as info:
        Settings(cache_routes=routes)
    assert info.value.name == "REDIS_MIDDLEWARE_CACHE_ROUTES"
    assert repr(name) in str(info.value)
    with pytest.raises(ConfigError, match="vary_cookies"):
        Settings().replace(cache_routes=routes)  # a middleware's ``routes=`` option
    with pytest.raises(ValueError, match="vary_cookies"):
        CacheRouteSpec(10, vary_cookies=(name,))


@pytest.mark.parametrize("names", ["lang", 7, [7], None])
def test_vary_cookies_must_be_a_list_of_names(names: object) -> None:
    """A single name where a list belongs was taken letter by letter (``l``, ``a``,
    ...), and a number was turned into text: both refused."""
    with pytest.raises(ConfigError, match="vary_cookies"):
        Settings(cache_routes={"/me": {"ttl": 10, "vary_cookies": names}})


@pytest.mark.parametrize("tags", ["products", 7, None])
def test_route_tags_must_be_a_list(tags: object) -> None:
    """A lone tag name was split into one tag per letter: refused, as vary_cookies."""
    with pytest.raises(ConfigError, match="tags"):
        Settings(cache_routes={"/p": {"ttl": 10, "tags": tags}})
    route = Settings(cache_routes={"/p": {"ttl": 10, "tags": ["products"]}}).cache_routes[0]
    assert route[1].tags == ("products",)
    from redis_middleware.config.rules import CacheRouteSpec

    with pytest.raises(ValueError, match="tags"):
        CacheRouteSpec(10, tags=tags)  # type: ignore[arg-type]


def test_vary_cookies_that_are_cookie_names_are_kept() -> None:
    names = ["lang", "__Host-theme", "a!#$%&'*+-.^_`|~9", "x" * 300]
    settings = Settings(cache_routes={"/me": {"ttl": 10, "vary_cookies": names}})
    assert settings.cache_routes[0][1].vary_cookies == tuple(names)
