from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from redis_middleware.keys import COMPONENTS, KeySpace, digest, escape

SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@%~")
untrusted = st.one_of(
    st.text(),
    st.binary().map(lambda b: b.decode("latin-1")),
    st.text(alphabet=st.sampled_from(":{}%~*?[] \x00\n/\\"), max_size=40),
)


@given(untrusted)
def test_escape_output_is_key_safe(value: str) -> None:
    out = escape(value)
    assert set(out) <= SAFE
    assert len(out) <= 97


@given(untrusted, untrusted)
def test_escape_is_injective(a: str, b: str) -> None:
    if a != b:
        assert escape(a) != escape(b)


@given(untrusted, untrusted)
def test_ratelimit_keys_stay_in_namespace_with_one_hash_tag(identity: str, rule: str) -> None:
    ks = KeySpace("app")
    key = ks.ratelimit(identity, rule, "60")
    assert key.startswith("app:ratelimit:{")
    assert key.count("{") == 1 and key.count("}") == 1
    assert key.count(":") == 4  # prefix:component:{tag}:rule:window
    assert ks.ratelimit_tag(identity) in key


@given(untrusted)
def test_hashed_parts_never_carry_raw_input(user: str) -> None:
    ks = KeySpace("app")
    key = ks.session_index(user)
    assert key.startswith("app:session:user:{") and key.endswith("}")
    assert len(key) == len("app:session:user:{}") + 22


@given(untrusted, untrusted)
def test_components_cannot_collide(a: str, b: str) -> None:
    ks = KeySpace("p")
    keys = {
        ks.ratelimit(a, b, "1"), ks.cache_tag(a), ks.presence("online", a),
        ks.session_index(a), ks.session("tag", digest(a)),
    }
    assert len(keys) == 5
    for key in keys:
        assert key.split(":")[1] in COMPONENTS


def test_digest_is_fixed_length_and_deterministic() -> None:
    assert digest("abc") == digest(b"abc")
    assert len(digest("x")) == 22 and len(digest("x", 32)) == 43
    assert escape("1.2.3.4") == "1.2.3.4"
    assert escape("a:b") == "a%3Ab"
    assert escape("x" * 200).startswith("~")
