"""What each plain method of ``DataCache`` decides, as one flow that the sync method
runs with ``RedisConnections.run`` and its ``a`` twin with ``arun``; ``get`` sends its
one ``GET`` without a flow and decides on what it read (``got``).

Each flow validates and encodes before its round trip (a bad TTL, a value the serializer
refuses: raised to the caller), and answers for itself when Redis fails: nothing is
raised, the answer is the one ``docs/data-cache.md`` gives for an outage, and a refused
command is logged once per incident (an outage is logged by the circuit breaker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from ...errors import RedisMiddlewareError
from .. import metrics
from ..flow import Delegate, Flow, PausingFlow
from ..incidents import log_failure
from .data import MISS, DataCore, Seconds, tag_list

__all__ = ["Calls", "failed", "quietly", "report"]

T = TypeVar("T")


def failed(exc: RedisMiddlewareError) -> None:
    log_failure("data", "data cache bypassed: Redis refused a command (%s)", exc)


def report(event: str, label: str, seconds: float = 0.0) -> None:
    if metrics.hook is not None:
        metrics.hook.data(event, label, seconds)


def quietly(flow: Flow[T], default: T) -> Flow[T]:
    """``flow``'s answer, or ``default`` when Redis failed."""
    try:
        return (yield from flow)
    except RedisMiddlewareError as exc:
        failed(exc)
        return default


class Calls:
    """The flows of ``DataCache``'s plain methods (same names, same arguments), and what
    ``get`` decides on what it read (``got``)."""

    def __init__(self, core: DataCore) -> None:
        self.core = core

    def got(self, raw: bytes | RedisMiddlewareError | None, default: Any,
            keep: Callable[[bytes | None, Any], None] | None = None) -> Any:
        """What ``get`` answers for what its one ``GET`` read: the bytes, None, or the
        error that met it (``get`` sends it alone, without a flow: the hot path).
        ``keep``: told what was read and the value to keep (MISS: nothing to keep; the
        near cache keeps a plain fresh value)."""
        if type(raw) is bytes:
            value = self.core.hot(raw)  # a plain fresh value: no Entry
            if value is not MISS:
                if keep is not None:
                    keep(raw, value)
                if metrics.hook is not None:  # no call per hit when off
                    report("hit", "get")
                return value
        elif isinstance(raw, RedisMiddlewareError):
            if keep is not None:  # first: the near cache's ticket is closed whatever follows
                keep(None, MISS)
            failed(raw)
            report("bypass", "get")
            return default
        entry = self.core.usable(raw)
        if keep is not None:
            keep(raw, MISS if entry is None or entry.soft else entry.value)
        report("miss" if entry is None else "hit", "get")
        return default if entry is None else entry.value

    def set(self, name: str, value: Any, ttl: Seconds | None,
            tags: Iterable[str] | str | None, stale: Seconds) -> Flow[bool]:
        core = self.core
        px, stale_ms = core.px(ttl), core.stale_ms(stale)
        tag_keys = core.tag_keys(tags)
        data = core.encode(value, px, stale_ms, tag_keys)
        if core.too_large(data, name):
            yield from quietly(core.refuse_flow([name]), None)
            return False
        return (yield from quietly(core.store_flow(name, data, px + stale_ms, None, tag_keys),
                                   False))

    def add(self, name: str, value: Any, ttl: Seconds | None) -> Flow[bool]:
        px = self.core.px(ttl)
        data = self.core.encode(value, px)
        if self.core.too_large(data, name):
            return False
        return (yield from quietly(self.core.store_flow(name, data, px, nx=True), False))

    def delete(self, name: str) -> Flow[bool]:
        return bool((yield from quietly(self.core.delete_flow([name]), 0)))

    def get_many(self, names: Iterable[str]) -> Flow[dict[str, Any]]:
        keys = list(names)
        raws = yield from quietly(self.core.get_many_flow(keys), [])
        found = {}
        for name, raw in zip(keys, raws, strict=False):
            entry = self.core.usable(raw)
            if entry is not None:
                found[name] = entry.value
        return found

    def set_many(self, mapping: Mapping[str, Any], ttl: Seconds | None,
                 tags: Iterable[str] | str | None) -> Flow[list[str]]:
        """The keys *not* stored: all of them when Redis failed, those over the size cap."""
        core = self.core
        px = core.px(ttl)
        tag_keys = core.tag_keys(tags)
        items: list[tuple[str, bytes]] = []
        refused: list[str] = []
        for name, value in mapping.items():
            data = core.encode(value, px, 0, tag_keys)
            if core.too_large(data, name):
                refused.append(name)
            else:
                items.append((name, data))
        if not (yield from quietly(core.store_many_flow(items, px, tag_keys), False)):
            return list(mapping)
        if refused:
            yield from quietly(core.refuse_flow(refused), None)
        return refused

    def delete_many(self, names: Iterable[str], strict: bool = False) -> Flow[int]:
        """How many were there; ``strict``: Redis failing raises (logged all the same)."""
        try:
            return (yield from self.core.delete_flow(list(names)))
        except RedisMiddlewareError as exc:
            failed(exc)
            if strict:
                raise
            return 0

    def has(self, name: str) -> Flow[bool]:
        return (yield from quietly(self.core.has_flow(name), False))

    def touch(self, name: str, ttl: Seconds | None) -> Flow[bool]:
        return (yield from quietly(self.core.touch_flow(name, self.core.px(ttl)), False))

    def ttl(self, name: str) -> Flow[float | None]:
        return (yield from quietly(self.core.ttl_flow(name), None))

    def incr(self, name: str, delta: int) -> Flow[int]:
        """A missing key, or Redis failing, is the ValueError of Django's ``incr``."""
        try:
            return (yield from self.core.incr_flow(name, delta))
        except KeyError:
            raise ValueError(f"Key {name!r} not found") from None
        except RedisMiddlewareError as exc:
            failed(exc)
            raise ValueError(f"Key {name!r} not found: Redis is unavailable") from exc

    def invalidate(self, tags: Iterable[str] | str,
                   dropping: Callable[[Sequence[str]], None] | None = None) -> Flow[int]:
        return (yield from quietly(self.core.invalidate_flow(tag_list(tags), dropping), 0))

    def clear(self, per_primary: Delegate | None, strict: bool = False) -> PausingFlow[int]:
        """SCAN + UNLINK on the server; on a Cluster, ``per_primary`` (the client library
        scans each primary on its own connections). ``strict``: as for ``delete_many``."""
        try:
            if self.core.cluster and per_primary is not None:
                return cast(int, (yield per_primary))
            return (yield from self.core.clear_flow())
        except RedisMiddlewareError as exc:
            failed(exc)
            if strict:
                raise
            return 0
