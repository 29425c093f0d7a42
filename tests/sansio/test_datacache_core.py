"""The data cache's core with no Redis: keys, templates, the envelope, serializers, when
to refresh, and the commands each flow sends (driven by ``run_pure``)."""

from __future__ import annotations

import enum
import json
import logging
import math
import pickle
import time
from typing import Any, ClassVar

import pytest

from redis_middleware import ConfigError, Settings
from redis_middleware.sansio import incidents
from redis_middleware.sansio.cache import datascripts as lua
from redis_middleware.sansio.cache.data import (
    HEAD_SIZE,
    DataCore,
    Entry,
    hash_slot_tag,
)
from redis_middleware.sansio.cache.dataenvelope import MISS
from redis_middleware.sansio.cache.datakeys import Binder, DefaultKey, KeyTemplate
from redis_middleware.sansio.cache.serializers import (
    JsonSerializer,
    MsgpackSerializer,
    SignedPickleSerializer,
    SignedSerializer,
    UnreadableValue,
    signed,
)
from redis_middleware.sansio.flow import run_pure, step

from .helpers import SECRET, batches, commands, settings

NOW = 1_700_000_000_000  # ms


def core(**overrides: Any) -> DataCore:
    namespace = overrides.pop("namespace", "")
    serializer = overrides.pop("serializer", None)
    raw = overrides.pop("raw", False)
    return DataCore(settings(**overrides), namespace, serializer, raw)


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})


# -- keys --------------------------------------------------------------------------------
def test_the_key_layout() -> None:
    c = core()
    assert c.key("user:42:profile") == "t:data:{user:42:profile}"
    assert c.fill_key("user:42:profile") == "t:data:fill:{user:42:profile}"
    assert c.tag_key("user:42") == "t:data:tag:{user%3A42}"
    assert c.keys.data_lock("rebuild index") == "t:data:lock:{rebuild%20index}"
    django = core(namespace="django")
    assert django.key(":1:foo") == "t:data:django:{:1:foo}"
    assert django.fill_key(":1:foo") == "t:data:fill:django:{:1:foo}"
    assert django.keys.data_patterns("django") == (
        "t:data:django:{*", "t:data:fill:django:{*", "t:data:tag:django:{*")


@pytest.mark.parametrize("name", [
    pytest.param("user:42:profile", id="plain"),
    pytest.param("user:{42}:profile", id="a-user-hash-tag"),
    pytest.param("a}b", id="a-closing-brace"),
    pytest.param("a{b}c", id="braces-inside"),
    pytest.param("{}x", id="an-empty-hash-tag"),
])
def test_a_value_and_its_lease_share_a_cluster_slot(name: str) -> None:
    c = core()
    assert hash_slot_tag(c.key(name)) == hash_slot_tag(c.fill_key(name))


@pytest.mark.parametrize("namespace", ["fill", "lock", "tag", "Django", "", "1x", "a b"])
def test_namespaces_cannot_land_on_bookkeeping(namespace: str) -> None:
    if namespace == "":
        core(namespace="")  # the DataCache's own
        return
    with pytest.raises(ValueError, match="namespace"):
        core(namespace=namespace)


@pytest.mark.parametrize("name", ["", 42, None, b"k", "}x", "}"])
def test_a_key_is_a_non_empty_str(name: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        core().key(name)


# -- binding arguments and templates ----------------------------------------------------------
def profile(user_id: int, lang: str = "en", *, fmt: str = "json") -> None: ...


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    pytest.param((42,), {}, {"user_id": 42, "lang": "en", "fmt": "json"}, id="defaults-applied"),
    pytest.param((42, "fr"), {}, {"user_id": 42, "lang": "fr", "fmt": "json"},
                 id="positional"),
    pytest.param((), {"user_id": 42, "fmt": "xml"}, {"user_id": 42, "lang": "en", "fmt": "xml"},
                 id="keywords-and-keyword-only"),
    pytest.param((42,), {"lang": "de"}, {"user_id": 42, "lang": "de", "fmt": "json"},
                 id="mixed"),
])
def test_arguments_bind_like_a_call(args: tuple[Any, ...], kwargs: dict[str, Any],
                                    expected: dict[str, Any]) -> None:
    assert Binder(profile).bind(args, kwargs) == expected


@pytest.mark.parametrize(("args", "kwargs"), [
    pytest.param((), {}, id="missing"),
    pytest.param((1, "en", "json"), {}, id="keyword-only-given-by-position"),
    pytest.param((1,), {"user_id": 2}, id="given-twice"),
    pytest.param((1,), {"other": 2}, id="unknown-keyword"),
])
def test_a_bad_call_is_the_usual_type_error(args: tuple[Any, ...], kwargs: dict[str, Any]
                                            ) -> None:
    with pytest.raises(TypeError):
        Binder(profile).bind(args, kwargs)


def test_var_arguments_bind_too() -> None:
    def f(a: int, *rest: int, **extra: int) -> None: ...

    assert Binder(f).bind((1, 2, 3), {"x": 4}) == {"a": 1, "rest": (2, 3), "extra": {"x": 4}}


class User:
    def __init__(self, uid: int) -> None:
        self.uid = uid


@pytest.mark.parametrize(("template", "bound", "expected"), [
    pytest.param("user:{user_id}:profile", {"user_id": 42}, "user:42:profile", id="field"),
    pytest.param("u:{user.uid}", {"user": User(7)}, "u:7", id="attribute"),
    pytest.param("first:{ids[0]}", {"ids": [3, 4]}, "first:3", id="index"),
    pytest.param("p:{price:.2f}", {"price": 2.5}, "p:2.50", id="format-spec"),
    pytest.param("n:{name!r}", {"name": "ab"}, "n:%27ab%27", id="conversion-escaped"),
    pytest.param("{{tenant}}:{user_id}", {"user_id": 1}, "{tenant}:1", id="literal-hash-tag"),
    pytest.param("k:{a}:{b}", {"a": "x:y", "b": "z"}, "k:x%3Ay:z", id="colon-escaped"),
    pytest.param("k:{a}", {"a": "{tag}"}, "k:%7Btag%7D", id="braces-escaped"),
    pytest.param("k:{a}", {"a": "*?[x]"}, "k:%2A%3F%5Bx%5D", id="glob-escaped"),
    pytest.param("k:{a}", {"a": "line\nbreak"}, "k:line%0Abreak", id="newline-escaped"),
    pytest.param("k:{a}", {"a": "é"}, "k:%C3%A9", id="unicode-escaped"),
])
def test_templates_render_with_arguments_escaped(template: str, bound: dict[str, Any],
                                                 expected: str) -> None:
    assert KeyTemplate(template, tuple(bound)).render(bound) == expected


def test_long_arguments_are_hashed_to_a_short_key() -> None:
    t = KeyTemplate("k:{a}", ("a",))
    one, two = t.render({"a": "x" * 10_000}), t.render({"a": "x" * 9_999 + "y"})
    assert one != two and len(one) < 50 and one.startswith("k:~")


def test_escaping_is_injective_across_fields() -> None:
    t = KeyTemplate("{a}:{b}", ("a", "b"))
    seen = {t.render({"a": a, "b": b}) for a, b in [("x:y", "z"), ("x", "y:z"), ("x%3Ay", "z"),
                                                    ("x", "y%3Az")]}
    assert len(seen) == 4


@pytest.mark.parametrize(("template", "message"), [
    pytest.param("user:{uid}", "not a parameter", id="unknown-field"),
    pytest.param("user:{0}", "not positions", id="positional-field"),
    pytest.param("user:{}", "not positions", id="auto-numbered-field"),
    pytest.param("user:{user_id:{lang}}", "nested", id="nested-field"),
    pytest.param("user:{user_id", "key template", id="unbalanced"),
    pytest.param("", "non-empty", id="empty"),
])
def test_a_bad_template_fails_at_decoration(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyTemplate(template, Binder(profile).names)


def test_tag_templates_render_plain_text() -> None:
    t = KeyTemplate("user:{a}", ("a",), escaped=False)
    assert t.render({"a": "x:y"}) == "user:x:y"  # the tag's key escapes it as a whole
    assert core().tag_key("user:x:y") == "t:data:tag:{user%3Ax%3Ay}"


class Repo:
    def __init__(self, name: str) -> None:
        self.name = name

    def load(self, item: int, *, full: bool = False) -> None: ...

    def __cache_key__(self) -> str:
        return self.name


class Plain:
    def load(self, item: int) -> None: ...


def test_the_default_key_names_the_function_and_its_arguments() -> None:
    key = DefaultKey(profile, Binder(profile))
    assert key.render({"user_id": 42, "lang": "en", "fmt": "json"}) == (
        f"{__name__}.profile:user_id=42:lang=en:fmt=json")
    hostile = key.render({"user_id": "1:lang=fr", "lang": "en", "fmt": "json"})
    assert hostile == f"{__name__}.profile:user_id=1%3Alang%3Dfr:lang=en:fmt=json"


def test_the_default_key_of_a_method() -> None:
    own = DefaultKey(Repo.load, Binder(Repo.load))
    assert own.render({"self": Repo("main"), "item": 3, "full": False}) == (
        f"{__name__}.Repo.load:self=main:item=3:full=False")
    plain = DefaultKey(Plain.load, Binder(Plain.load))
    assert plain.render({"self": Plain(), "item": 3}) == f"{__name__}.Plain.load:item=3"


def test_the_default_key_sorts_keyword_arguments() -> None:
    def f(**extra: int) -> None: ...

    key = DefaultKey(f, Binder(f))
    assert key.render({"extra": {"b": 1, "a": 2}}) == key.render({"extra": {"a": 2, "b": 1}})


# -- serializers ---------------------------------------------------------------------------------
JSON_VALUES = [
    pytest.param("text", id="str"), pytest.param("", id="empty-str"),
    pytest.param("\ud800 lone surrogate", id="lone-surrogate"),
    pytest.param("日本語 \u2028", id="unicode"), pytest.param(0, id="zero"),
    pytest.param(-(2**80), id="big-int"), pytest.param(1.0, id="float-one-stays-float"),
    pytest.param(0.1 + 0.2, id="float-exact"), pytest.param(-0.0, id="negative-zero"),
    pytest.param(True, id="true"), pytest.param(False, id="false"), pytest.param(None, id="none"),
    pytest.param([], id="empty-list"), pytest.param({}, id="empty-dict"),
    pytest.param({"a": [1, 2.5, None, {"b": [True]}], "": "x"}, id="nested"),
]


@pytest.mark.parametrize("value", JSON_VALUES)
def test_json_round_trips_exactly(value: Any) -> None:
    c = core()
    entry = c.decode(c.encode(value, 60_000))
    assert entry is not None
    assert entry.value == value and type(entry.value) is type(value)
    assert json.dumps(entry.value) == json.dumps(value)
    if isinstance(value, float):
        assert math.copysign(1, entry.value) == math.copysign(1, value)


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [
    pytest.param((1, 2), id="tuple"), pytest.param({1, 2}, id="set"),
    pytest.param(b"bytes", id="bytes"), pytest.param(Color.RED, id="int-enum"),
    pytest.param({1: "a"}, id="int-key"), pytest.param({"a": (1,)}, id="nested-tuple"),
    pytest.param([object()], id="object"), pytest.param({("a",): 1}, id="tuple-key"),
])
def test_json_refuses_what_would_not_come_back_the_same(value: Any) -> None:
    with pytest.raises(TypeError):
        core().encode(value, 60_000)


def test_msgpack_round_trips_and_refuses_huge_ints() -> None:
    c = core(serializer="msgpack")
    value = {"b": b"\x00\xff", "n": [1, 2.5, None], 3: "int key"}
    entry = c.decode(c.encode(value, 60_000))
    assert entry is not None and entry.value == value
    with pytest.raises(TypeError):
        c.encode(2**70, 60_000)
    assert MsgpackSerializer().loads(MsgpackSerializer().dumps((1, 2))) == [1, 2]


def test_signed_pickle_verifies_before_unpickling() -> None:
    signer = SignedPickleSerializer(["a" * 40])
    data = signer.dumps({"t": (1, 2), "s": {3}})
    assert signer.loads(data) == {"t": (1, 2), "s": {3}}
    rotated = SignedPickleSerializer(["b" * 40, "a" * 40])  # new key first, old still verifies
    assert rotated.loads(data) == {"t": (1, 2), "s": {3}}
    forged = data[:32] + pickle.dumps("evil")
    with pytest.raises(UnreadableValue):
        signer.loads(forged)
    with pytest.raises(UnreadableValue):
        SignedPickleSerializer(["c" * 40]).loads(data)


def test_a_forged_pickle_is_a_miss_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    c = core(serializer="pickle")
    good = c.encode({"x": 1}, 60_000)
    forged = good[:HEAD_SIZE] + b"\x00" * 32 + pickle.dumps({"x": 2})
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        assert c.decode(forged) is None
        assert c.decode(forged) is None
    assert sum("could not be read" in r.getMessage() for r in caplog.records) == 1
    assert c.decode(good) == Entry({"x": 1}, c.decode(good).fresh_until, 0, False)  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [
    pytest.param(b"", id="empty"), pytest.param(b"plain text", id="not-an-envelope"),
    pytest.param(b"\xd1\x10\x00", id="head-only"),
    pytest.param(b"\xd1\x10\x00" + b"\x00" * 12 + b"{bad json", id="bad-payload"),
    pytest.param(b"\xd1\x20\x00" + b"\x00" * 12 + b"\x01", id="another-serializer"),
    pytest.param(b"\xd1\x11\x00" + b"\x00" * 12 + b"not zlib", id="bad-compression"),
])
def test_unreadable_values_are_misses(raw: bytes) -> None:
    """Decoded, or read by a hit's shortcut: a miss either way."""
    assert core().decode(raw) is None
    assert core().hot(raw) is MISS


def test_a_hit_reads_what_decode_reads() -> None:
    """The hot read of a hit (its shortcut for plain values, and the rest) gives the
    value ``decode`` gives, for every kind of entry a plain hit may serve; a value with a
    stale window is left to the flow that judges it."""
    c = core(data_compress_min=100)
    tag = c.tag_key("a")
    for stored in (c.encode({"id": 1}, 1000), c.encode([], 1000), c.encode("", 1000),
                   c.encode("x" * 5000, 1000), c.encode({"id": 1}, 1000, tag_keys=[tag]),
                   c.encode({"id": 1}, 1000, compute_ms=70)):
        assert c.hot(stored) == c.decode(stored).value  # type: ignore[union-attr]
    assert c.hot(c.encode({"id": 1}, 1000, 5_000)) is MISS  # soft: judged by the flow
    assert core(data_serializer="msgpack").hot(c.encode({"id": 1}, 1000)) is MISS
    assert core(raw=True).hot(c.encode(7, 1000)) is MISS  # an envelope is no raw value


def test_compression_above_the_threshold() -> None:
    c = core(data_compress_min=100)
    small, big = c.encode("x" * 50, 1000), c.encode("x" * 5000, 1000)
    assert small[1] & 1 == 0 and big[1] & 1 == 1
    assert len(big) < 200
    assert c.decode(big).value == "x" * 5000  # type: ignore[union-attr]
    incompressible = c.encode(list(range(60)), 1000)  # compressed only if that is smaller
    assert c.decode(incompressible).value == list(range(60))  # type: ignore[union-attr]


def test_raw_mode_stores_the_serializer_bytes_alone() -> None:
    c = core(raw=True)
    assert c.encode(42, 1000) == b"42"
    assert c.decode(b"42") == Entry(42, 0, 0, False)
    with pytest.raises(ValueError, match="no tags"):
        c.encode(1, 1000, tag_keys=["t:data:tag:{x}"])
    with pytest.raises(ValueError, match="no stale"):
        c.stale_ms(5)


def test_the_envelope_header() -> None:
    c = core()
    tag = c.tag_key("a")
    data = c.encode("v", 60_000, 5_000, [tag], compute_ms=1234, now_ms=NOW)
    assert data[0] == 0xD1 and data[1] == 0x12 and data[2] == 1  # json, soft; one tag
    assert int.from_bytes(data[3:11], "big") == NOW + 60_000
    assert int.from_bytes(data[11:15], "big") == 1234
    assert data[15:23] == c.tag_digest(tag)
    assert c.decode(data) == Entry("v", NOW + 60_000, 1234, True)


# -- when to refresh ------------------------------------------------------------------------------
@pytest.mark.parametrize(("entry", "now", "early", "rand", "verdict"), [
    pytest.param(Entry(1, NOW, 0, False), NOW - 1, 0, 1.0, "fresh", id="fresh"),
    pytest.param(Entry(1, NOW, 0, True), NOW - 1, 0, 1.0, "fresh", id="soft-but-fresh"),
    pytest.param(Entry(1, NOW, 0, True), NOW, 0, 1.0, "stale", id="soft-past-its-ttl"),
    pytest.param(Entry(1, NOW, 100, False), NOW - 1000, 1.0, 0.5, "fresh",
                 id="xfetch-far-from-expiry"),
    pytest.param(Entry(1, NOW, 100, False), NOW - 50, 1.0, 0.5, "early",
                 id="xfetch-close-to-expiry"),
    pytest.param(Entry(1, NOW, 100, False), NOW - 50, 0, 0.5, "fresh", id="xfetch-off"),
    pytest.param(Entry(1, NOW, 100, False), NOW - 50, 1.0, 1.0, "fresh",
                 id="xfetch-lucky-draw"),
    pytest.param(Entry(1, NOW, 0, False), NOW - 1, 1.0, 0.001, "fresh",
                 id="xfetch-needs-a-loader-time"),
    pytest.param(Entry(1, NOW, 100, False), NOW - 1000, 20.0, 0.5, "early",
                 id="xfetch-larger-beta-earlier"),
])
def test_judge(entry: Entry, now: int, early: float, rand: float, verdict: str) -> None:
    assert DataCore.judge(entry, now, early, rand) == verdict


# -- the flows' commands ---------------------------------------------------------------------------
def test_a_hit_is_one_get() -> None:
    seen, raw = batches(core().read_flow("user:1"), [[b"v"]])
    assert [commands(b) for b in seen] == [["GET"]] and raw == b"v"
    assert seen[0][0].args == ("GET", "t:data:{user:1}")


def test_the_claim_reads_the_value_and_takes_the_lease_in_one_script() -> None:
    c = core(data_lock_timeout=2.5)
    seen, result = batches(c.claim_flow("k", "tok", NOW), [[[None, 1]]])
    assert commands(seen[0]) == ["EVALSHA"]
    assert seen[0][0].args[2:] == (2, "t:data:{k}", "t:data:fill:{k}", "tok", 2500, NOW, "1")
    assert result == (None, True)
    assert run_pure(c.claim_flow("k", "tok", NOW), [[[b"v", 0]]]) == (b"v", False)


def test_storing_with_a_lease_releases_it_in_the_same_script() -> None:
    c = core()
    tag = c.tag_key("users")
    seen, stored = batches(c.store_flow("k", b"data", 5000, "tok", [tag]), [[1, 1]])
    assert commands(seen[0]) == ["EVALSHA", "EVALSHA"] and stored is True
    assert seen[0][0].args[2:] == (2, "t:data:{k}", "t:data:fill:{k}", b"data", 5000, "tok")
    assert seen[0][1].args[2:5] == (1, tag, "t:data:{k}")
    assert seen[0][1].args[7] == 5000  # the tag lives as long as its member


@pytest.mark.parametrize(("nx", "raw", "expected"), [
    pytest.param(False, False, ("SET", "t:data:{k}", b"d", "PX", 100), id="set"),
    pytest.param(False, True, ("SET", "t:data:{k}", b"d", "PX", 100), id="raw set"),
    pytest.param(True, True, ("SET", "t:data:{k}", b"d", "PX", 100, "NX"), id="raw add"),
])
def test_storing_without_a_lease_is_one_set(nx: bool, raw: bool,
                                            expected: tuple[Any, ...]) -> None:
    seen, _ = batches(core(raw=raw).store_flow("k", b"d", 100, nx=nx), [[True]])
    assert seen[0][0].args == expected


def test_adding_an_envelope_is_one_script_that_reads_the_header() -> None:
    """``add`` of a value with an envelope: one script (a value in its stale window is
    absent for it), given the time to judge that by."""
    seen, stored = batches(core().store_flow("k", b"d", 100, nx=True), [[1]])
    (op,) = seen[0]
    assert op.script is lua.ADD and op.args[2:6] == (1, "t:data:{k}", b"d", 100)
    assert abs(op.args[6] - time.time() * 1000) < 5000 and stored is True


def test_get_many_is_one_mget_or_gets_on_a_cluster() -> None:
    seen, found = batches(core().get_many_flow(["a", "b"]), [[[b"1", None]]])
    assert seen[0][0].args == ("MGET", "t:data:{a}", "t:data:{b}") and found == [b"1", None]
    cluster = DataCore(Settings(redis_url="redis+cluster://127.0.0.1:1", secret_key=(SECRET,),
                                key_prefix="t"))
    seen, found = batches(cluster.get_many_flow(["a", "b"]), [[b"1", None]])
    assert [op.args for op in seen[0]] == [("GET", "t:data:{a}"), ("GET", "t:data:{b}")]
    assert step(core().get_many_flow([])) == (True, [])  # no round trip at all


def test_invalidation_pops_the_tags_then_deletes_by_slot() -> None:
    c = core()
    seen, count = batches(c.invalidate_flow(["b", "a", "a"]),
                          [[[b"t:data:{x}"], [b"t:data:{y}", b"t:data:{x}"]], [2]])
    assert [commands(b) for b in seen] == [["EVALSHA", "EVALSHA"], ["EVALSHA"]]
    assert [op.args[3] for op in seen[0]] == [c.tag_key("a"), c.tag_key("b")]
    assert seen[1][0].args[2:] == (2, "t:data:{x}", "t:data:{y}", c.tag_digest(c.tag_key("a")),
                                  c.tag_digest(c.tag_key("b")))
    assert count == 2
    cluster = DataCore(Settings(redis_url="redis+cluster://127.0.0.1:1", secret_key=(SECRET,),
                                key_prefix="t"))
    seen, _ = batches(cluster.invalidate_flow(["a"]), [
        [[b"t:data:{x}", b"t:data:{y}", b"t:data:{{t}:1}", b"t:data:{{t}:2}"]], [1, 1, 1]])
    groups = sorted(op.args[3:3 + op.args[2]] for op in seen[1])
    assert groups == [("t:data:{x}",), ("t:data:{y}",), ("t:data:{{t}:1}", "t:data:{{t}:2}")]
    assert run_pure(c.invalidate_flow(["a"]), [[[]]]) == 0


def test_delete_is_one_del() -> None:
    seen, count = batches(core().delete_flow(["a", "b"]), [[1]])
    assert seen[0][0].args == ("DEL", "t:data:{a}", "t:data:{b}") and count == 1


@pytest.mark.parametrize(("reply", "outcome"), [
    pytest.param([1, 5], 5, id="incremented"),
    pytest.param([0], KeyError, id="missing"),
    pytest.param([2], TypeError, id="not-an-integer"),
    pytest.param([3], OverflowError, id="out-of-range"),
])
def test_incr_outcomes(reply: list[int], outcome: Any) -> None:
    flow = core(raw=True).incr_flow("n", 2)
    if isinstance(outcome, int):
        assert run_pure(flow, [[reply]]) == outcome
    else:
        with pytest.raises(outcome):
            run_pure(flow, [[reply]])


def test_clear_scans_its_namespace_and_unlinks() -> None:
    c = core(namespace="flask")
    seen, removed = batches(c.clear_flow(), [
        [(7, [b"t:data:flask:{a}"])], [1], [(0, [])],  # values: two SCAN pages
        [(0, [b"t:data:fill:flask:{a}"])], [1],  # leases
        [(0, [])],  # tags
    ])
    assert [commands(b) for b in seen] == [["SCAN"], ["UNLINK"], ["SCAN"], ["SCAN"], ["UNLINK"],
                                            ["SCAN"]]
    assert seen[0][0].args == ("SCAN", 0, "MATCH", "t:data:flask:{*", "COUNT", 1000)
    assert seen[2][0].args[1] == 7 and removed == 2


def test_a_lock_is_set_nx_with_a_timeout() -> None:
    c = core()
    seen, taken = batches(c.lock_flow("t:data:lock:{x}", "tok", 3000, 0), [[True]])
    assert seen[0][0].args == ("SET", "t:data:lock:{x}", "tok", "NX", "PX", 3000) and taken
    assert run_pure(c.lock_flow("t:data:lock:{x}", "tok", 3000, 0), [[None]]) is False


# -- TTLs and settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(("ttl", "px"), [
    pytest.param(None, 300_000, id="default"), pytest.param(1, 1000, id="int"),
    pytest.param(0.25, 250, id="float-in-ms"), pytest.param(0.0001, 1, id="at-least-1ms"),
])
def test_ttl_in_milliseconds(ttl: float | None, px: int) -> None:
    assert core().px(ttl) == px


@pytest.mark.parametrize("ttl", [0, -1, True, math.inf, math.nan, "60"])
def test_a_ttl_must_be_positive_seconds(ttl: Any) -> None:
    with pytest.raises(ValueError, match="TTL"):
        core().px(ttl)


def test_data_settings_from_the_environment() -> None:
    s = Settings.from_env({
        "REDIS_URL": "redis://localhost:6379/0", "REDIS_MIDDLEWARE_SECRET_KEY": SECRET,
        "REDIS_MIDDLEWARE_DATA_TTL": "60", "REDIS_MIDDLEWARE_DATA_MAX_TTL": "86400",
        "REDIS_MIDDLEWARE_DATA_LOCK_TIMEOUT": "3", "REDIS_MIDDLEWARE_DATA_LOCK_WAIT": "1.5",
        "REDIS_MIDDLEWARE_DATA_SERIALIZER": "msgpack",
        "REDIS_MIDDLEWARE_DATA_COMPRESS_MIN": "2048",
        "REDIS_MIDDLEWARE_DATA_MAX_VALUE_BYTES": "1000",
        "REDIS_MIDDLEWARE_NEAR_CACHE_SIZE": "500", "REDIS_MIDDLEWARE_NEAR_CACHE_TTL": "5",
    })
    assert (s.data_ttl, s.data_max_ttl, s.data_lock_timeout, s.data_lock_wait) == (
        60, 86400, 3, 1.5)
    assert (s.data_serializer, s.data_compress_min, s.data_max_value_bytes) == (
        "msgpack", 2048, 1000)
    assert (s.near_cache_size, s.near_cache_ttl) == (500, 5)
    assert Settings(data_serializer=JsonSerializer()).data_serializer is not None


@pytest.mark.parametrize(("variable", "value"), [
    pytest.param("REDIS_MIDDLEWARE_DATA_TTL", "0", id="ttl-zero"),
    pytest.param("REDIS_MIDDLEWARE_DATA_MAX_TTL", "-1", id="max-ttl-negative"),
    pytest.param("REDIS_MIDDLEWARE_DATA_LOCK_TIMEOUT", "0", id="lock-timeout-zero"),
    pytest.param("REDIS_MIDDLEWARE_DATA_LOCK_WAIT", "-1", id="lock-wait-negative"),
    pytest.param("REDIS_MIDDLEWARE_DATA_SERIALIZER", "yaml", id="unknown-serializer"),
    pytest.param("REDIS_MIDDLEWARE_DATA_SERIALIZER", "json:nothing", id="bad-import"),
    pytest.param("REDIS_MIDDLEWARE_DATA_SERIALIZER", "json:JSONDecoder", id="no-dumps"),
    pytest.param("REDIS_MIDDLEWARE_DATA_COMPRESS_MIN", "-5", id="compress-negative"),
    pytest.param("REDIS_MIDDLEWARE_DATA_MAX_VALUE_BYTES", "0", id="max-bytes-zero"),
    pytest.param("REDIS_MIDDLEWARE_NEAR_CACHE_SIZE", "-1", id="near-size-negative"),
    pytest.param("REDIS_MIDDLEWARE_NEAR_CACHE_TTL", "0", id="near-ttl-zero"),
    pytest.param("REDIS_MIDDLEWARE_DATA_TTL", "soon", id="not-a-number"),
])
def test_bad_data_settings_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert variable in str(info.value)


def test_a_serializer_object_is_accepted() -> None:
    class Upper:
        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    c = DataCore(settings(data_serializer=Upper()))
    assert c.decode(c.encode("abc", 1000)).value == "ABC"  # type: ignore[union-attr]
    assert c.decode(core().encode("abc", 1000)) is None  # written by another serializer


class _Pickles:
    """A serializer of the user's that pickles (as cachelib's and django-redis's do)."""

    loaded: ClassVar[list[bytes]] = []

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        self.loaded.append(data)
        return pickle.loads(data)


def test_a_serializer_of_the_users_stores_signed_bytes() -> None:
    """Whoever writes to Redis without the secret cannot feed a user's serializer (a
    pickle runs code): its bytes are signed, and a value that fails the check is a miss
    its ``loads`` never sees; raw mode (the framework backends) alike."""
    for raw in (False, True):
        _Pickles.loaded.clear()
        c = core(serializer=_Pickles(), raw=raw)
        stored = c.encode({"t": (1, 2)}, 60_000)
        assert c.decode(stored).value == {"t": (1, 2)}  # type: ignore[union-attr]
        assert pickle.dumps({"t": (1, 2)}) in stored  # the serializer's bytes, behind a MAC
        planted = stored.replace(pickle.dumps({"t": (1, 2)}), pickle.dumps("planted"))
        assert c.decode(planted) is None and c.hot(planted) is MISS
        assert _Pickles.loaded == [pickle.dumps({"t": (1, 2)})]  # the planted one: never


def test_a_serializer_safe_to_load_is_used_as_it_is() -> None:
    class Upper:
        safe_to_load = True

        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    assert core(serializer=Upper(), raw=True).encode("abc", 1000) == b"ABC"
    assert signed(Upper(), ["a" * 40]).__class__ is Upper
    wrapped = signed(_Pickles(), ["a" * 40])
    assert isinstance(wrapped, SignedSerializer) and signed(wrapped, ["a" * 40]) is wrapped


def test_a_signed_serializer_refuses_what_its_serializer_cannot_store() -> None:
    class Refuses:  # cachelib's serializers warn and return None
        def dumps(self, value: Any) -> Any:
            return None if isinstance(value, set) else str(value)

        def loads(self, data: bytes) -> Any:
            return data

    with pytest.raises(TypeError, match="Refuses cannot store a set"):
        SignedSerializer(Refuses(), ["a" * 40]).dumps({1})
    with pytest.raises(TypeError, match="returned str, not bytes"):
        SignedSerializer(Refuses(), ["a" * 40]).dumps("x")
    rotated = SignedSerializer(_Pickles(), ["b" * 40, "a" * 40])
    assert rotated.loads(SignedSerializer(_Pickles(), ["a" * 40]).dumps(7)) == 7
