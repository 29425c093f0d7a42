"""Per-route specifications, rate-limit rules and cached routes: parsed and validated at
settings construction."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from . import identity
from .patterns import PathPattern
from .rates import parse_limits

__all__ = ["RuleSpec", "normalise_rules", "parse_rules_env"]

T = TypeVar("T")

Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
FailMode = Literal["open", "closed"]
FAIL_MODES: tuple[FailMode, ...] = get_args(FailMode)
# RFC 6265 cookie-name = token (RFC 9110 tchar): visible ASCII minus separators.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def is_cookie_name(name: object) -> bool:
    """A cookie name by RFC 6265 (a token): what a browser can send back. The one check
    of every cookie name in the settings (the session's, a route's ``vary_cookies``)."""
    return isinstance(name, str) and _COOKIE_NAME.fullmatch(name) is not None


def one_of(allowed: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``, for error messages."""
    quoted = [repr(a) for a in allowed]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule: its rate string, cost per request, methods (None: all) and failure mode."""

    limit: str
    cost: int = 1
    methods: tuple[str, ...] | None = None
    fail: str | None = None  # None: the global ratelimit_fail
    key: str | None = None  # None: the global ratelimit_key

    def __post_init__(self) -> None:
        parse_limits(self.limit)
        if self.key is not None and not identity.settable(self.key):
            raise ValueError(f"key must be {one_of(identity.CHOICES)}, got {self.key!r}")
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 1:
            raise ValueError(f"cost must be a positive whole number, got {self.cost!r}")
        if self.fail is not None and self.fail not in FAIL_MODES:
            raise ValueError(f"fail must be {one_of(FAIL_MODES)}, got {self.fail!r}")


def _spec(value: Any) -> RuleSpec:
    if isinstance(value, RuleSpec):
        return value
    if isinstance(value, str):
        return RuleSpec(value)
    if isinstance(value, Mapping):
        unknown = set(value) - {"limit", "cost", "methods", "fail", "key"}
        if unknown:
            raise ValueError(f"unknown rule option(s): {', '.join(sorted(unknown))}")
        methods = value.get("methods")
        return RuleSpec(
            limit=str(value.get("limit", "")),
            cost=value.get("cost", 1),
            methods=tuple(m.upper() for m in methods) if methods else None,
            fail=value.get("fail"),
            key=value.get("key"),
        )
    raise ValueError(f"a rule must be a rate string or a mapping, got {type(value).__name__}")


def _routes(routes: Any, spec: Callable[[Any], T]) -> tuple[tuple[str, T], ...]:
    items = routes.items() if isinstance(routes, Mapping) else routes
    out = []
    for pattern, value in items:
        PathPattern.compile(pattern)
        out.append((pattern, spec(value)))
    return tuple(out)


def _json_routes(raw: str, what: str, spec: Callable[[Any], T]) -> tuple[tuple[str, T], ...]:
    if not raw.strip():
        return ()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object of path pattern -> {what}")
    return _routes(data, spec)


def normalise_rules(rules: Any) -> tuple[tuple[str, RuleSpec], ...]:
    """Accept a mapping (or pairs) of pattern -> rate string / options; validate all."""
    return _routes(rules, _spec)


def parse_rules_env(raw: str) -> tuple[tuple[str, RuleSpec], ...]:
    """The environment form: a JSON object ``{"/login": "5/minute", ...}``."""
    return _json_routes(raw, "rate limit", _spec)


Freshness = Literal["default", "origin"]
FRESHNESS_MODES: tuple[Freshness, ...] = ("default", "origin")


def _whole_seconds(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum else "non-negative"
        raise ValueError(f"{name} must be a {kind} whole number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class CacheRouteSpec:
    """A cached route: its default freshness, purge tags, cookies whose values split
    entries, whether its page depends on the user, and how the origin's own freshness
    is used.

    ``ttl`` is the freshness of a response that states none (``freshness="default"``);
    with ``freshness="origin"`` only what the response makes cacheable is stored and
    ``ttl`` may be 0. ``max_ttl`` caps any lifetime (0: no cap). ``None`` takes the
    global setting (``cache_freshness``, ``cache_max_ttl``). ``per_user=False`` says the
    page is the same whoever asks: stored and served to signed-in users too, though the
    app read the session (by default such a page is stored only for requests without a
    session cookie).
    """

    ttl: int
    tags: tuple[str, ...] = ()
    vary_cookies: tuple[str, ...] = ()
    freshness: Freshness | None = None
    max_ttl: int | None = None
    per_user: bool = True

    def __post_init__(self) -> None:
        _cookie_names(self.vary_cookies)
        if not isinstance(self.tags, (tuple, list)) or not all(
                isinstance(t, str) for t in self.tags):
            raise ValueError(f"tags must be a list of tag names, got {self.tags!r}")
        if not isinstance(self.per_user, bool):
            raise ValueError(f"per_user must be true or false, got {self.per_user!r}")
        if self.freshness is not None and self.freshness not in FRESHNESS_MODES:
            raise ValueError(f"freshness must be {one_of(FRESHNESS_MODES)}, "
                             f"got {self.freshness!r}")
        _whole_seconds("ttl", self.ttl, 0 if self.freshness == "origin" else 1)
        if self.max_ttl is not None:
            _whole_seconds("max_ttl", self.max_ttl, 0)


def _cookie_names(names: Any) -> None:
    """``vary_cookies`` must name cookies: a name that is no cookie name (RFC 6265) is
    never sent by a browser, so the route would silently never split its entries."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (tuple, list)):
        raise ValueError(f"vary_cookies must be a list of cookie names, got {names!r}")
    for name in names:
        if not is_cookie_name(name):
            raise ValueError(
                "vary_cookies must be cookie names (ASCII letters, digits and "
                f"!#$%&'*+-.^_`|~: no spaces, separators or control characters), got {name!r}")


def _cache_spec(value: Any) -> CacheRouteSpec:
    if isinstance(value, CacheRouteSpec):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return CacheRouteSpec(value)
    if isinstance(value, Mapping):
        unknown = set(value) - {"ttl", "tags", "vary_cookies", "freshness", "max_ttl",
                                "per_user"}
        if unknown:
            raise ValueError(f"unknown route option(s): {', '.join(sorted(unknown))}")
        return CacheRouteSpec(
            ttl=value.get("ttl", 0),
            tags=_tags(value.get("tags", ())),
            vary_cookies=_vary_cookies(value.get("vary_cookies", ())),
            freshness=value.get("freshness"),
            max_ttl=value.get("max_ttl"),
            per_user=value.get("per_user", True),
        )
    raise ValueError(f"a route must be a TTL or a mapping, got {type(value).__name__}")


def _tags(tags: Any) -> tuple[str, ...]:
    """A route's purge tags: a list of texts (a lone string is refused, not split into
    one tag per letter)."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (tuple, list)):
        raise ValueError(f"tags must be a list of tag names, got {tags!r}")
    return tuple(str(t) for t in tags)


def _vary_cookies(names: Any) -> tuple[str, ...]:
    _cookie_names(names)  # before the tuple: a string is refused, not split in letters
    return tuple(names)


def normalise_cache_routes(routes: Any) -> tuple[tuple[str, CacheRouteSpec], ...]:
    """Accept a mapping (or pairs) of pattern -> TTL seconds / options; validate all."""
    return _routes(routes, _cache_spec)


def parse_cache_routes_env(raw: str) -> tuple[tuple[str, CacheRouteSpec], ...]:
    """The environment form: a JSON object ``{"/items/{id}": 60, ...}``."""
    return _json_routes(raw, "TTL seconds", _cache_spec)
