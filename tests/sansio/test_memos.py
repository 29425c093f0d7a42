"""The request path's memos (``_memo.py``): bounded in entries and in the characters of
what they hold, whatever the keys a client sends."""

from __future__ import annotations

from redis_middleware._memo import Memo, Recent


def test_a_memo_keeps_its_characters_under_budget_forgetting_the_oldest() -> None:
    memo: Memo[str, str] = Memo(1000, max_entry_chars=100, max_chars=1000)
    for i in range(100):
        memo.put(f"{i:03d}" + "k" * 47, "v" * 50)  # 100 characters an entry
    assert len(memo) == 10 and memo.chars == 1000
    assert sorted(memo)[0].startswith("090")  # the ten newest
    assert memo.put("x" * 101, "value") == "value" and "x" * 101 not in memo  # too large
    memo.put("small", "v")
    assert memo.chars == 1000 - 100 + 6 and len(memo) == 10


def test_tuples_count_their_strings_and_bytes_nested_too() -> None:
    memo: Memo[tuple[object, ...], object] = Memo(10, max_entry_chars=50, max_chars=1000)
    memo.put(("GET", b"/path", ("a", "bc")), 7)
    assert memo.chars == 3 + 5 + 3
    memo.put(("x" * 30, ("y" * 30,)), None)  # 60 characters: over an entry's size
    assert len(memo) == 1


def test_an_entry_put_again_is_counted_once() -> None:
    for kind in (Memo, Recent):
        memo = kind(10, max_entry_chars=100, max_chars=1000)
        memo.put("key", "value")
        memo.put("key", "other")
        assert memo.chars == 8 and memo["key"] == "other"


def test_the_entry_count_still_bounds_small_entries() -> None:
    recent: Recent[int, int] = Recent(3)
    for i in range(10):
        recent.put(i, i)
    assert sorted(recent) == [7, 8, 9] and recent.chars == 0


def test_a_discarded_entry_gives_its_characters_back() -> None:
    for kind in (Memo, Recent):
        memo = kind(10, max_entry_chars=100, max_chars=1000)
        memo.put("key", "value")
        memo.discard("key")
        memo.discard("never kept")
        assert memo.chars == 0 and "key" not in memo
