"""The session mapping and cookie checks, with no Redis: hostile cookies, bad values,
reserved key names."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from redis_middleware import SessionLimitError, Settings
from redis_middleware.sansio.sessions.core import SessionCore
from redis_middleware.sansio.sessions.mapping import Limits, Session


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
    from redis_middleware.sansio.sessions.scripts import field_name, key_name

    for key in ["\x00t", "\x01x", "\x02x", "plain", ""]:
        assert key_name(field_name(key)) == key
    assert not field_name("\x00t").startswith("\x00")
    assert not field_name("\x02x").startswith("\x02")  # never read as a packed value


@pytest.mark.parametrize(
    ("key", "field"),
    [
        pytest.param("plain", "plain", id="ascii-as-is"),
        pytest.param("thème ✓", "thème ✓", id="valid-unicode-as-is"),
        pytest.param("\x01x", "\x01\x01x", id="metadata-like-escaped"),
        pytest.param('\x01"x"', '\x01\x01"x"', id="looks-like-a-json-escape"),
        pytest.param("\udfff", '\x01"\\udfff"', id="lone-surrogate-as-json"),
        pytest.param("a\ud800b", '\x01"a\\ud800b"', id="surrogate-inside"),
        pytest.param("\x00\ud800", '\x01"\\u0000\\ud800"', id="metadata-like-surrogate"),
        pytest.param('"\ud800"', '\x01"\\"\\ud800\\""', id="quoted-surrogate"),
    ],
)
def test_every_key_has_a_utf8_field_that_reads_back_as_it(key: str, field: str) -> None:
    """A lone surrogate (what json.loads gives for "\\ud800") has no UTF-8 form: its key
    is stored as \\x01 + its ASCII-escaped JSON string, which no other key's field is."""
    from redis_middleware.sansio.sessions.scripts import field_name, key_name

    assert field_name(key) == field and key_name(field) == key
    field.encode()  # Redis gets UTF-8


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        pytest.param("text é ✓", '"text é ✓"', id="valid-text-unescaped"),
        pytest.param({"k": ["é", 1]}, '{"k":["é",1]}', id="compact"),
        pytest.param("a\ud800b", '"a\\ud800b"', id="lone-surrogate-ascii-escaped"),
        pytest.param({"é": "\udfff"}, '{"\\u00e9":"\\udfff"}', id="whole-value-escaped"),
    ],
)
def test_values_are_utf8_json_and_read_back_as_they_were(value: Any, encoded: str) -> None:
    from redis_middleware.sansio.sessions.mapping import JSON

    assert JSON.dumps(value) == encoded and JSON.loads(encoded) == value
    encoded.encode()


@pytest.mark.parametrize(
    ("encoded", "stored"),
    [
        pytest.param('"' + "ab" * 64 + '"', bytes.fromhex("ab" * 64),
                     id="sha512-hex-digest-is-64-bytes"),
        pytest.param('"' + "ab" * 31 + '"', None, id="fits-already"),
        pytest.param('"' + "ab" * 32 + '"', bytes.fromhex("ab" * 32),
                     id="sha256-hex-digest-is-just-too-long"),
        pytest.param('"' + "ab" * 65 + '"', None, id="too-long-even-packed"),
        pytest.param('"' + "AB" * 64 + '"', None, id="upper-case-would-not-round-trip"),
        pytest.param('"' + "a" * 127 + '"', None, id="odd-digits"),
        pytest.param('"' + "xy" * 64 + '"', None, id="not-hex"),
        pytest.param("[" + "1," * 40 + "1]", None, id="not-a-string"),
    ],
)
def test_long_hex_strings_are_packed(encoded: str, stored: bytes | None) -> None:
    from redis_middleware.sansio.sessions.scripts import packed

    assert packed(encoded) == stored


def test_a_packed_value_reads_back_as_its_encoding_and_drops_its_twin() -> None:
    from redis_middleware.sansio.flow import run_pure
    from redis_middleware.sansio.sessions.core import SessionCore
    from redis_middleware.sansio.sessions.scripts import META, PACKED

    core = SessionCore(Settings())
    digest = "0f" * 64
    encoded = '"' + digest + '"'
    (call,) = next(core.store_flow("update", "a" * 47, "a" * 47, {"_id": encoded, "n": "1"},
                                   [], user=None, loaded_user=None))
    args = list(call.args)
    assert args[args.index(PACKED + "_id") + 1] == bytes.fromhex(digest)
    assert args[args.index("n") + 1] == "1"
    raw = [META.encode(), b"0:0", (PACKED + "_id").encode(), bytes.fromhex(digest),
           b"n", b"1"]
    flow = core.read_flow("a" * 47)
    next(flow)
    try:
        flow.send([raw])
    except StopIteration as stop:
        data, stored = stop.value
    assert data == {"_id": digest, "n": 1} and stored == {"_id": encoded, "n": "1"}
    assert run_pure(core.exists_flow("a" * 47), [[1]]) is True


@pytest.mark.parametrize(
    ("loaded", "change", "written"),
    [
        pytest.param({"user_id": "7", "n": 1, "ok": True, "x": None, "f": 1.5},
                     lambda s: s.get("user_id"), {}, id="plain-values-read"),
        pytest.param({"cart": ["a"]}, lambda s: s["cart"].append("b"),
                     {"cart": '["a","b"]'}, id="a-list-changed-in-place"),
        pytest.param({"prefs": {"theme": "dark"}}, lambda s: s["prefs"].update(theme="light"),
                     {"prefs": '{"theme":"light"}'}, id="a-dict-changed-in-place"),
        pytest.param({"user_id": "7"}, lambda s: s.__setitem__("user_id", "7"), {},
                     id="an-equal-value-assigned"),
        pytest.param({"user_id": "7"}, lambda s: s.__setitem__("user_id", "8"),
                     {"user_id": '"8"'}, id="a-plain-value-assigned"),
    ],
)
def test_what_a_request_did_to_its_loaded_session_is_what_is_written(
        loaded: dict[str, Any], change: Any, written: dict[str, str]) -> None:
    core = SessionCore(Settings())
    session = core.session_for(core.read_cookie({}))
    stored = {k: core_encode(v) for k, v in loaded.items()}
    session.set_loaded((dict(loaded), stored))
    change(session)
    assert session.changes() == (written, [])


def test_a_cleared_session_of_plain_values_deletes_every_field() -> None:
    core = SessionCore(Settings())
    session = core.session_for(core.read_cookie({}))
    session.set_loaded(({"a": "1", "b": 2}, {"a": '"1"', "b": "2"}))
    session.clear()
    assert session.changes() == ({}, ["a", "b"])


def core_encode(value: Any) -> str:
    from redis_middleware.sansio.sessions.mapping import encode

    return encode(value)
