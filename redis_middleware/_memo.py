"""Bounded per-process dicts on the request path: memos of pure results, and state.

Keys come from requests (paths, cookies, hosts, user ids), so every such dict is
bounded: that is what keeps hostile traffic from growing it. Bounded in entries, and in
characters: the strings and bytes of its keys and values (a tuple's counted together)
stay under ``max_chars`` (:data:`MAX_CHARS` unless said), the oldest forgotten first,
and an entry of more than ``max_entry_chars`` (:data:`MAX_ENTRY_CHARS`) is not kept at
all. So a client sending long paths or header names, each new, cannot pin more than
``max_chars`` per dict (each such request computes its result again, as it would
without the memo). The two kinds are named apart because forgetting means different
things: a :class:`Memo` entry forgotten only costs recomputing it; a :class:`Recent`
entry is something learned from traffic (a URL's Vary names, when a user's heartbeat
was last written) that is learned again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["MAX_CHARS", "MAX_ENTRY_CHARS", "Memo", "Recent", "memoized"]

MAX_CHARS = 512 * 1024
MAX_ENTRY_CHARS = 4096
_GONE = object()


def _chars(item: object) -> int:
    """The characters of a str or bytes, of a tuple's (nested too); 0 for anything else.
    Asked when an entry is kept or forgotten, never on a hit."""
    if type(item) is str or type(item) is bytes:
        return len(item)
    if type(item) is tuple:
        return sum(map(_chars, item))
    return 0


class _Bounded(dict[K, V]):
    def __init__(self, limit: int, max_entry_chars: int = MAX_ENTRY_CHARS,
                 max_chars: int = MAX_CHARS) -> None:
        super().__init__()
        self.limit = limit
        self.max_entry_chars = max_entry_chars
        self.max_chars = max_chars
        self.chars = 0  # of the entries held (about: threads putting at once may race)

    def _keep(self, key: K, value: V) -> V:
        size = _chars(key) + _chars(value)
        if size > self.max_entry_chars:
            return value
        while self and (len(self) >= self.limit or self.chars + size > self.max_chars):
            try:
                oldest = next(iter(self))
                self.chars -= _chars(oldest) + _chars(self.pop(oldest))
            except (KeyError, StopIteration, RuntimeError):  # another thread got there first
                break
        self[key] = value
        self.chars += size
        return value

    def discard(self, key: K) -> None:
        """Forget ``key`` if it is kept (``pop`` would leave its characters counted)."""
        old = self.pop(key, _GONE)
        if old is not _GONE:
            self.chars -= _chars(key) + _chars(old)


class Memo(_Bounded[K, V]):
    """Results of a pure computation; at most ``limit``, the oldest forgotten first."""

    def put(self, key: K, value: V) -> V:
        self.discard(key)  # computed twice at once (threads): counted once
        return self._keep(key, value)


class Recent(_Bounded[K, V]):
    """State learned from traffic; at most ``limit`` keys, the least recently written
    forgotten first."""

    def put(self, key: K, value: V) -> V:
        self.discard(key)  # rewritten: now the newest
        return self._keep(key, value)


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
