"""Following one computed response: decide at its start, copy its body, store at the end."""

from __future__ import annotations

import time

from .. import metrics
from ..flow import Flow
from .core import CacheCore
from .entry import CachePlan, Entry, Lookup, SessionUse, Verdict
from .serve import NAME, miss_headers

__all__ = ["Capture"]


class Capture:
    """Follows one computed response: decides at its start, copies its body, stores at the end.

    Both adapters feed it the same events, so the rules live here once.
    """

    def __init__(self, core: CacheCore, plan: CachePlan, lookup: Lookup | None,
                 stale: Entry | None, request_time: float | None = None,
                 bypass: str = "redis-unavailable") -> None:
        self.core = core
        self.bypass = bypass  # why there is no lookup (when there is none)
        self.plan = plan
        self.lookup = lookup
        self.stale = stale  # served instead of a 5xx (stale-if-error)
        self.request_time = time.time() if request_time is None else request_time
        self.response_time = self.request_time
        self.verdict: Verdict | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = False
        self.length: int | None = None  # the body's declared Content-Length

    @property
    def revalidating(self) -> Entry | None:
        """The stored entry this request asks the app to confirm (validators sent)."""
        entry = self.lookup.entry if self.lookup is not None else None
        return entry if entry is not None and entry.validated and self.plan.store else None

    def start(self, status: int, headers: list[tuple[str, str]], session: SessionUse
              ) -> list[tuple[str, str]] | None:
        """Headers to add to the response, or None: serve the stale entry instead."""
        if self.stale is not None and status >= 500:
            return None
        self.response_time = time.time()
        self.status, self.headers = status, headers
        if self.lookup is None:
            reason = self.bypass if self.plan.lookup else "request"
            if metrics.hook is not None:
                metrics.hook.cache("bypass", self.core.route_name(self.plan), reason)
            return [("X-Cache", "MISS"), ("Cache-Status", f'{NAME}; fwd=bypass; detail="{reason}"')]
        self.verdict = self.core.verdict(self.plan, status, headers, session,
                                         self.request_time, self.response_time)
        declared = [v for k, v in headers if k.lower() == "content-length"]
        if len(declared) == 1 and declared[0].strip().isdigit():
            self.length = int(declared[0])
        if metrics.hook is not None:
            metrics.hook.cache("miss", self.core.route_name(self.plan),
                               "stored" if self.verdict.store else self.verdict.reason)
        fwd = "stale" if self.lookup.entry is not None else "uri-miss"
        return miss_headers(self.verdict, fwd)

    @property
    def storing(self) -> bool:
        return self.verdict is not None and self.verdict.store

    def body(self, chunk: bytes, more: bool) -> None:
        if not self.storing:
            return
        self._size += len(chunk)
        if self._size > self.core.max_body:
            self.verdict = Verdict(False, "too-big")
            self._parts = []
            return
        self._parts.append(chunk)
        if not more or self._size == self.length:
            self.complete = True

    @property
    def wants_rest(self) -> bool:
        """Storable, but the body stopped before its declared length (the client went
        away, or never read it): reading the rest would complete the entry."""
        return self.storing and not self.complete and self.length is not None and (
            self.lookup is not None)

    def finish_flow(self) -> Flow[None]:
        """Store a complete, storable response; otherwise release the stampede guard."""
        if self.lookup is None:
            return
        verdict = self.verdict
        if self.complete and verdict is not None and verdict.store:
            entry = self.core.entry_of(verdict, self.status, self.headers,
                                       b"".join(self._parts), self.response_time)
            yield from self.core.store_flow(self.plan, self.lookup, verdict, entry)
        else:
            yield from self.core.release_flow(self.plan, self.lookup)

    def revalidated(self, headers: list[tuple[str, str]], session: SessionUse = ""
                    ) -> tuple[Entry, Flow[None]]:
        """The app confirmed the stored entry (304): the entry to serve, and the flow that
        stores its updated fields (or releases the guard: a 304 for another ETag, or one
        from a request that read the session, is served but not stored)."""
        entry = self.revalidating
        assert entry is not None and self.lookup is not None
        self.response_time = time.time()
        found = self.core.freshened(self.plan, entry, headers, self.request_time,
                                    self.response_time, session)
        lookup = self.lookup
        self.lookup = None  # decided now
        if found is None:
            return entry, self.core.release_flow(self.plan, lookup)
        fresh, verdict = found
        return fresh, self.core.store_flow(self.plan, lookup, verdict, fresh)
