"""Requests read from a WSGI environ with no I/O: header names as the CGI spells them,
and a bounded memory of the names seen."""

from __future__ import annotations

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

latin1 = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300)
FUZZ = hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
environ_keys = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,30}\Z")


@FUZZ
@given(items=st.lists(st.tuples(environ_keys, latin1), max_size=30, unique_by=lambda kv: kv[0]))
def test_environ_headers_match_their_cgi_names(items: list[tuple[str, str]]) -> None:
    """WSGI headers come from ``HTTP_*`` keys (empty values kept) and non-empty
    ``CONTENT_TYPE``/``CONTENT_LENGTH``, in environ order, whatever names a client sends."""
    from redis_middleware.sansio.request import from_environ

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", **dict(items)}
    expected = [(k[5:].replace("_", "-").lower(), v) for k, v in environ.items()
                if k.startswith("HTTP_") or (k in ("CONTENT_TYPE", "CONTENT_LENGTH") and v)]
    for _ in range(2):  # the second pass answers from the remembered names
        assert list(from_environ(environ).headers) == expected


def test_many_distinct_header_names_stay_bounded() -> None:
    from redis_middleware.sansio.request import _HEADER_NAMES, from_environ

    for i in range(3 * _HEADER_NAMES.limit):
        info = from_environ({"PATH_INFO": "/", f"HTTP_X_H{i}": "v", "CONTENT_TYPE": ""})
        assert info.headers == ((f"x-h{i}", "v"),)
    assert len(_HEADER_NAMES) <= _HEADER_NAMES.limit


class _Auth:
    """A Starlette-style ``scope["user"]``."""

    def __init__(self, authenticated: bool, identity: str = "", display_name: str = "") -> None:
        self.is_authenticated = authenticated
        if identity:
            self.identity = identity
        self.display_name = display_name


def test_the_user_of_a_scope_comes_from_its_session_else_its_authenticated_user() -> None:
    from redis_middleware.sansio.request import from_scope

    base = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None}
    cases = [
        ({}, None),  # no session, no user: nobody
        ({"session": None, "user": None}, None),
        ({"session": {"user_id": 7}}, "7"),  # an outer session's user field
        ({"session": {"user_id": {"nested": 1}}}, None),  # not an id
        ({"session": {}, "user": _Auth(True, identity="ada")}, "ada"),
        ({"user": _Auth(True, display_name="grace")}, "grace"),
        ({"user": _Auth(False, identity="nobody")}, None),
    ]
    for extra, expected in cases:
        scope = {**base, **extra}
        assert from_scope(scope, "user_id").user == expected, extra
        assert from_scope(scope, None).user is None  # not looked up
