"""Path patterns shared by rate limiting and caching.

``/items/{id}`` matches exactly one non-empty segment in place of ``{id}``; a
trailing ``/*`` matches the prefix itself and everything below it; anything else
matches exactly. When several patterns match, the most specific wins: exact
patterns, then patterns with fewer parameters and more literal segments, then
wildcards with the longest prefix.

Patterns and paths are both compared in their :func:`~.paths.route_path` spelling
(repeated slashes merged, dot segments resolved, no trailing slash), so ``//limited``
and ``/limited/`` are ``/limited`` to a rule, as they are to the frameworks' routers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from .paths import route_path

__all__ = ["PathPattern", "RouteTable"]

V = TypeVar("V")
_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}\Z")


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A compiled path pattern."""

    text: str
    regex: re.Pattern[str]
    rank: tuple[int, int, int]

    @classmethod
    def compile(cls, text: str) -> PathPattern:
        if not isinstance(text, str) or not text.startswith("/"):
            raise ValueError(f"path pattern {text!r} must start with '/'")
        wildcard = text.endswith("/*")
        body = text[:-2] if wildcard else text
        body = "" if wildcard and body in ("", "/") else route_path(body)
        if body == "/" and not wildcard:
            body = ""
        parts = []
        params = literals = 0
        for segment in body.split("/")[1:] if body else []:
            if _PARAM.match(segment):
                parts.append("[^/]+")
                params += 1
            elif "{" in segment or "}" in segment or "*" in segment:
                raise ValueError(f"path pattern {text!r}: bad segment {segment!r}")
            else:
                parts.append(re.escape(segment))
                literals += 1
        source = "/" + "/".join(parts) if parts else ""
        if wildcard:
            regex = re.compile(f"{source}(?:/.*)?", re.DOTALL)
        else:
            regex = re.compile(source or "/", re.DOTALL)
        kind = 2 if wildcard else (1 if params else 0)
        return cls(text, regex, (kind, params, -(literals if not wildcard else len(body))))

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(route_path(path)) is not None


class RouteTable(Generic[V]):
    """Patterns with values; :meth:`match` returns the most specific match."""

    def __init__(self, routes: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        items = routes.items() if isinstance(routes, Mapping) else routes
        compiled = [(PathPattern.compile(p), v) for p, v in items]
        # Stable sort: equally specific patterns keep their declaration order.
        self._routes = sorted(compiled, key=lambda pv: pv[0].rank)

    def match(self, path: str) -> tuple[PathPattern, V] | None:
        return next(self.matches(path), None)

    def matches(self, path: str) -> Iterator[tuple[PathPattern, V]]:
        """Every matching route, most specific first."""
        path = route_path(path)
        for pattern, value in self._routes:
            if pattern.regex.fullmatch(path) is not None:
                yield pattern, value

    def values(self) -> list[V]:
        return [value for _, value in self._routes]

    def __bool__(self) -> bool:
        return bool(self._routes)
