"""The Cookie header parser of the core (no web framework imported)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_middleware.sansio.request import cookies_of
from redis_middleware.sansio.sessions.cookies import parse_cookies


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("a=1; b=2", {"a": "1", "b": "2"}, id="pairs"),
        pytest.param("  a = 1 ;b=2  ", {"a": "1", "b": "2"}, id="blanks-trimmed"),
        pytest.param('a="x y"', {"a": "x y"}, id="quoted-value"),
        pytest.param('a="\\101\\"b"', {"a": 'A"b'}, id="octal-and-backslash-escapes"),
        pytest.param("a=b=c", {"a": "b=c"}, id="value-keeps-later-equals"),
        pytest.param("lonely", {"": "lonely"}, id="no-equals-is-a-nameless-value"),
        pytest.param("a=1; a=2", {"a": "2"}, id="last-repeat-wins"),
        pytest.param(";;; ", {}, id="empty-chunks"),
        pytest.param("a=", {"a": ""}, id="empty-value"),
    ],
)
def test_parse(header: str, expected: dict[str, str]) -> None:
    assert parse_cookies(header) == expected


def test_several_cookie_lines_are_joined() -> None:
    """RFC 9113 8.2.3: an HTTP/2 request may split Cookie into several fields."""
    assert dict(cookies_of(["a=1", "b=2"])) == {"a": "1", "b": "2"}
    assert dict(cookies_of([])) == {}


@given(st.text(alphabet='ab="\\;= 0178,\t', max_size=40))
def test_same_answers_as_starlettes_parser(header: str) -> None:
    """Apps that read cookies through Starlette see what our session middleware sees."""
    from starlette.requests import cookie_parser

    assert parse_cookies(header) == cookie_parser(header)
