"""What loading a session reads back from its hash, decided with no Redis."""

from __future__ import annotations

import json
import logging

import pytest

from redis_middleware.sansio.flow import run_pure
from redis_middleware.sansio.sessions.cookies import new_session_id
from redis_middleware.sansio.sessions.core import SessionCore
from redis_middleware.sansio.sessions.scripts import META, field_name

from .helpers import settings

SID = new_session_id()

# Stored texts, as our encoder writes them: each must read back as json.loads reads it.
VALID = [
    '"u42"', '""', '"héllo ✓"', '"\U0001f600"', '"a\\"b"', '"back\\\\slash"', '"tab\\t"',
    '"line\\nbreak"', '"\\u2028"', '"\u2028"', '"\xa0nbsp"', '"\\u0000"', "42", "-1.5",
    "true", "null", '[1,"x"]', '{"a":"b"}', '"[1]"', '"{}"', '"  spaced  "',
    '"lone \ud800 surrogate"', '"\\ud800 escaped"',
]
# Texts no encoder of ours writes (a foreign writer's): dropped, as json.loads drops them.
INVALID = ['"a"b"', '"raw\x01control"', '"', 'x"', '"unterminated']


def load(raw: list[bytes]) -> tuple[dict[str, object], dict[str, str]]:
    result = run_pure(SessionCore(settings()).load_flow(SID), [[raw]])
    assert result is not None
    return result


def fields(texts: list[str]) -> list[bytes]:
    raw = [META.encode(), b"mxc8:mxc8"]
    for i, text in enumerate(texts):
        raw += [f"k{i}".encode(), text.encode("utf-8", "surrogatepass")]
    return raw


def test_every_stored_text_reads_back_as_json_reads_it() -> None:
    data, stored = load(fields(VALID))
    assert data == {f"k{i}": json.loads(text) for i, text in enumerate(VALID)}
    assert [type(v) for v in data.values()] == [type(json.loads(t)) for t in VALID]
    assert stored == {f"k{i}": text for i, text in enumerate(VALID)}


@pytest.mark.parametrize("text", INVALID)
def test_a_text_json_refuses_is_dropped_with_a_warning(
        text: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        data, stored = load(fields(['"kept"', text]))
    assert data == {"k0": "kept"} and stored == {"k0": '"kept"'}
    assert "undecodable" in caplog.text


def test_metadata_is_skipped_and_escaped_names_are_restored() -> None:
    raw = [META.encode(), b"x", field_name("\x00odd").encode(), b'"a"',
           field_name("\x01odder").encode(), b'"b"', b"plain", b'"c"']
    data, _ = load(raw)
    assert data == {"\x00odd": "a", "\x01odder": "b", "plain": "c"}


def test_a_hash_read_again_decodes_alike_into_data_of_its_own() -> None:
    core = SessionCore(settings())
    raw = fields(['"u42"', '"Ada"', "7", "true", "null"])
    first, stored = run_pure(core.load_flow(SID), [[raw]]) or ({}, {})
    second, stored_again = run_pure(core.load_flow(SID), [[list(raw)]]) or ({}, {})
    assert first == second == {"k0": "u42", "k1": "Ada", "k2": 7, "k3": True, "k4": None}
    assert stored == stored_again
    first["k0"] = "changed by one request"
    assert second["k0"] == "u42"  # each load has its own dict
    third, _ = run_pure(core.load_flow(SID), [[raw]]) or ({}, {})
    assert third["k0"] == "u42"


def test_lists_and_dicts_read_from_one_hash_are_never_shared_between_loads() -> None:
    core = SessionCore(settings())
    raw = fields(['[1, 2]', '{"cart": ["a"]}'])
    first, _ = run_pure(core.load_flow(SID), [[raw]]) or ({}, {})
    first["k0"].append(3)
    first["k1"]["cart"].append("b")
    second, _ = run_pure(core.load_flow(SID), [[raw]]) or ({}, {})
    assert second == {"k0": [1, 2], "k1": {"cart": ["a"]}}


def test_a_changed_field_or_a_large_hash_reads_what_was_stored() -> None:
    core = SessionCore(settings())
    run_pure(core.load_flow(SID), [[fields(['"old"'])]])
    changed, stored = run_pure(core.load_flow(SID), [[fields(['"new"'])]]) or ({}, {})
    assert changed == {"k0": "new"} and stored == {"k0": '"new"'}
    big = ['"' + "x" * 300 + '"'] * 8  # over the size whose decoding is remembered
    for _ in range(2):
        data, _ = run_pure(core.load_flow(SID), [[fields(big)]]) or ({}, {})
        assert data == {f"k{i}": "x" * 300 for i in range(8)}
