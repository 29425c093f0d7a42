"""Bounded per-process dicts on the request path: memos of pure results, and state.

Keys come from requests (paths, cookies, hosts, user ids), so every such dict is
bounded: that is what keeps hostile traffic from growing it. Bounded in count, and in
size: a key of more than ``max_key_chars`` characters (:data:`MAX_KEY_CHARS` unless
said; a tuple's strings and bytes together) is not kept, so that a client's long paths
or headers cannot pin ``limit`` times their length (each such request computes its
result again, as it would without the memo). The two kinds are named apart because
forgetting means different things: a :class:`Memo` entry forgotten only costs
recomputing it; a :class:`Recent` entry is something learned from traffic (a URL's Vary
names, when a user's heartbeat was last written) that is learned again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["MAX_KEY_CHARS", "Memo", "Recent", "memoized"]

MAX_KEY_CHARS = 4096


def _too_large(key: object, most: int) -> bool:
    """Whether ``key`` holds more than ``most`` characters (asked on a miss only)."""
    if type(key) is tuple:
        return sum(len(k) for k in key if type(k) is str or type(k) is bytes) > most
    return (type(key) is str or type(key) is bytes) and len(key) > most


class _Bounded(dict[K, V]):
    def __init__(self, limit: int, max_key_chars: int = MAX_KEY_CHARS) -> None:
        super().__init__()
        self.limit = limit
        self.max_key_chars = max_key_chars

    def _make_room(self) -> None:
        if len(self) >= self.limit:
            try:
                del self[next(iter(self))]
            except (KeyError, StopIteration, RuntimeError):  # another thread got there first
                pass


class Memo(_Bounded[K, V]):
    """Results of a pure computation; at most ``limit``, the oldest forgotten first."""

    def put(self, key: K, value: V) -> V:
        if _too_large(key, self.max_key_chars):
            return value
        self._make_room()
        self[key] = value
        return value


class Recent(_Bounded[K, V]):
    """State learned from traffic; at most ``limit`` keys, the least recently written
    forgotten first."""

    def put(self, key: K, value: V) -> V:
        self.pop(key, None)  # rewritten: now the newest
        if _too_large(key, self.max_key_chars):
            return value
        self._make_room()
        self[key] = value
        return value


class _Memoized(Generic[K, V]):
    __slots__ = ("function", "memo")

    def __init__(self, function: Callable[[K], V], limit: int) -> None:
        self.function = function
        self.memo: Memo[K, V] = Memo(limit)

    def __call__(self, key: K) -> V:
        try:
            return self.memo[key]
        except KeyError:
            return self.memo.put(key, self.function(key))


def memoized(limit: int) -> Callable[[Callable[[K], V]], Callable[[K], V]]:
    """A one-argument pure function, remembered in a :class:`Memo` of ``limit`` entries."""
    def wrap(function: Callable[[K], V]) -> Callable[[K], V]:
        return _Memoized(function, limit)
    return wrap
