"""One immutable ``Settings`` object shared by every component: its fields.

Every field can be given to the constructor or read from an environment variable
with :meth:`Settings.from_env` (:mod:`.fields`). Validation happens at construction
(:mod:`.validation`), so a bad configuration fails at startup, never at the first request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import identity
from . import parse as p
from .fields import FieldSettings, setting
from .rules import CacheRouteSpec, RuleSpec, parse_cache_routes_env, parse_rules_env
from .urls import RedisTarget, mask_url, parse_redis_url
from .validation import validate

__all__ = ["Settings"]


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings(FieldSettings):
    """Configuration shared by sessions, rate limiting, caching and presence.

    Example::

        settings = Settings(redis_url="redis://localhost:6379/0", key_prefix="shop",
                            secret_key="a long random secret of 32+ characters")
        settings = Settings.from_env()            # reads os.environ

    Invalid values raise :class:`ConfigError` naming the environment variable.
    ``repr()`` never shows the secret key or a password in the URL.
    """

    # -- connection ---------------------------------------------------------
    redis_url: str = setting(
        "memory://", "REDIS_URL", p.parse_str,
        "Where Redis is: redis://, rediss:// (TLS), unix://, redis+sentinel://, "
        "redis+cluster://, or memory:// (an in-process server for one process).",
        secret=True, shown=lambda url: repr(mask_url(url)),
    )
    key_prefix: str = setting(
        "rmw", "REDIS_MIDDLEWARE_KEY_PREFIX", p.parse_str,
        "Namespace of every key: `<prefix>:<component>:...`. Letters, digits, `_.-`.",
    )
    secret_key: tuple[str, ...] = setting(
        (), "REDIS_MIDDLEWARE_SECRET_KEY", p.parse_csv,
        "Comma-separated signing secrets (32+ characters each). The first signs, all "
        "verify. Required unless REDIS_URL is memory://.",
        secret=True, shown=lambda keys: f"<{len(keys)} secret(s)>",
    )
    socket_timeout: float = setting(
        0.5, "REDIS_MIDDLEWARE_SOCKET_TIMEOUT", p.parse_float,
        "Seconds to wait for a Redis reply before the request goes on without it.",
    )
    connect_timeout: float = setting(
        0.5, "REDIS_MIDDLEWARE_CONNECT_TIMEOUT", p.parse_float,
        "Seconds to wait for a new Redis connection.",
    )
    max_connections: int = setting(
        64, "REDIS_MIDDLEWARE_MAX_CONNECTIONS", p.parse_int,
        "Most connections a process opens to Redis for sync requests (WSGI, CLI), and "
        "the pool size of redis-py's clients (Cluster, Sentinel). Asyncio requests to a "
        "single Redis share one pipelined connection per event loop.",
    )
    breaker_cooldown: float = setting(
        1.0, "REDIS_MIDDLEWARE_BREAKER_COOLDOWN", p.parse_float,
        "After Redis fails, seconds during which requests skip Redis at once instead "
        "of each waiting for a timeout; then one request probes again.",
    )
    user_field: str = setting(
        "user_id", "REDIS_MIDDLEWARE_USER_FIELD", p.parse_str,
        "Session key holding the logged-in user's id (identity for rate limiting, "
        "presence and the per-user session index).",
    )
    # -- the one-line stack (RedisMiddleware) ------------------------------
    session_enabled: bool = setting(
        True, "REDIS_MIDDLEWARE_SESSION_ENABLED", p.parse_bool,
        "RedisMiddleware: run sessions.",
    )
    ratelimit_enabled: bool = setting(
        True, "REDIS_MIDDLEWARE_RATELIMIT_ENABLED", p.parse_bool,
        "Run rate limiting (RedisMiddleware, RateLimitMiddleware, Django's; false limits "
        "nothing, as Flask-Limiter's RATELIMIT_ENABLED). It limits only when a limit or "
        "rules are set.",
    )
    cache_enabled: bool = setting(
        True, "REDIS_MIDDLEWARE_CACHE_ENABLED", p.parse_bool,
        "RedisMiddleware: run response caching (it caches only the configured routes).",
    )
    presence_enabled: bool = setting(
        True, "REDIS_MIDDLEWARE_PRESENCE_ENABLED", p.parse_bool,
        "RedisMiddleware: record presence.",
    )
    # -- sessions -----------------------------------------------------------
    session_cookie_name: str = setting(
        "session", "REDIS_MIDDLEWARE_SESSION_COOKIE_NAME", p.parse_str,
        "Name of the session cookie. A `__Host-` name requires Secure, Path=/ and no Domain.",
    )
    session_cookie_domain: str | None = setting(
        None, "REDIS_MIDDLEWARE_SESSION_COOKIE_DOMAIN", p.parse_optional_str,
        "Domain attribute of the cookie; empty means host-only.",
    )
    session_cookie_path: str = setting(
        "/", "REDIS_MIDDLEWARE_SESSION_COOKIE_PATH", p.parse_str, "Path attribute of the cookie.",
    )
    session_cookie_secure: bool | None = setting(
        None, "REDIS_MIDDLEWARE_SESSION_COOKIE_SECURE", p.parse_optional_bool,
        "`true`, `false`, or `auto` (Secure on https requests only).",
    )
    session_cookie_samesite: str = setting(
        "lax", "REDIS_MIDDLEWARE_SESSION_COOKIE_SAMESITE", p.parse_str,
        "SameSite attribute: `lax`, `strict` or `none` (always sent with Secure, which "
        "browsers require for it).",
    )
    session_cookie_httponly: bool = setting(
        True, "REDIS_MIDDLEWARE_SESSION_COOKIE_HTTPONLY", p.parse_bool,
        "HttpOnly attribute of the cookie (scripts in the page cannot read it).",
    )
    session_cookie_partitioned: bool = setting(
        False, "REDIS_MIDDLEWARE_SESSION_COOKIE_PARTITIONED", p.parse_bool,
        "Partitioned attribute (CHIPS: a cookie per top-level site, for embedded apps); "
        "implies Secure.",
    )
    session_cookie_persistent: bool = setting(
        True, "REDIS_MIDDLEWARE_SESSION_COOKIE_PERSISTENT", p.parse_bool,
        "`true`: the cookie carries Max-Age = the absolute lifetime; `false`: a "
        "browser-session cookie, gone when the browser closes.",
    )
    session_idle_timeout: int = setting(
        None, "REDIS_MIDDLEWARE_SESSION_IDLE_TIMEOUT", p.parse_int,
        "Seconds of inactivity after which a session expires (sliding, enforced by Redis TTL).",
        derived=(lambda s: min(14 * 86400, s.session_absolute_lifetime),
                 "min(1209600, session_absolute_lifetime)"),
    )
    session_absolute_lifetime: int = setting(
        30 * 86400, "REDIS_MIDDLEWARE_SESSION_ABSOLUTE_LIFETIME", p.parse_int,
        "Seconds after creation after which a session expires, however active; also the "
        "cookie's Max-Age. `0` or less: the session expires at once (no session is kept "
        "and the cookie is expired), as Starlette's `max_age=-1`.",
    )
    session_slide_interval: float = setting(
        None, "REDIS_MIDDLEWARE_SESSION_SLIDE_INTERVAL", p.parse_float,
        "Seconds between two slides of a session's idle expiry: a read within this time of "
        "the last slide writes nothing (a process that saw that slide reads with `HGETALL` "
        "alone), so a session expires between `idle_timeout - slide_interval` and "
        "`idle_timeout` after its last request. `0`: every read slides.",
        derived=(lambda s: max(0.0, min(60.0, s.session_idle_timeout / 10)),
                 "min(60, session_idle_timeout / 10)"),
    )
    session_regenerate_grace: float = setting(
        60.0, "REDIS_MIDDLEWARE_SESSION_REGENERATE_GRACE", p.parse_float,
        "Seconds a regenerated session's old id forwards the writes of requests that "
        "loaded it before the login (they land in the new session); `0` refuses them. "
        "Never loads: an old cookie is no session.",
    )
    session_max_fields: int = setting(
        1000, "REDIS_MIDDLEWARE_SESSION_MAX_FIELDS", p.parse_int,
        "Most keys one session may hold. Up to 128 keep Redis's compact hash encoding "
        "(hash-max-listpack-entries); more are stored, at a higher memory cost.",
    )
    session_max_value_bytes: int = setting(
        64 * 1024, "REDIS_MIDDLEWARE_SESSION_MAX_VALUE_BYTES", p.parse_int,
        "Largest encoded value of one session key, in bytes. Values up to 64 bytes keep "
        "Redis's compact hash encoding (hash-max-listpack-value); a session with a larger "
        "one is stored at a higher memory cost (logged once per process).",
    )
    session_max_bytes: int = setting(
        1024 * 1024, "REDIS_MIDDLEWARE_SESSION_MAX_BYTES", p.parse_int,
        "Largest total of encoded keys and values of one session, in bytes.",
    )
    session_on_redis_error: str = setting(
        "fail", "REDIS_MIDDLEWARE_SESSION_ON_REDIS_ERROR", p.parse_str,
        "When Redis fails: `fail` answers a request that uses its session with 503; "
        "`readonly` carries on with an empty session whose changes are dropped.",
    )
    # -- client identity (rate limiting, presence) -------------------------
    trusted_proxies: tuple[str, ...] = setting(
        (), "REDIS_MIDDLEWARE_TRUSTED_PROXIES", p.parse_csv,
        "Comma-separated IPs/CIDRs of your reverse proxies. X-Forwarded-For and Forwarded "
        "are read only from these peers. `*` trusts every peer (warned about).",
    )
    ipv6_prefix: int = setting(
        64, "REDIS_MIDDLEWARE_IPV6_PREFIX", p.parse_int,
        "IPv6 clients are grouped by this prefix length (one /64 is one subscriber).",
    )
    # -- rate limiting ------------------------------------------------------
    ratelimit_limit: str = setting(
        "", "REDIS_MIDDLEWARE_RATELIMIT_LIMIT", p.parse_str,
        "Default limit for every path, a `limits` rate string; several joined by `;` "
        "(`10/second;100/minute`). Empty: only `rules` paths are limited.",
    )
    ratelimit_key: Any = setting(  # noqa: RUF009 (str or callable)
        "ip", "REDIS_MIDDLEWARE_RATELIMIT_KEY", p.parse_str,
        "Whom a limit counts: " + identity.help_text(),
    )
    refusal_handler: Any = setting(  # noqa: RUF009 (a callable)
        None, "REDIS_MIDDLEWARE_REFUSAL_HANDLER", p.parse_import,
        "Shapes the responses the middleware answers itself: `handler(request, refusal)` "
        "returns a `Response` or None for the default (problem+json, or HTML for a "
        "browser). In the environment: `module:attribute`.",
    )
    ratelimit_rules: tuple[tuple[str, RuleSpec], ...] = setting(
        (), "REDIS_MIDDLEWARE_RATELIMIT_RULES", parse_rules_env,
        'Per-path limits as JSON: `{"/login": "5/minute", "/api/*": {"limit": '
        '"100/minute", "methods": ["POST"], "cost": 1, "fail": "closed", "key": "bearer"}}`.',
    )
    ratelimit_exempt: tuple[str, ...] = setting(
        (), "REDIS_MIDDLEWARE_RATELIMIT_EXEMPT", p.parse_csv,
        "Comma-separated path patterns never limited (e.g. `/health,/static/*`).",
    )
    ratelimit_strategy: str = setting(
        "fixed-window", "REDIS_MIDDLEWARE_RATELIMIT_STRATEGY", p.parse_str,
        "`fixed-window` (one round trip for any number of limits), `moving-window` or "
        "`sliding-window-counter` (the `limits` library's strategies).",
    )
    ratelimit_headers: str = setting(
        "legacy", "REDIS_MIDDLEWARE_RATELIMIT_HEADERS", p.parse_str,
        "Which headers: `legacy` (X-RateLimit-*), `draft` (IETF RateLimit-Policy/RateLimit), "
        "`both` or `none`.",
    )
    ratelimit_default_stacks: bool = setting(
        False, "REDIS_MIDDLEWARE_RATELIMIT_DEFAULT_STACKS", p.parse_bool,
        "`true`: the default limit also applies on paths that have their own rule (both "
        "are counted, as Flask-Limiter's `override_defaults=False`); `false`: a route's "
        "rule replaces the default there.",
    )
    ratelimit_per_method: bool = setting(
        False, "REDIS_MIDDLEWARE_RATELIMIT_PER_METHOD", p.parse_bool,
        "`true`: separate counters per HTTP method (Flask-Limiter's `per_method`): a "
        "GET and a POST to one rule do not share its budget.",
    )
    ratelimit_reset: str = setting(
        "seconds", "REDIS_MIDDLEWARE_RATELIMIT_RESET", p.parse_str,
        "`X-RateLimit-Reset` as `seconds` until the window resets (the IETF draft's "
        "meaning) or as an `epoch` timestamp (what slowapi, Flask-Limiter and GitHub send).",
    )
    ratelimit_fail: str = setting(
        "open", "REDIS_MIDDLEWARE_RATELIMIT_FAIL", p.parse_str,
        "When Redis fails: `open` lets requests through; `closed` answers 503.",
    )
    ratelimit_dry_run: bool = setting(
        False, "REDIS_MIDDLEWARE_RATELIMIT_DRY_RUN", p.parse_bool,
        "Log what would be limited, limit nothing.",
    )
    ratelimit_count_cache_hits: bool = setting(
        True, "REDIS_MIDDLEWARE_RATELIMIT_COUNT_CACHE_HITS", p.parse_bool,
        "RedisMiddleware: a response served from the cache still counts against the "
        "limit (`false`: only requests that reach the app count).",
    )
    # -- response caching -----------------------------------------------------
    cache_routes: tuple[tuple[str, CacheRouteSpec], ...] = setting(
        (), "REDIS_MIDDLEWARE_CACHE_ROUTES", parse_cache_routes_env,
        'Cached routes as JSON: `{"/items/{id}": 60, "/products": {"ttl": 30, "tags": '
        '["products"], "vary_cookies": ["lang"]}, "/catalogue": {"ttl": 60, "per_user": '
        'false}}` (TTL in seconds). `vary_cookies`: cookies whose values split the '
        "route's entries, by name (cookie names: ASCII, no spaces, separators or control "
        "characters; another name is refused). `per_user: false`: the page is the same "
        "for everyone, so it is stored and served to signed-in users too; `freshness` and "
        "`max_ttl` override `cache_freshness` and `cache_max_ttl` for the route.",
    )
    cache_freshness: str = setting(
        "default", "REDIS_MIDDLEWARE_CACHE_FRESHNESS", p.parse_str,
        "`default`: a route's TTL is the freshness of responses that state none; the "
        "response's own `s-maxage`, `max-age` or `Expires` decide otherwise. `origin`: "
        "store only what the response makes cacheable (a route's own `freshness` wins).",
    )
    cache_max_ttl: int = setting(
        0, "REDIS_MIDDLEWARE_CACHE_MAX_TTL", p.parse_int,
        "Cap on any stored response's freshness, in seconds (0: no cap; a route's own "
        "`max_ttl` wins).",
    )
    cache_statuses: tuple[int, ...] = setting(
        (200,), "REDIS_MIDDLEWARE_CACHE_STATUSES", p.parse_int_csv,
        "Comma-separated statuses that get a route's default freshness; a response that "
        "states its own freshness is stored whatever its final status (but 206 and 304).",
    )
    cache_keep_stale: int = setting(
        600, "REDIS_MIDDLEWARE_CACHE_KEEP_STALE", p.parse_int,
        "Seconds a stored response with a validator (`ETag`, `Last-Modified`) is kept "
        "after it goes stale, to be revalidated with the app instead of recomputed.",
    )
    cache_stale_if_error: int = setting(
        0, "REDIS_MIDDLEWARE_CACHE_STALE_IF_ERROR", p.parse_int,
        "Seconds a stale entry may answer instead of the app's 5xx or exception when the "
        "response did not say `stale-if-error` itself (0: only when it did). Never for "
        "`must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` responses.",
    )
    cache_request_directives: bool = setting(
        True, "REDIS_MIDDLEWARE_CACHE_REQUEST_DIRECTIVES", p.parse_bool,
        "Obey the request's `Cache-Control` and `Pragma` (`no-cache`, `no-store`, "
        "`max-age`, `min-fresh`, `max-stale`), as RFC 9111 says; `false`: ignore them, as "
        "nginx and Varnish do by default, so no client can force a request to the app.",
    )
    cache_targets: tuple[str, ...] = setting(
        ("RedisMiddleware-Cache-Control", "CDN-Cache-Control"),
        "REDIS_MIDDLEWARE_CACHE_TARGETS", p.parse_csv,
        "Targeted cache-control fields this cache obeys before `Cache-Control` and "
        "`Expires` (RFC 9213), first found wins. `RedisMiddleware-Cache-Control` aims at "
        "this cache only and is removed from responses; the others are passed on.",
    )
    cache_refresh_workers: int = setting(
        4, "REDIS_MIDDLEWARE_CACHE_REFRESH_WORKERS", p.parse_int,
        "WSGI: threads that refresh stale entries in the background "
        "(`stale-while-revalidate`); ASGI refreshes on the event loop.",
    )
    cache_max_body: int = setting(
        1024 * 1024, "REDIS_MIDDLEWARE_CACHE_MAX_BODY", p.parse_int,
        "Largest body stored, in bytes; larger responses stream through uncached.",
    )
    cache_allowed_hosts: tuple[str, ...] = setting(
        (), "REDIS_MIDDLEWARE_CACHE_ALLOWED_HOSTS", p.parse_csv,
        "Comma-separated Host values that may use the cache (empty: any; the host is "
        "always part of the key). Other hosts bypass it.",
    )
    cache_lock_timeout: float = setting(
        10.0, "REDIS_MIDDLEWARE_CACHE_LOCK_TIMEOUT", p.parse_float,
        "Stampede guard: seconds one request may hold the right to compute a missing "
        "entry (0 disables the guard).",
    )
    cache_lock_wait: float = setting(
        None, "REDIS_MIDDLEWARE_CACHE_LOCK_WAIT", p.parse_float,
        "Seconds other requests wait for that entry before computing uncached.",
        derived=(lambda s: min(5.0, s.cache_lock_timeout), "min(5, cache_lock_timeout)"),
    )
    # -- presence -----------------------------------------------------------
    presence_ttl: int = setting(
        300, "REDIS_MIDDLEWARE_PRESENCE_TTL", p.parse_int,
        "Seconds a user stays online after their last heartbeat.",
    )
    presence_heartbeat_interval: float = setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_HEARTBEAT_INTERVAL", p.parse_float,
        "Each process writes a user's heartbeat at most once per this many seconds "
        "(must be shorter than the presence TTL).",
        derived=(lambda s: min(30.0, s.presence_ttl / 10), "min(30, presence_ttl / 10)"),
    )
    presence_sweep_interval: float = setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_SWEEP_INTERVAL", p.parse_float,
        "How often (seconds) one worker looks for users whose leases ran out and "
        "publishes their going offline.",
        derived=(lambda s: max(1.0, min(10.0, s.presence_ttl / 30)),
                 "presence_ttl / 30, within [1, 10]"),
    )
    presence_grace: float = setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_GRACE", p.parse_float,
        "Seconds a closed WebSocket still counts, so a page reload does not flap.",
        derived=(lambda s: min(5.0, s.presence_ttl / 4), "min(5, presence_ttl / 4)"),
    )
    presence_retention: int = setting(
        None, "REDIS_MIDDLEWARE_PRESENCE_RETENTION", p.parse_int,
        "Seconds `last_seen` is kept after a user's last activity.",
        derived=(lambda s: max(30 * 86400, s.presence_ttl), "max(2592000, presence_ttl)"),
    )
    presence_key: str = setting(
        "user", "REDIS_MIDDLEWARE_PRESENCE_KEY", p.parse_str,
        "Who is online: `user` (the session's or the framework's user), or "
        + " / ".join(f"`{k}`" for k in identity.PRESENCE_CHOICES if k != "user")
        + " (API clients: the request's credential, hashed, else the user).",
    )

    # -- real-time fan-out (Broadcast) --------------------------------------
    realtime_durable_rooms: tuple[str, ...] = setting(
        (), "REDIS_MIDDLEWARE_REALTIME_DURABLE_ROOMS", p.parse_csv,
        "Comma-separated room patterns (`*` any text, e.g. `chat:*`) whose messages are "
        "also kept in a Redis Stream: replayed after a reconnect. Other rooms are plain "
        "Pub/Sub (at most once).",
    )
    realtime_stream_maxlen: int = setting(
        1000, "REDIS_MIDDLEWARE_REALTIME_STREAM_MAXLEN", p.parse_int,
        "Durable rooms: about this many latest messages are kept per room.",
    )
    realtime_stream_max_age: int = setting(
        3600, "REDIS_MIDDLEWARE_REALTIME_STREAM_MAX_AGE", p.parse_int,
        "Durable rooms: seconds a message stays replayable (the replay window).",
    )
    realtime_queue_size: int = setting(
        256, "REDIS_MIDDLEWARE_REALTIME_QUEUE_SIZE", p.parse_int,
        "Messages waiting for one slow subscriber before the overflow policy applies.",
    )
    realtime_overflow: str = setting(
        "drop-oldest", "REDIS_MIDDLEWARE_REALTIME_OVERFLOW", p.parse_str,
        "A subscriber whose queue is full: `drop-oldest` (it then gets a gap marker) or "
        "`disconnect` (its subscription ends with SubscriberOverflow).",
    )
    realtime_max_message_bytes: int = setting(
        65536, "REDIS_MIDDLEWARE_REALTIME_MAX_MESSAGE_BYTES", p.parse_int,
        "Largest JSON message `publish` accepts (bytes); larger ones raise ValueError.",
    )
    # -- data cache (DataCache, and the Django and Flask cache backends) ------
    data_ttl: float = setting(
        300.0, "REDIS_MIDDLEWARE_DATA_TTL", p.parse_float,
        "DataCache: seconds a value is fresh when a call names no `ttl`.",
    )
    data_max_ttl: float = setting(
        30 * 86400.0, "REDIS_MIDDLEWARE_DATA_MAX_TTL", p.parse_float,
        "Seconds a framework cache backend keeps a value stored \"forever\" (Django's "
        "`timeout=None`, Flask-Caching's `0`), so that every key still carries a TTL.",
    )
    data_lock_timeout: float = setting(
        10.0, "REDIS_MIDDLEWARE_DATA_LOCK_TIMEOUT", p.parse_float,
        "Single-flight: seconds the caller computing a missing value holds its lease. It is "
        "renewed while the loader runs, so this is how soon a crashed process's lease frees.",
    )
    data_lock_wait: float = setting(
        10.0, "REDIS_MIDDLEWARE_DATA_LOCK_WAIT", p.parse_float,
        "Seconds other callers wait for that value before running the loader themselves.",
    )
    data_serializer: Any = setting(  # noqa: RUF009 (a name or an object)
        "json", "REDIS_MIDDLEWARE_DATA_SERIALIZER", p.parse_str,
        "How values are stored: `json`, `msgpack` (the `msgpack` extra), `pickle` (signed "
        "with the secret key: a value that fails the check is a miss, never unpickled), or "
        "an object with `dumps`/`loads` (in the environment: `module:attribute`; its bytes "
        "signed too, unless it has `safe_to_load = True`).",
    )
    data_compress_min: int = setting(
        0, "REDIS_MIDDLEWARE_DATA_COMPRESS_MIN", p.parse_int,
        "Values of at least this many bytes are stored zlib-compressed (when that is "
        "smaller); `0`: never.",
    )
    data_max_value_bytes: int = setting(
        1024 * 1024, "REDIS_MIDDLEWARE_DATA_MAX_VALUE_BYTES", p.parse_int,
        "Largest value stored, in bytes (after compression). A larger one is returned to "
        "its caller, not stored, and an older value under its key removed (logged once "
        "per incident).",
    )
    near_cache_size: int = setting(
        0, "REDIS_MIDDLEWARE_NEAR_CACHE_SIZE", p.parse_int,
        "Near cache: hot cache entries kept in the process and served with no round "
        "trip; Redis tells the process when one changes (client-side caching, `CLIENT "
        "TRACKING`); `0`: off.",
    )
    near_cache_ttl: float = setting(
        60.0, "REDIS_MIDDLEWARE_NEAR_CACHE_TTL", p.parse_float,
        "Seconds a near-cache entry may be served at most, whatever Redis says.",
    )
    near_cache_bytes: int = setting(
        64 * 1024 * 1024, "REDIS_MIDDLEWARE_NEAR_CACHE_BYTES", p.parse_int,
        "Most bytes the near cache holds (keys, values and ~300 bytes of bookkeeping an "
        "entry); an entry over an eighth of it is not kept.",
    )

    def __post_init__(self) -> None:
        try:
            target = parse_redis_url(self.redis_url)
        except ValueError as exc:
            raise ConfigError("REDIS_URL", f"invalid URL: {exc}") from None
        object.__setattr__(self, "_target", target)
        derived = self._derive()
        generated = self._check(lambda v: validate(v, derived, target.kind == "memory"))
        object.__setattr__(self, "_secret_generated", generated)

    @property
    def secret_generated(self) -> bool:
        """The secret was generated for this process (``memory://`` with none set)."""
        return bool(getattr(self, "_secret_generated", False))

    @classmethod
    def _signing_nothing(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """``from_env`` for a process that signs and verifies no cookie (the CLI's
        read-only commands): without ``REDIS_MIDDLEWARE_SECRET_KEY``, a random secret
        stands in (``secret_generated``), whatever ``REDIS_URL`` is. A key that is set
        is still validated."""
        env = os.environ if environ is None else environ
        name = cls.env_name("secret_key")
        if env.get(name):
            return cls.from_env(env)
        settings = cls.from_env({**env, name: secrets.token_urlsafe(48)})
        object.__setattr__(settings, "_secret_generated", True)
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated like the constructor)."""
        replaced = super().replace(**changes)
        if self.secret_generated and "secret_key" not in changes:
            object.__setattr__(replaced, "_secret_generated", True)  # still not chosen
        return replaced

    @property
    def target(self) -> RedisTarget:
        """The parsed ``redis_url``."""
        target: RedisTarget = object.__getattribute__(self, "_target")
        return target
