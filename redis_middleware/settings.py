"""One immutable ``Settings`` object shared by every component.

Every field can be given to the constructor or read from an environment variable
with :meth:`Settings.from_env`. Validation happens at construction, so a bad
configuration fails at startup, never at the first request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import _parse as p
from ._urls import RedisTarget, parse_redis_url
from .errors import ConfigError
from .sansio.patterns import PathPattern
from .sansio.rules import (
    FAIL_MODES,
    FRESHNESS_MODES,
    IDENTITY_CHOICES,
    STRATEGIES,
    CacheRouteSpec,
    RuleSpec,
    normalise_cache_routes,
    normalise_rules,
    one_of,
    parse_cache_routes_env,
    parse_limits,
    parse_rules_env,
    valid_identity,
)

__all__ = ["Settings"]

logger = logging.getLogger("redis_middleware")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# RFC 6265 cookie-name = token (RFC 2616): visible ASCII minus separators.
_COOKIE_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
_COOKIE_PATH_RE = re.compile(r"^/[\x21-\x3a\x3c-\x7e]*$")  # no CTLs, spaces or ';'
_DOMAIN_RE = re.compile(r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MIN_SECRET = 32
_warned_generated_secret = False


def _setting(
    default: Any,
    env: str,
    parser: Callable[[str], Any],
    doc: str,
    *,
    secret: bool = False,
) -> Any:
    return field(
        default=default,
        metadata={"env": env, "parser": parser, "doc": doc, "secret": secret},
    )


# Defaults that depend on another setting: left unset, each is computed from the one it
# depends on (and computed again by ``replace`` when that one changes). The text is what
# the configuration reference shows as the default.
DERIVED: dict[str, tuple[Callable[[Any], Any], str]] = {
    "session_idle_timeout": (lambda s: min(14 * 86400, s.session_absolute_lifetime),
                             "min(1209600, session_absolute_lifetime)"),
    "cache_lock_wait": (lambda s: min(5.0, s.cache_lock_timeout),
                        "min(5, cache_lock_timeout)"),
    "presence_heartbeat_interval": (lambda s: min(30.0, s.presence_ttl / 10),
                                    "min(30, presence_ttl / 10)"),
    "presence_sweep_interval": (lambda s: max(1.0, min(10.0, s.presence_ttl / 30)),
                                "presence_ttl / 30, within [1, 10]"),
    "presence_grace": (lambda s: min(5.0, s.presence_ttl / 4), "min(5, presence_ttl / 4)"),
    "presence_retention": (lambda s: max(30 * 86400, s.presence_ttl),
                           "max(2592000, presence_ttl)"),
}


def _secret_list(raw: str) -> tuple[str, ...]:
    return p.parse_csv(raw)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration shared by sessions, rate limiting, caching and presence.

    Example::

        settings = Settings(redis_url="redis://localhost:6379/0", key_prefix="shop",
                            secret_key="a long random secret of 32+ characters")
        settings = Settings.from_env()            # reads os.environ

    Invalid values raise :class:`ConfigError` naming the environment variable.
    ``repr()`` never shows the secret key or a password in the URL.
    """

    # -- connection ---------------------------------------------------------
    redis_url: str = _setting(
        "memory://", "REDIS_URL", p.parse_str,
        "Where Redis is: redis://, rediss:// (TLS), unix://, redis+sentinel://, "
        "redis+cluster://, or memory:// (an in-process server for one process).",
        secret=True,
    )
    key_prefix: str = _setting(
        "rmw", "REDIS_MIDDLEWARE_KEY_PREFIX", p.parse_str,
        "Namespace of every key: `<prefix>:<component>:...`. Letters, digits, `_.-`.",
    )
    secret_key: tuple[str, ...] = _setting(
        (), "REDIS_MIDDLEWARE_SECRET_KEY", _secret_list,
        "Comma-separated signing secrets (32+ characters each). The first signs, all "
        "verify. Required unless REDIS_URL is memory://.",
        secret=True,
    )
    socket_timeout: float = _setting(
        0.5, "REDIS_MIDDLEWARE_SOCKET_TIMEOUT", p.parse_float,
        "Seconds to wait for a Redis reply before the request goes on without it.",
    )
    connect_timeout: float = _setting(
        0.5, "REDIS_MIDDLEWARE_CONNECT_TIMEOUT", p.parse_float,
        "Seconds to wait for a new Redis connection.",
    )
    max_connections: int = _setting(
        64, "REDIS_MIDDLEWARE_MAX_CONNECTIONS", p.parse_int,
        "Most connections a process opens to Redis for sync requests (WSGI, CLI), and "
        "the pool size of redis-py's clients (Cluster, Sentinel). Asyncio requests to a "
        "single Redis share one pipelined connection per event loop.",
    )
    breaker_cooldown: float = _setting(
        1.0, "REDIS_MIDDLEWARE_BREAKER_COOLDOWN", p.parse_float,
        "After Redis fails, seconds during which requests skip Redis at once instead "
        "of each waiting for a timeout; then one request probes again.",
    )
    user_field: str = _setting(
        "user_id", "REDIS_MIDDLEWARE_USER_FIELD", p.parse_str,
        "Session key holding the logged-in user's id (identity for rate limiting, "
        "presence and the per-user session index).",
    )
    # -- the one-line stack (RedisMiddleware) ------------------------------
    session_enabled: bool = _setting(
        True, "REDIS_MIDDLEWARE_SESSION_ENABLED", p.parse_bool,
        "RedisMiddleware: run sessions.",
    )
    ratelimit_enabled: bool = _setting(
        True, "REDIS_MIDDLEWARE_RATELIMIT_ENABLED", p.parse_bool,
        "Run rate limiting (RedisMiddleware, RateLimitMiddleware, Django's; false limits "
        "nothing, as Flask-Limiter's RATELIMIT_ENABLED). It limits only when a limit or "
        "rules are set.",
    )
    cache_enabled: bool = _setting(
        True, "REDIS_MIDDLEWARE_CACHE_ENABLED", p.parse_bool,
        "RedisMiddleware: run response caching (it caches only the configured routes).",
    )
    presence_enabled: bool = _setting(
        True, "REDIS_MIDDLEWARE_PRESENCE_ENABLED", p.parse_bool,
        "RedisMiddleware: record presence.",
    )
    # -- sessions -----------------------------------------------------------
    session_cookie_name: str = _setting(
        "session", "REDIS_MIDDLEWARE_SESSION_COOKIE_NAME", p.parse_str,
        "Name of the session cookie. A `__Host-` name requires Secure, Path=/ and no Domain.",
    )
    session_cookie_domain: str | None = _setting(
        None, "REDIS_MIDDLEWARE_SESSION_COOKIE_DOMAIN", p.parse_optional_str,
        "Domain attribute of the cookie; empty means host-only.",
    )
    session_cookie_path: str = _setting(
        "/", "REDIS_MIDDLEWARE_SESSION_COOKIE_PATH", p.parse_str, "Path attribute of the cookie.",
    )
    session_cookie_secure: bool | None = _setting(
        None, "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE", p.parse_optional_bool,
        "`true`, `false`, or `auto` (Secure on https requests only).",
    )
    session_cookie_samesite: str = _setting(
        "lax", "REDIS_MIDDLEWARE_SESSION_COOKIE_SAMESITE", p.parse_str,
        "SameSite attribute: `lax`, `strict` or `none` (always sent with Secure, which "
        "browsers require for it).",
    )
    session_cookie_httponly: bool = _setting(
        True, "REDIS_MIDDLEWARE_SESSION_COOKIE_HTTPONLY", p.parse_bool,
        "HttpOnly attribute of the cookie (scripts in the page cannot read it).",
    )
    session_cookie_partitioned: bool = _setting(
        False, "REDIS_MIDDLEWARE_SESSION_COOKIE_PARTITIONED", p.parse_bool,
        "Partitioned attribute (CHIPS: a cookie per top-level site, for embedded apps); "
        "implies Secure.",
    )
    session_cookie_persistent: bool = _setting(
        True, "REDIS_MIDDLEWARE_SESSION_COOKIE_PERSISTENT", p.parse_bool,
        "`true`: the cookie carries Max-Age = the absolute lifetime; `false`: a "
        "browser-session cookie, gone when the browser closes.",
    )
    session_idle_timeout: int = _setting(
        None, "REDIS_MIDDLEWARE_SESSION_IDLE_TIMEOUT", p.parse_int,
        "Seconds of inactivity after which a session expires (sliding, enforced by Redis TTL).",
    )
    session_absolute_lifetime: int = _setting(
        30 * 86400, "REDIS_MIDDLEWARE_SESSION_ABSOLUTE_LIFETIME", p.parse_int,
        "Seconds after creation after which a session expires, however active.",
    )
    session_regenerate_grace: float = _setting(
        60.0, "REDIS_MIDDLEWARE_SESSION_REGENERATE_GRACE", p.parse_float,
        "Seconds a regenerated session's old id forwards the writes of requests that "
        "loaded it before the login (they land in the new session); `0` refuses them. "
        "Never loads: an old cookie is no session.",
    )
    session_max_fields: int = _setting(
        1000, "REDIS_MIDDLEWARE_SESSION_MAX_FIELDS", p.parse_int,
        "Most keys one session may hold. Up to 128 keep Redis's compact hash encoding "
        "(hash-max-listpack-entries); more are stored, at a higher memory cost.",
    )
    session_max_value_bytes: int = _setting(
        64 * 1024, "REDIS_MIDDLEWARE_SESSION_MAX_VALUE_BYTES", p.parse_int,
        "Largest encoded value of one session key, in bytes. Values up to 64 bytes keep "
        "Redis's compact hash encoding (hash-max-listpack-value); a session with a larger "
        "one is stored at a higher memory cost (logged once per process).",
    )
    session_max_bytes: int = _setting(
        1024 * 1024, "REDIS_MIDDLEWARE_SESSION_MAX_BYTES", p.parse_int,
        "Largest total of encoded keys and values of one session, in bytes.",
    )
    session_on_redis_error: str = _setting(
        "fail", "REDIS_MIDDLEWARE_SESSION_ON_REDIS_ERROR", p.parse_str,
        "When Redis fails: `fail` answers a request that uses its session with 503; "
        "`readonly` carries on with an empty session whose changes are dropped.",
    )
    # -- client identity (rate limiting, presence) -------------------------
    trusted_proxies: tuple[str, ...] = _setting(
        (), "REDIS_MIDDLEWARE_TRUSTED_PROXIES", p.parse_csv,
        "Comma-separated IPs/CIDRs of your reverse proxies. X-Forwarded-For and Forwarded "
        "are read only from these peers. `*` trusts every peer (warned about).",
    )
    ipv6_prefix: int = _setting(
        64, "REDIS_MIDDLEWARE_IPV6_PREFIX", p.parse_int,
        "IPv6 clients are grouped by this prefix length (one /64 is one subscriber).",
    )
    # -- rate limiting ------------------------------------------------------
    ratelimit_limit: str = _setting(
        "", "REDIS_MIDDLEWARE_RATELIMIT_LIMIT", p.parse_str,
        "Default limit for every path, a `limits` rate string; several joined by `;` "
        "(`10/second;100/minute`). Empty: only `rules` paths are limited.",
    )
    ratelimit_key: Any = _setting(  # noqa: RUF009 (str or callable)
        "ip", "REDIS_MIDDLEWARE_RATELIMIT_KEY", p.parse_str,
        "Whom a limit counts: `ip`, `user`, `user_or_ip`, `bearer` (the token of "
        "`Authorization: Bearer`, hashed), `header:<Name>` (that header's value, hashed: "
        "an API key), or, in code, a callable. `bearer` and `header:` count a request "
        "without one by IP.",
    )
    refusal_handler: Any = _setting(  # noqa: RUF009 (a callable)
        None, "REDIS_MIDDLEWARE_REFUSAL_HANDLER", p.parse_import,
        "Shapes the responses the middleware answers itself: `handler(request, refusal)` "
        "returns a `Response` or None for the default (problem+json, or HTML for a "
        "browser). In the environment: `module:attribute`.",
    )
    ratelimit_rules: tuple[tuple[str, RuleSpec], ...] = _setting(
        (), "REDIS_MIDDLEWARE_RATELIMIT_RULES", parse_rules_env,
        'Per-path limits as JSON: `{"/login": "5/minute", "/api/*": {"limit": '
        '"100/minute", "methods": ["POST"], "cost": 1, "fail": "closed"}}`.',
    )
    ratelimit_exempt: tuple[str, ...] = _setting(
        (), "REDIS_MIDDLEWARE_RATELIMIT_EXEMPT", p.parse_csv,
        "Comma-separated path patterns never limited (e.g. `/health,/static/*`).",
    )
    ratelimit_strategy: str = _setting(
        "fixed-window", "REDIS_MIDDLEWARE_RATELIMIT_STRATEGY", p.parse_str,
        "`fixed-window` (one round trip for any number of limits), `moving-window` or "
        "`sliding-window-counter` (the `limits` library's strategies).",
    )
    ratelimit_headers: str = _setting(
        "legacy", "REDIS_MIDDLEWARE_RATELIMIT_HEADERS", p.parse_str,
        "Which headers: `legacy` (X-RateLimit-*), `draft` (IETF RateLimit-Policy/RateLimit), "
        "`both` or `none`.",
    )
    ratelimit_default_stacks: bool = _setting(
        False, "REDIS_MIDDLEWARE_RATELIMIT_DEFAULT_STACKS", p.parse_bool,
        "`true`: the default limit also applies on paths that have their own rule (both "
        "are counted, as Flask-Limiter's `override_defaults=False`); `false`: a route's "
        "rule replaces the default there.",
    )
    ratelimit_per_method: bool = _setting(
        False, "REDIS_MIDDLEWARE_RATELIMIT_PER_METHOD", p.parse_bool,
        "`true`: separate counters per HTTP method (Flask-Limiter's `per_method`): a "
        "GET and a POST to one rule do not share its budget.",
    )
    ratelimit_reset: str = _setting(
        "seconds", "REDIS_MIDDLEWARE_RATELIMIT_RESET", p.parse_str,
        "`X-RateLimit-Reset` as `seconds` until the window resets (the IETF draft's "
        "meaning) or as an `epoch` timestamp (what slowapi, Flask-Limiter and GitHub send).",
    )
    ratelimit_fail: str = _setting(
        "open", "REDIS_MIDDLEWARE_RATELIMIT_FAIL", p.parse_str,
        "When Redis fails: `open` lets requests through; `closed` answers 503.",
    )
    ratelimit_dry_run: bool = _setting(
        False, "REDIS_MIDDLEWARE_RATELIMIT_DRY_RUN", p.parse_bool,
        "Log what would be limited, limit nothing.",
    )
    ratelimit_count_cache_hits: bool = _setting(
        True, "REDIS_MIDDLEWARE_RATELIMIT_COUNT_CACHE_HITS", p.parse_bool,
        "RedisMiddleware: a response served from the cache still counts against the "
        "limit (`false`: only requests that reach the app count).",
    )
    # -- response caching -----------------------------------------------------
    cache_routes: tuple[tuple[str, CacheRouteSpec], ...] = _setting(
        (), "REDIS_MIDDLEWARE_CACHE_ROUTES", parse_cache_routes_env,
        'Cached routes as JSON: `{"/items/{id}": 60, "/products": {"ttl": 30, "tags": '
        '["products"], "vary_cookies": []}}` (TTL in seconds).',
    )
    cache_freshness: str = _setting(
        "default", "REDIS_MIDDLEWARE_CACHE_FRESHNESS", p.parse_str,
        "`default`: a route's TTL is the freshness of responses that state none; the "
        "response's own `s-maxage`, `max-age` or `Expires` decide otherwise. `origin`: "
        "store only what the response makes cacheable (a route's own `freshness` wins).",
    )
    cache_max_ttl: int = _setting(
        0, "REDIS_MIDDLEWARE_CACHE_MAX_TTL", p.parse_int,
        "Cap on any stored response's freshness, in seconds (0: no cap; a route's own "
        "`max_ttl` wins).",
    )
    cache_statuses: tuple[int, ...] = _setting(
        (200,), "REDIS_MIDDLEWARE_CACHE_STATUSES", p.parse_int_csv,
        "Comma-separated statuses that get a route's default freshness; a response that "
        "states its own freshness is stored whatever its final status (but 206 and 304).",
    )
    cache_keep_stale: int = _setting(
        600, "REDIS_MIDDLEWARE_CACHE_KEEP_STALE", p.parse_int,
        "Seconds a stored response with a validator (`ETag`, `Last-Modified`) is kept "
        "after it goes stale, to be revalidated with the app instead of recomputed.",
    )
    cache_stale_if_error: int = _setting(
        0, "REDIS_MIDDLEWARE_CACHE_STALE_IF_ERROR", p.parse_int,
        "Seconds a stale entry may answer instead of the app's 5xx or exception when the "
        "response did not say `stale-if-error` itself (0: only when it did). Never for "
        "`must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` responses.",
    )
    cache_request_directives: bool = _setting(
        True, "REDIS_MIDDLEWARE_CACHE_REQUEST_DIRECTIVES", p.parse_bool,
        "Obey the request's `Cache-Control` and `Pragma` (`no-cache`, `no-store`, "
        "`max-age`, `min-fresh`, `max-stale`), as RFC 9111 says; `false`: ignore them, as "
        "nginx and Varnish do by default, so no client can force a request to the app.",
    )
    cache_targets: tuple[str, ...] = _setting(
        ("RedisMiddleware-Cache-Control", "CDN-Cache-Control"),
        "REDIS_MIDDLEWARE_CACHE_TARGETS", p.parse_csv,
        "Targeted cache-control fields this cache obeys before `Cache-Control` and "
        "`Expires` (RFC 9213), first found wins. `RedisMiddleware-Cache-Control` aims at "
        "this cache only and is removed from responses; the others are passed on.",
    )
    cache_refresh_workers: int = _setting(
        4, "REDIS_MIDDLEWARE_CACHE_REFRESH_WORKERS", p.parse_int,
        "WSGI: threads that refresh stale entries in the background "
        "(`stale-while-revalidate`); ASGI refreshes on the event loop.",
    )
    cache_max_body: int = _setting(
        1024 * 1024, "REDIS_MIDDLEWARE_CACHE_MAX_BODY", p.parse_int,
        "Largest body stored, in bytes; larger responses stream through uncached.",
    )
    cache_allowed_hosts: tuple[str, ...] = _setting(
        (), "REDIS_MIDDLEWARE_CACHE_ALLOWED_HOSTS", p.parse_csv,
        "Comma-separated Host values that may use the cache (empty: any; the host is "
        "always part of the key). Other hosts bypass it.",
    )
    cache_lock_timeout: float = _setting(
        10.0, "REDIS_MIDDLEWARE_CACHE_LOCK_TIMEOUT", p.parse_float,
        "Stampede guard: seconds one request may hold the right to compute a missing "
        "entry (0 disables the guard).",
    )
    cache_lock_wait: float = _setting(
        None, "REDIS_MIDDLEWARE_CACHE_LOCK_WAIT", p.parse_float,
        "Seconds other requests wait for that entry before computing uncached.",
    )
    # -- presence -----------------------------------------------------------
    presence_ttl: int = _setting(
        300, "REDIS_MIDDLEWARE_PRESENCE_TTL", p.parse_int,
        "Seconds a user stays online after their last heartbeat.",
    )
    presence_heartbeat_interval: float = _setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_HEARTBEAT_INTERVAL", p.parse_float,
        "Each process writes a user's heartbeat at most once per this many seconds "
        "(must be shorter than the presence TTL).",
    )
    presence_sweep_interval: float = _setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_SWEEP_INTERVAL", p.parse_float,
        "How often (seconds) one worker looks for users whose leases ran out and "
        "publishes their going offline.",
    )
    presence_grace: float = _setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_GRACE", p.parse_float,
        "Seconds a closed WebSocket still counts, so a page reload does not flap.",
    )
    presence_retention: int = _setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_RETENTION", p.parse_int,
        "Seconds `last_seen` is kept after a user's last activity.",
    )
    presence_key: str = _setting(
        "user", "REDIS_MIDDLEWARE_PRESENCE_KEY", p.parse_str,
        "Who is online: `user` (the session's or the framework's user), or `bearer` / "
        "`header:<Name>` (API clients: the request's credential, hashed, else the user).",
    )

    # -- real-time fan-out (Broadcast) --------------------------------------
    realtime_durable_rooms: tuple[str, ...] = _setting(
        (), "REDIS_MIDDLEWARE_REALTIME_DURABLE_ROOMS", p.parse_csv,
        "Comma-separated room patterns (`*` any text, e.g. `chat:*`) whose messages are "
        "also kept in a Redis Stream: replayed after a reconnect. Other rooms are plain "
        "Pub/Sub (at most once).",
    )
    realtime_stream_maxlen: int = _setting(
        1000, "REDIS_MIDDLEWARE_REALTIME_STREAM_MAXLEN", p.parse_int,
        "Durable rooms: about this many latest messages are kept per room.",
    )
    realtime_stream_max_age: int = _setting(
        3600, "REDIS_MIDDLEWARE_REALTIME_STREAM_MAX_AGE", p.parse_int,
        "Durable rooms: seconds a message stays replayable (the replay window).",
    )
    realtime_queue_size: int = _setting(
        256, "REDIS_MIDDLEWARE_REALTIME_QUEUE_SIZE", p.parse_int,
        "Messages waiting for one slow subscriber before the overflow policy applies.",
    )
    realtime_overflow: str = _setting(
        "drop-oldest", "REDIS_MIDDLEWARE_REALTIME_OVERFLOW", p.parse_str,
        "A subscriber whose queue is full: `drop-oldest` (it then gets a gap marker) or "
        "`disconnect` (its subscription ends with SubscriberOverflow).",
    )
    realtime_max_message_bytes: int = _setting(
        65536, "REDIS_MIDDLEWARE_REALTIME_MAX_MESSAGE_BYTES", p.parse_int,
        "Largest JSON message `publish` accepts (bytes); larger ones raise ValueError.",
    )
    # -- data cache (DataCache, and the Django and Flask cache backends) ------
    data_ttl: float = _setting(
        300.0, "REDIS_MIDDLEWARE_DATA_TTL", p.parse_float,
        "DataCache: seconds a value is fresh when a call names no `ttl`.",
    )
    data_max_ttl: float = _setting(
        30 * 86400.0, "REDIS_MIDDLEWARE_DATA_MAX_TTL", p.parse_float,
        "Seconds a framework cache backend keeps a value stored \"forever\" (Django's "
        "`timeout=None`, Flask-Caching's `0`), so that every key still carries a TTL.",
    )
    data_lock_timeout: float = _setting(
        10.0, "REDIS_MIDDLEWARE_DATA_LOCK_TIMEOUT", p.parse_float,
        "Single-flight: seconds the caller computing a missing value holds its lease. It is "
        "renewed while the loader runs, so this is how soon a crashed process's lease frees.",
    )
    data_lock_wait: float = _setting(
        10.0, "REDIS_MIDDLEWARE_DATA_LOCK_WAIT", p.parse_float,
        "Seconds other callers wait for that value before running the loader themselves.",
    )
    data_serializer: Any = _setting(  # noqa: RUF009 (a name or an object)
        "json", "REDIS_MIDDLEWARE_DATA_SERIALIZER", p.parse_str,
        "How values are stored: `json`, `msgpack` (the `msgpack` extra), `pickle` (signed "
        "with the secret key: a value that fails the check is a miss, never unpickled), or "
        "an object with `dumps`/`loads` (in the environment: `module:attribute`).",
    )
    data_compress_min: int = _setting(
        0, "REDIS_MIDDLEWARE_DATA_COMPRESS_MIN", p.parse_int,
        "Values of at least this many bytes are stored zlib-compressed (when that is "
        "smaller); `0`: never.",
    )
    data_max_value_bytes: int = _setting(
        1024 * 1024, "REDIS_MIDDLEWARE_DATA_MAX_VALUE_BYTES", p.parse_int,
        "Largest value stored, in bytes (after compression). A larger one is returned to "
        "its caller, not stored (logged once per incident).",
    )
    near_cache_size: int = _setting(
        0, "REDIS_MIDDLEWARE_NEAR_CACHE_SIZE", p.parse_int,
        "Data cache: values kept in the process and served with no round trip (Redis "
        "tells the process when one changes: client-side caching); `0`: off.",
    )
    near_cache_ttl: float = _setting(
        60.0, "REDIS_MIDDLEWARE_NEAR_CACHE_TTL", p.parse_float,
        "Seconds a near-cache entry may be served at most, whatever Redis says.",
    )

    def __post_init__(self) -> None:
        global _warned_generated_secret
        keys: Any = self.secret_key  # a comma-separated str is accepted too
        keys = p.parse_csv(keys) if isinstance(keys, str) else tuple(keys)
        object.__setattr__(self, "secret_key", keys)
        try:
            target = parse_redis_url(self.redis_url)
        except ValueError as exc:
            raise ConfigError("REDIS_URL", f"invalid URL: {exc}") from None
        object.__setattr__(self, "_target", target)
        if not self.secret_key:
            if target.kind != "memory":
                raise ConfigError(
                    "REDIS_MIDDLEWARE_SECRET_KEY",
                    "required when REDIS_URL is not memory:// (32+ random characters)",
                )
            object.__setattr__(self, "secret_key", (secrets.token_urlsafe(48),))
            object.__setattr__(self, "_secret_generated", True)
            if not _warned_generated_secret:
                _warned_generated_secret = True
                logger.warning(
                    "REDIS_MIDDLEWARE_SECRET_KEY is not set: using a random secret for this "
                    "process (sessions will not survive a restart)"
                )
        derived = frozenset(name for name in DERIVED if getattr(self, name) is None)
        object.__setattr__(self, "_derived", derived)
        for name in DERIVED:  # in order: presence_ttl before what depends on it
            if name in derived:
                object.__setattr__(self, name, DERIVED[name][0](self))
        for key in self.secret_key:
            if len(key) < _MIN_SECRET:
                raise ConfigError(
                    "REDIS_MIDDLEWARE_SECRET_KEY",
                    f"each secret must be at least {_MIN_SECRET} characters",
                )
        self._validate()

    # -- validation ---------------------------------------------------------
    def _fail(self, name: str, message: str) -> None:
        env = self.env_name(name)
        raise ConfigError(env, f"{message} (got {getattr(self, name)!r})")

    def _validate(self) -> None:
        if not _PREFIX_RE.match(self.key_prefix):
            self._fail("key_prefix", "must be 1-64 characters of letters, digits, '_', '.', '-'")
        for name in ("socket_timeout", "connect_timeout", "breaker_cooldown"):
            if not 0 < getattr(self, name) <= 60:
                self._fail(name, "must be a number of seconds in (0, 60]")
        positive_ints = (
            "max_connections", "session_idle_timeout", "session_absolute_lifetime",
            "session_max_fields", "session_max_value_bytes", "session_max_bytes", "presence_ttl",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                self._fail(name, "must be a positive whole number")
        if not _FIELD_RE.match(self.user_field):
            self._fail("user_field", "must be an identifier of at most 64 characters")
        self._validate_cookie()
        self._validate_session()
        self._validate_ratelimit()
        self._validate_cache()
        if not 0 < self.presence_heartbeat_interval < self.presence_ttl:
            self._fail("presence_heartbeat_interval", "must be between 0 and the presence TTL")
        for name in ("presence_sweep_interval", "presence_grace"):
            if not 0 < getattr(self, name) <= 3600:
                self._fail(name, "must be seconds in (0, 3600]")
        if self.presence_retention < self.presence_ttl:
            self._fail("presence_retention", "must be at least the presence TTL")
        if self.session_on_redis_error not in {"fail", "readonly"}:
            self._fail("session_on_redis_error", "must be 'fail' or 'readonly'")
        self._validate_realtime()
        self._validate_data()

    def _validate_realtime(self) -> None:
        rooms: Any = self.realtime_durable_rooms  # a comma-separated str is accepted too
        object.__setattr__(self, "realtime_durable_rooms", p.parse_csv(rooms) if isinstance(
            rooms, str) else tuple(rooms))
        for name in ("realtime_stream_maxlen", "realtime_stream_max_age",
                     "realtime_queue_size", "realtime_max_message_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                self._fail(name, "must be a positive whole number")
        if self.realtime_overflow not in {"drop-oldest", "disconnect"}:
            self._fail("realtime_overflow", "must be 'drop-oldest' or 'disconnect'")

    def _validate_data(self) -> None:
        bounds = {"data_ttl": (0.0, 10 * 365 * 86400.0), "data_max_ttl": (0.0, 10 * 365 * 86400.0),
                  "data_lock_timeout": (0.0, 3600.0), "near_cache_ttl": (0.0, 86400.0)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    low < value <= high):
                self._fail(name, f"must be seconds in ({low:g}, {high:g}]")
        if not 0 <= self.data_lock_wait <= 3600:
            self._fail("data_lock_wait", "must be seconds in [0, 3600]")
        for name, high in (("data_compress_min", 2**31), ("data_max_value_bytes", 512 * 2**20),
                           ("near_cache_size", 10**8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                self._fail(name, f"must be a whole number in [0, {high}]")
        if self.data_max_value_bytes == 0:
            self._fail("data_max_value_bytes", "must be a positive whole number")
        serializer = self.data_serializer
        if isinstance(serializer, str):
            name = serializer.strip().lower()
            if ":" in name:
                try:
                    object.__setattr__(self, "data_serializer", p.parse_import(serializer))
                except ValueError as exc:
                    self._fail("data_serializer", str(exc))
            elif name not in ("json", "msgpack", "pickle"):
                self._fail("data_serializer", "must be 'json', 'msgpack', 'pickle' or "
                           "module:attribute of an object with dumps and loads")
            else:
                if name == "msgpack":
                    from importlib.util import find_spec  # an optional dependency

                    if find_spec("msgpack") is None:
                        self._fail("data_serializer", "'msgpack' needs the msgpack package "
                                   "(pip install redis-middleware[msgpack])")
                object.__setattr__(self, "data_serializer", name)
        serializer = self.data_serializer
        if not isinstance(serializer, str) and not (
                callable(getattr(serializer, "dumps", None))
                and callable(getattr(serializer, "loads", None))):
            self._fail("data_serializer", "must be an object with dumps and loads methods")

    def _validate_ratelimit(self) -> None:
        for name in ("ratelimit_exempt", "trusted_proxies"):
            value: Any = getattr(self, name)  # a comma-separated str is accepted too
            object.__setattr__(self, name, p.parse_csv(value) if isinstance(value, str)
                               else tuple(value))
        for entry in self.trusted_proxies:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    self._fail("trusted_proxies", f"{entry!r} is not an IP address or network")
        if not 1 <= self.ipv6_prefix <= 128:
            self._fail("ipv6_prefix", "must be between 1 and 128")
        try:
            parse_limits(self.ratelimit_limit)
        except ValueError as exc:
            self._fail("ratelimit_limit", str(exc))
        try:
            object.__setattr__(self, "ratelimit_rules", normalise_rules(self.ratelimit_rules))
        except (ValueError, TypeError) as exc:
            self._fail("ratelimit_rules", str(exc))
        for pattern in self.ratelimit_exempt:
            try:
                PathPattern.compile(pattern)
            except ValueError as exc:
                self._fail("ratelimit_exempt", str(exc))
        if self.refusal_handler is not None and not callable(self.refusal_handler):
            self._fail("refusal_handler", "must be a callable (request, refusal) -> Response")
        if self.presence_key != "user" and (
                self.presence_key in ("ip", "user_or_ip") or not valid_identity(self.presence_key)):
            self._fail("presence_key", "must be 'user', 'bearer' or 'header:<Name>'")
        key = self.ratelimit_key
        if not callable(key) and not valid_identity(key):
            self._fail("ratelimit_key", f"must be {one_of((*IDENTITY_CHOICES, 'a callable'))}")
        choices = {
            "ratelimit_strategy": STRATEGIES,
            "ratelimit_headers": ("legacy", "draft", "both", "none"),
            "ratelimit_reset": ("seconds", "epoch"),
            "ratelimit_fail": FAIL_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                self._fail(name, "must be one of " + ", ".join(repr(a) for a in allowed))

    def _validate_cache(self) -> None:
        try:
            object.__setattr__(self, "cache_routes", normalise_cache_routes(self.cache_routes))
        except (ValueError, TypeError) as exc:
            self._fail("cache_routes", str(exc))
        statuses: Any = self.cache_statuses
        if isinstance(statuses, int):
            statuses = (statuses,)
        object.__setattr__(self, "cache_statuses", tuple(statuses))
        if not all(isinstance(c, int) and 100 <= c <= 599 for c in self.cache_statuses):
            self._fail("cache_statuses", "must be HTTP status codes")
        hosts: Any = self.cache_allowed_hosts
        object.__setattr__(self, "cache_allowed_hosts", tuple(
            h.lower() for h in (p.parse_csv(hosts) if isinstance(hosts, str) else hosts)))
        if self.cache_max_body < 0:
            self._fail("cache_max_body", "must be a number of bytes >= 0")
        if not 0 <= self.cache_lock_timeout <= 600:
            self._fail("cache_lock_timeout", "must be seconds in [0, 600]")
        if not 0 <= self.cache_lock_wait <= 600:
            self._fail("cache_lock_wait", "must be seconds in [0, 600]")
        if self.cache_freshness not in FRESHNESS_MODES:
            self._fail("cache_freshness", f"must be {one_of(FRESHNESS_MODES)}")
        for name in ("cache_max_ttl", "cache_keep_stale", "cache_stale_if_error"):
            if getattr(self, name) < 0:
                self._fail(name, "must be seconds >= 0")
        if not 1 <= self.cache_refresh_workers <= 64:
            self._fail("cache_refresh_workers", "must be between 1 and 64")
        targets: Any = self.cache_targets
        object.__setattr__(self, "cache_targets", tuple(
            t.strip().lower() for t in (p.parse_csv(targets) if isinstance(targets, str)
                                        else targets) if t.strip()))

    def _validate_session(self) -> None:
        if not 0 <= self.session_regenerate_grace <= 3600:
            self._fail("session_regenerate_grace", "must be seconds in [0, 3600]")

    def _validate_cookie(self) -> None:
        name = self.session_cookie_name
        if not _COOKIE_NAME_RE.match(name):
            self._fail("session_cookie_name", "must be a cookie token (no spaces or separators)")
        if not _COOKIE_PATH_RE.match(self.session_cookie_path):
            self._fail("session_cookie_path", "must start with '/' and hold no ';' or spaces")
        domain = self.session_cookie_domain
        if domain is not None and not _DOMAIN_RE.match(domain):
            self._fail("session_cookie_domain", "must be a domain name")
        samesite = self.session_cookie_samesite.lower()
        if samesite not in {"lax", "strict", "none"}:
            self._fail("session_cookie_samesite", "must be 'lax', 'strict' or 'none'")
        object.__setattr__(self, "session_cookie_samesite", samesite)
        if samesite == "none" and self.session_cookie_secure is False:
            self._fail("session_cookie_secure", "SameSite=None requires Secure")
        if self.session_cookie_partitioned and self.session_cookie_secure is False:
            self._fail("session_cookie_secure", "a Partitioned cookie requires Secure")
        if name.startswith(("__Host-", "__Secure-")) and self.session_cookie_secure is not True:
            self._fail("session_cookie_secure", f"a cookie named {name!r} requires secure=true")
        if name.startswith("__Host-"):
            if self.session_cookie_path != "/":
                self._fail("session_cookie_path", "a __Host- cookie requires Path=/")
            if domain is not None:
                self._fail("session_cookie_domain", "a __Host- cookie must not set Domain")

    # -- construction -------------------------------------------------------
    @property
    def secret_generated(self) -> bool:
        """The secret was generated for this process (``memory://`` with none set)."""
        return bool(getattr(self, "_secret_generated", False))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 defaults: Mapping[str, Any] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); a variable that is not
        set means ``defaults[field]`` if given (a framework's own configuration, say), else
        the field's default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for f in fields(cls):
            name = f.metadata["env"]
            if name in env:
                values[f.name] = p.parse_env(
                    name, env[name], f.metadata["parser"], secret=f.metadata["secret"]
                )
        return cls(**values)

    @property
    def derived(self) -> frozenset[str]:
        """The settings left unset and derived from others (``DERIVED``)."""
        found: frozenset[str] = getattr(self, "_derived", frozenset())
        return found

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated like the constructor)."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise ConfigError(name, "unknown setting")
        # A derived default is derived again from the new values, unless it is changed.
        rederive: dict[str, Any] = {n: None for n in self.derived if n not in changes}
        replaced = dataclasses.replace(self, **rederive, **changes)
        if self.secret_generated and "secret_key" not in changes:
            object.__setattr__(replaced, "_secret_generated", True)  # still not chosen
        return replaced

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable of field ``name``."""
        for f in fields(cls):
            if f.name == name:
                return str(f.metadata["env"])
        raise KeyError(name)

    @property
    def target(self) -> RedisTarget:
        """The parsed ``redis_url``."""
        target: RedisTarget = object.__getattribute__(self, "_target")
        return target

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "secret_key":
                shown = f"<{len(value)} secret(s)>"
            elif f.name == "redis_url":
                shown = repr(_mask_url(value))
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"


def _mask_url(url: str) -> str:
    """Hide the password in a URL for logs and repr."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", re.sub(r"://[^:/@]+@", "://***@", url))
