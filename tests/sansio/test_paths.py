"""The spelling rules are matched in (``sansio/paths.py``) and the patterns that use it."""

from __future__ import annotations

import pytest

from redis_middleware.config.paths import route_path
from redis_middleware.config.patterns import PathPattern


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        pytest.param("/limited", "/limited", id="already-canonical"),
        pytest.param("//limited", "/limited", id="werkzeug-merges-repeated-slashes"),
        pytest.param("/a//b///c", "/a/b/c", id="repeated-slashes-inside"),
        pytest.param("/limited/", "/limited", id="trailing-slash-redirects"),
        # Routers route dot segments as sent (/api/../login reaches /api/{path}):
        # resolving them would match a rule of another handler.
        pytest.param("/a/./b", "/a/./b", id="a-dot-segment-stays"),
        pytest.param("/health/../admin", "/health/../admin", id="a-dot-dot-segment-stays"),
        pytest.param("/a//./b/", "/a/./b", id="slashes-merged-around-a-dot"),
        pytest.param("/", "/", id="root"),
        pytest.param("", "/", id="empty"),
        pytest.param("/a..b/.c", "/a..b/.c", id="dots-inside-a-segment-stay"),
    ],
)
def test_route_path(path: str, canonical: str) -> None:
    assert route_path(path) == canonical


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        pytest.param("/health", "/health/../admin", False,
                     id="an-exempt-spelling-never-covers-another-path"),
        pytest.param("/admin", "/health/../admin", False,
                     id="a-detour-is-not-its-target-routers-do-not-resolve-it"),
        pytest.param("/health/*", "/health/../admin", True,
                     id="a-detour-is-under-its-prefix-as-routers-see-it"),
        pytest.param("/items/", "/items", True, id="a-pattern-with-a-trailing-slash"),
        pytest.param("/items/{id}", "/items//7/", True, id="a-parameter-after-a-double-slash"),
        pytest.param("/api/*", "//api", True, id="a-wildcard-prefix-itself"),
        pytest.param("/", "//", True, id="root-spelt-twice"),
    ],
)
def test_patterns_compare_canonical_spellings(pattern: str, path: str, matches: bool) -> None:
    assert PathPattern.compile(pattern).matches(path) is matches
