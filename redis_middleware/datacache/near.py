"""The near cache in front of a DataCache's plain fresh hits (``docs/near-cache.md``).

A hit of ``get``, ``get_or_set`` or a cached function first asks the process's near
cache (``Settings.near_cache_size`` > 0): a value held in memory, which Redis has not
said changed and whose time is not up, is returned with no round trip. On a miss, a
ticket is taken before the ``GET`` is sent (or another task's ``GET`` is joined, only
while that one's ticket is valid: ``SharedReads``) and the value read is kept under it,
unless the key changed meanwhile (the invalidation voids the ticket). Only a plain
fresh value is kept (no stale window, no early refresh, not raw: its envelope says until
when it is fresh), for the time it has left; writes need nothing here, since Redis tells
every process, this one included, of every change before it acknowledges the write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ..sansio.cache import near as decisions
from ..sansio.cache.data import MISS, DataCore
from ..sansio.cache.dataenvelope import HEAD, HEAD_SIZE
from ..sansio.cache.serializers import JsonSerializer, MsgpackSerializer

__all__ = ["NearReads", "near_reads"]


class NearReads:
    """The near cache as a DataCache's hits use it."""

    __slots__ = ("builtin", "core", "view")

    def __init__(self, view: decisions.NearView, core: DataCore) -> None:
        self.view = view
        self.core = core
        # What JSON and msgpack decode holds builtin types only: kept with no check.
        self.builtin = type(core.serializer) in (JsonSerializer, MsgpackSerializer)

    def lookup(self, name: str) -> tuple[Any, decisions.Ticket | None]:
        """``(value, None)`` from memory, or ``(MISS, ticket)`` to read Redis under."""
        key = self.core.key(name)
        value = self.view.get(key)
        if value is not decisions.MISS:
            return value, None
        return MISS, self.view.ticket(key)

    def keep(self, ticket: decisions.Ticket | None, raw: bytes, value: Any) -> None:
        """After a read: keep ``value`` (decoded from ``raw``, a plain fresh envelope) for
        the time it stays fresh."""
        if ticket is None:
            return
        if len(raw) < HEAD_SIZE:
            self.view.drop(ticket)
            return
        left = HEAD.unpack_from(raw)[3] - time.time() * 1000  # fresh until, in ms
        self.view.put(ticket, value, len(raw), left, builtin=self.builtin)

    def forget(self, names: Iterable[str]) -> None:
        """Around this process's own writes of ``names``."""
        key = self.core.key
        self.view.forget(*(key(name) for name in names))

    def drop(self, ticket: decisions.Ticket | None) -> None:
        if ticket is not None:
            self.view.drop(ticket)

    def keeper(self, ticket: decisions.Ticket | None) -> Callable[[bytes | None, Any], None]:
        """What a plain read calls with what it read and the value to keep (MISS: none,
        as for a value in its stale window)."""
        def keep(raw: bytes | None, value: Any) -> None:
            if raw is not None and value is not MISS:
                self.keep(ticket, raw, value)
            else:
                self.drop(ticket)
        return keep


def near_reads(core: DataCore) -> NearReads | None:
    """The near cache of ``core``'s settings, or None (off, or raw values: their TTL is
    Redis's alone, which a read does not return)."""
    if core.raw:
        return None
    view = decisions.near_for(core.settings)
    return None if view is None else NearReads(view, core)
