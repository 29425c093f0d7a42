"""The session mapping and cookie checks, with no Redis: hostile cookies, bad values,
reserved key names."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from redis_middleware import SessionLimitError, Settings
from redis_middleware.sansio.session import Limits, Session
from redis_middleware.sansio.sessions import SessionCore


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=300))
def test_fuzzed_cookie_values_are_no_session(value: str) -> None:
    core = SessionCore(Settings())
    incoming = core.read_cookie({"session": value})
    assert incoming.session_id is None


def test_signed_id_of_wrong_shape_is_rejected() -> None:
    s = Settings()
    core = SessionCore(s)
    forged = core.cookies._primary.sign(b"g" * 47).decode()  # validly signed, bad id shape
    assert core.read_cookie({"session": forged}).session_id is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(object(), "JSON values", id="not-json"),
        pytest.param(float("nan"), "JSON values", id="nan"),
        pytest.param("x" * (64 * 1024), "MAX_VALUE_BYTES", id="too-big"),
    ],
)
def test_bad_values_raise_from_the_mutation(value: Any, message: str) -> None:
    session = Session(Limits(Settings()))
    with pytest.raises(SessionLimitError, match=message):
        session["k"] = value
    assert "k" not in session


def test_reserved_looking_keys_round_trip() -> None:
    from redis_middleware.sansio.sessions import field_name, key_name

    for key in ["\x00t", "\x01x", "plain", ""]:
        assert key_name(field_name(key)) == key
    assert not field_name("\x00t").startswith("\x00")
