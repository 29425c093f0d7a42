"""A bounded dict for per-process memos of pure computations on the request path."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """Remembers at most ``limit`` results; when full, forgets the oldest.

    Keys come from requests (paths, cookies, hosts), so the bound is what keeps
    hostile traffic from growing it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> V:
        if len(self) >= self.limit:
            try:
                del self[next(iter(self))]
            except (KeyError, StopIteration, RuntimeError):  # another thread got there first
                pass
        self[key] = value
        return value
