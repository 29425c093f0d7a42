"""What each component's settings must be: checked once, when ``Settings`` is built.

The checks read the settings' values by field name. A check may write a value back in
its normal form (a comma-separated string becomes a tuple, a mapping of routes becomes
validated pairs, ``SameSite`` is lower-cased) and raises :class:`Invalid` naming the
field; ``Settings`` turns that into a ConfigError naming the environment variable and
the value.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from collections.abc import Iterable
from typing import Any

from . import identity
from . import parse as p
from .fields import Invalid
from .patterns import PathPattern
from .rates import parse_limits
from .rules import (
    FAIL_MODES,
    FRESHNESS_MODES,
    STRATEGIES,
    is_cookie_name,
    normalise_cache_routes,
    normalise_rules,
    one_of,
)

__all__ = ["validate"]

logger = logging.getLogger("redis_middleware")

Values = dict[str, Any]
_MIN_SECRET = 32
_warned_generated_secret = False

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_COOKIE_PATH_RE = re.compile(r"^/[\x21-\x3a\x3c-\x7e]*\Z")  # no CTLs, spaces or ';'
_DOMAIN_RE = re.compile(r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\Z")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def validate(v: Values, derived: frozenset[str], memory: bool) -> bool:
    """Check (and normalise, in place) every setting in ``v``. ``derived``: the settings
    computed from others, which follow them and are not checked on their own; ``memory``:
    the URL is ``memory://``. True when the signing secret was generated."""
    v["secret_key"], generated = _secret_keys(v["secret_key"], memory)
    _connection(v, derived)
    _cookie(v)
    _session(v)
    _ratelimit(v)
    _cache(v)
    _presence(v)
    _realtime(v)
    _data(v)
    return generated


def _secret_keys(value: Any, memory: bool) -> tuple[tuple[str, ...], bool]:
    """The signing secrets (a comma-separated string is accepted too), each long enough;
    with none on ``memory://``, one generated for this process (then True)."""
    global _warned_generated_secret
    keys = p.parse_csv(value) if isinstance(value, str) else tuple(value)
    if keys:
        if any(len(key) < _MIN_SECRET for key in keys):
            raise Invalid("secret_key", f"each secret must be at least {_MIN_SECRET} "
                                        "characters", show=False)
        return keys, False
    if not memory:
        raise Invalid("secret_key", "required when REDIS_URL is not memory:// (32+ random "
                                    "characters)", show=False)
    if not _warned_generated_secret:
        _warned_generated_secret = True
        logger.warning("REDIS_MIDDLEWARE_SECRET_KEY is not set: using a random secret for "
                       "this process (sessions will not survive a restart)")
    return (secrets.token_urlsafe(48),), True


def _positive_ints(v: Values, names: Iterable[str], derived: frozenset[str] = frozenset()
                   ) -> None:
    for name in names:
        if name in derived:  # follows the setting it is derived from
            continue
        value = v[name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise Invalid(name, "must be a positive whole number")


def _choice(v: Values, name: str, allowed: tuple[str, ...]) -> None:
    if v[name] not in allowed:
        raise Invalid(name, "must be one of " + ", ".join(repr(a) for a in allowed))


def _csv(v: Values, name: str) -> tuple[str, ...]:
    """A tuple setting, which a comma-separated string may give too."""
    value = v[name]
    out = p.parse_csv(value) if isinstance(value, str) else tuple(value)
    v[name] = out
    return out


def _connection(v: Values, derived: frozenset[str]) -> None:
    if not _PREFIX_RE.match(v["key_prefix"]):
        raise Invalid("key_prefix", "must be 1-64 characters of letters, digits, '_', '.', '-'")
    for name in ("socket_timeout", "connect_timeout", "breaker_cooldown"):
        if not 0 < v[name] <= 60:
            raise Invalid(name, "must be a number of seconds in (0, 60]")
    _positive_ints(v, ("max_connections", "session_idle_timeout", "session_max_fields",
                       "session_max_value_bytes", "session_max_bytes", "presence_ttl"),
                   derived)
    slide = v["session_slide_interval"]
    if "session_slide_interval" not in derived and (
            isinstance(slide, bool) or not isinstance(slide, int | float) or not (
                0 <= slide <= min(86400, max(0, v["session_idle_timeout"])))):
        raise Invalid("session_slide_interval",
                      "must be seconds in [0, session_idle_timeout], at most a day")
    lifetime = v["session_absolute_lifetime"]  # <= 0: expires at once (Starlette's)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int):
        raise Invalid("session_absolute_lifetime", "must be a whole number of seconds")
    if not _FIELD_RE.match(v["user_field"]):
        raise Invalid("user_field", "must be an identifier of at most 64 characters")


def _cookie(v: Values) -> None:
    name, secure = v["session_cookie_name"], v["session_cookie_secure"]
    if not is_cookie_name(name) or len(name) > 128:  # ours: a short name, as any
        raise Invalid("session_cookie_name", "must be a cookie token (no spaces or "
                      "separators) of 128 characters at most")
    if not _COOKIE_PATH_RE.match(v["session_cookie_path"]):
        raise Invalid("session_cookie_path", "must start with '/' and hold no ';' or spaces")
    domain = v["session_cookie_domain"]
    if domain is not None and not _DOMAIN_RE.match(domain):
        raise Invalid("session_cookie_domain", "must be a domain name")
    samesite = v["session_cookie_samesite"].lower()
    if samesite not in {"lax", "strict", "none"}:
        raise Invalid("session_cookie_samesite", "must be 'lax', 'strict' or 'none'")
    v["session_cookie_samesite"] = samesite
    if samesite == "none" and secure is False:
        raise Invalid("session_cookie_secure", "SameSite=None requires Secure")
    if v["session_cookie_partitioned"] and secure is False:
        raise Invalid("session_cookie_secure", "a Partitioned cookie requires Secure")
    if name.startswith(("__Host-", "__Secure-")) and secure is not True:
        raise Invalid("session_cookie_secure", f"a cookie named {name!r} requires secure=true")
    if name.startswith("__Host-"):
        if v["session_cookie_path"] != "/":
            raise Invalid("session_cookie_path", "a __Host- cookie requires Path=/")
        if domain is not None:
            raise Invalid("session_cookie_domain", "a __Host- cookie must not set Domain")


def _session(v: Values) -> None:
    if not 0 <= v["session_regenerate_grace"] <= 3600:
        raise Invalid("session_regenerate_grace", "must be seconds in [0, 3600]")
    if v["session_on_redis_error"] not in {"fail", "readonly"}:
        raise Invalid("session_on_redis_error", "must be 'fail' or 'readonly'")


def _ratelimit(v: Values) -> None:
    _csv(v, "ratelimit_exempt")
    for entry in _csv(v, "trusted_proxies"):
        if entry != "*":
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise Invalid("trusted_proxies",
                              f"{entry!r} is not an IP address or network") from None
    if not 1 <= v["ipv6_prefix"] <= 128:
        raise Invalid("ipv6_prefix", "must be between 1 and 128")
    try:
        parse_limits(v["ratelimit_limit"])
    except ValueError as exc:
        raise Invalid("ratelimit_limit", str(exc)) from None
    try:
        v["ratelimit_rules"] = normalise_rules(v["ratelimit_rules"])
    except (ValueError, TypeError) as exc:
        raise Invalid("ratelimit_rules", str(exc)) from None
    for pattern in v["ratelimit_exempt"]:
        try:
            PathPattern.compile(pattern)
        except ValueError as exc:
            raise Invalid("ratelimit_exempt", str(exc)) from None
    handler = v["refusal_handler"]
    if handler is not None and not callable(handler):
        raise Invalid("refusal_handler", "must be a callable (request, refusal) -> Response")
    if not identity.counts_presence(v["presence_key"]):
        raise Invalid("presence_key", f"must be {one_of(identity.PRESENCE_CHOICES)}")
    key = v["ratelimit_key"]
    if not callable(key) and not identity.settable(key):
        raise Invalid("ratelimit_key", f"must be {one_of((*identity.CHOICES, 'a callable'))}")
    _choice(v, "ratelimit_strategy", STRATEGIES)
    _choice(v, "ratelimit_headers", ("legacy", "draft", "both", "none"))
    _choice(v, "ratelimit_reset", ("seconds", "epoch"))
    _choice(v, "ratelimit_fail", FAIL_MODES)


def _cache(v: Values) -> None:
    try:
        v["cache_routes"] = normalise_cache_routes(v["cache_routes"])
    except (ValueError, TypeError) as exc:
        raise Invalid("cache_routes", str(exc)) from None
    statuses = v["cache_statuses"]
    v["cache_statuses"] = statuses = (statuses,) if isinstance(statuses, int) else tuple(
        statuses)
    if not all(isinstance(c, int) and 100 <= c <= 599 for c in statuses):
        raise Invalid("cache_statuses", "must be HTTP status codes")
    v["cache_allowed_hosts"] = tuple(h.lower() for h in _csv(v, "cache_allowed_hosts"))
    if v["cache_max_body"] < 0:
        raise Invalid("cache_max_body", "must be a number of bytes >= 0")
    for name in ("cache_lock_timeout", "cache_lock_wait"):
        if not 0 <= v[name] <= 600:
            raise Invalid(name, "must be seconds in [0, 600]")
    if v["cache_freshness"] not in FRESHNESS_MODES:
        raise Invalid("cache_freshness", f"must be {one_of(FRESHNESS_MODES)}")
    for name in ("cache_max_ttl", "cache_keep_stale", "cache_stale_if_error"):
        if v[name] < 0:
            raise Invalid(name, "must be seconds >= 0")
    if not 1 <= v["cache_refresh_workers"] <= 64:
        raise Invalid("cache_refresh_workers", "must be between 1 and 64")
    v["cache_targets"] = tuple(t.strip().lower() for t in _csv(v, "cache_targets")
                               if t.strip())


def _presence(v: Values) -> None:
    if not 0 < v["presence_heartbeat_interval"] < v["presence_ttl"]:
        raise Invalid("presence_heartbeat_interval", "must be between 0 and the presence TTL")
    for name in ("presence_sweep_interval", "presence_grace"):
        if not 0 < v[name] <= 3600:
            raise Invalid(name, "must be seconds in (0, 3600]")
    if v["presence_retention"] < v["presence_ttl"]:
        raise Invalid("presence_retention", "must be at least the presence TTL")


def _realtime(v: Values) -> None:
    _csv(v, "realtime_durable_rooms")
    _positive_ints(v, ("realtime_stream_maxlen", "realtime_stream_max_age",
                       "realtime_queue_size", "realtime_max_message_bytes"))
    if v["realtime_overflow"] not in {"drop-oldest", "disconnect"}:
        raise Invalid("realtime_overflow", "must be 'drop-oldest' or 'disconnect'")


def _data(v: Values) -> None:
    bounds = {"data_ttl": (0.0, 10 * 365 * 86400.0), "data_max_ttl": (0.0, 10 * 365 * 86400.0),
              "data_lock_timeout": (0.0, 3600.0), "near_cache_ttl": (0.0, 86400.0)}
    for name, (low, high) in bounds.items():
        value = v[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low < value <= high):
            raise Invalid(name, f"must be seconds in ({low:g}, {high:g}]")
    if not 0 <= v["data_lock_wait"] <= 3600:
        raise Invalid("data_lock_wait", "must be seconds in [0, 3600]")
    for name, low, high in (("data_compress_min", 0, 2**31),
                            ("data_max_value_bytes", 0, 512 * 2**20),
                            ("near_cache_size", 0, 10**8), ("near_cache_bytes", 1024, 2**40)):
        value = v[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(name, f"must be a whole number in [{low}, {high}]")
    if v["data_max_value_bytes"] == 0:
        raise Invalid("data_max_value_bytes", "must be a positive whole number")
    serializer = v["data_serializer"]
    if isinstance(serializer, str):
        name = serializer.strip().lower()
        if ":" in name:
            try:
                v["data_serializer"] = p.parse_import(serializer)
            except ValueError as exc:
                raise Invalid("data_serializer", str(exc)) from None
        elif name not in ("json", "msgpack", "pickle"):
            raise Invalid("data_serializer", "must be 'json', 'msgpack', 'pickle' or "
                          "module:attribute of an object with dumps and loads")
        else:
            if name == "msgpack":
                from importlib.util import find_spec  # an optional dependency

                if find_spec("msgpack") is None:
                    raise Invalid("data_serializer", "'msgpack' needs the msgpack package "
                                  "(pip install redis-middleware[msgpack])")
            v["data_serializer"] = name
    serializer = v["data_serializer"]
    if not isinstance(serializer, str) and not (
            callable(getattr(serializer, "dumps", None))
            and callable(getattr(serializer, "loads", None))):
        raise Invalid("data_serializer", "must be an object with dumps and loads methods")
