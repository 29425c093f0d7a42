"""The response half of a request, decided once for both adapters.

An :class:`Exchange` follows one request after the middleware has let the app run. The
adapter hands it the app's response start (status and headers) and each body chunk,
and gets back what to send: a :class:`Reply` (headers to add and to drop, or a whole
:class:`~.responses.Response` to send instead). What must be written to Redis at that
moment (the session's changes, an invalidation, an early release of the stampede
guard) is part of the start flow, so several components share one round trip; what is
written after the body (a cache entry) is :meth:`Exchange.finish_flow`.

An exchange is made of *parts*, one per component (:class:`SessionPart`,
:class:`CachePart`); the one-line stack simply combines more parts in one exchange.
Redis failures never leave a part: each one answers them itself (a 503, a skipped
write) and logs once per incident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .._memo import Memo
from ..errors import RedisCommandError, RedisMiddlewareError, SessionUnavailableError
from . import metrics
from .cache import CacheCore, CachePlan, Capture, Lookup, SessionUse
from .flow import Flow, gather
from .incidents import log_failure, log_incident
from .responses import Headers, Response
from .sessions.cookies import IncomingCookie
from .sessions.core import SessionCore
from .sessions.mapping import Session

__all__ = ["CachePart", "Exchange", "Part", "Reply", "SessionPart", "SocketSessionPart",
           "header_values", "vary_with"]


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
class Reply:
    """What to do with the app's response start."""

    add: Headers = ()
    drop: frozenset[str] = frozenset()  # lower-case names removed from the app's headers
    replace: Response | None = None  # send this instead of the app's whole response
    # The replacement still carries the other parts' headers (a revalidated entry gets
    # the session's Set-Cookie); a 503 does not.
    merge: bool = False

    def apply(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The app's (WSGI) headers with this reply's changes."""
        kept = [h for h in headers if h[0].lower() not in self.drop] if self.drop else list(
            headers)
        return [*kept, *self.add]

    def apply_raw(self, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The app's (ASGI) headers with this reply's changes."""
        if self.drop:
            drop = {name.encode("latin-1") for name in self.drop}
            kept = [h for h in headers if h[0].lower() not in drop]
        else:
            kept = list(headers)
        names = _RAW_NAMES
        for k, v in self.add:  # a loop, not a generator: on every response's path
            name = names.get(k)
            if name is None:
                name = names.put(k, k.lower().encode("latin-1"))
            kept.append((name, v.encode("latin-1")))
        return kept


_NOTHING = Reply()
# Header names as ASGI sends them, by name as the parts write them (a few dozen: the
# parts' own, and the app's Vary names the cache repeats).
_RAW_NAMES: Memo[str, bytes] = Memo(512)


def header_values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """The values of header ``name`` (lower case); a view that can find them without
    decoding every header (the ASGI side's) does."""
    find = getattr(headers, "values_of", None)
    if find is not None:
        found: list[str] = find(name)
        return found
    return [v for k, v in headers if k.lower() == name]


def vary_with(headers: Sequence[tuple[str, str]], token: str) -> Reply:
    """Add ``token`` to the response's Vary, merged by tokens across every Vary line.

    Nothing changes when a line already names it (any case) or says ``*``; otherwise the
    Vary lines are replaced by one that lists their tokens once each, then ``token``.
    """
    lines = header_values(headers, "vary")
    if not lines:
        return Reply((("Vary", token),))
    tokens = [t.strip() for value in lines for t in value.split(",") if t.strip()]
    lowered = {t.lower() for t in tokens}
    if token.lower() in lowered or "*" in lowered:
        return _NOTHING
    if not tokens:
        return Reply((("Vary", token),), frozenset({"vary"}))
    unique = list(dict.fromkeys(tokens))
    return Reply((("Vary", ", ".join([*unique, token])),), frozenset({"vary"}))


class Part(Protocol):
    """One component's share of the response half."""

    conditional: Headers  # request fields the app must see instead of the client's
    # Whether ``body`` and ``finish_flow`` do anything: when no part of an exchange
    # watches the body, the adapter passes it through untouched and runs no finish flow.
    watches_body: bool

    def replace(self, status: int) -> Response | None:
        """Before any I/O: a response to send instead of the app's (or None)."""

    def start_flow(self, status: int, headers: Sequence[tuple[str, str]]) -> Flow[Reply]:
        """At the response start: what to send; never raises a Redis error."""

    def body(self, chunk: bytes, more: bool) -> None: ...

    def on_app_error(self, exc: Exception, passed: bool) -> Response | None:
        """The app raised (``passed``: after its response start went out): a response to
        answer with, or None to let the error propagate."""

    def finish_flow(self) -> Flow[None]:
        """After the body: writes that wait for the whole response; never raises."""


class Exchange:
    """The response half of one request: its parts in order, plus headers for all.

    ``extra`` (the rate-limit headers) goes on every response this request sends, after
    the parts have seen the app's headers, so a cache never stores it.
    """

    __slots__ = ("conditional", "extra", "parts", "watches_body")

    def __init__(self, parts: Sequence[Part], extra: Headers = ()) -> None:
        self.parts = tuple(parts)
        self.extra = extra
        self.watches_body = False
        # Conditional request fields that replace the client's (a revalidation), or ().
        self.conditional: Headers = ()
        for part in self.parts:  # a loop: one or two parts, no generator needed
            if part.watches_body:
                self.watches_body = True
            if part.conditional and not self.conditional:
                self.conditional = part.conditional

    def start_flow(self, status: int, headers: Sequence[tuple[str, str]]) -> Flow[Reply]:
        for part in self.parts:
            replacement = part.replace(status)
            if replacement is not None:
                return Reply(replace=replacement.with_headers(self.extra))
        if len(self.parts) == 1:  # the common case: one reply, nothing to merge
            reply = yield from self.parts[0].start_flow(status, headers)
            if reply.replace is None:
                return Reply((*reply.add, *self.extra), reply.drop) if self.extra else reply
            replies = [reply]
        else:
            replies = yield from gather(*(p.start_flow(status, headers) for p in self.parts))
        add: list[tuple[str, str]] = []
        drop: frozenset[str] = frozenset()
        merged: Response | None = None  # a replacement that keeps the others' headers
        for reply in replies:
            if reply.replace is not None:
                if not reply.merge:
                    return Reply(replace=reply.replace.with_headers(self.extra))
                merged = merged or reply.replace
                continue
            add += reply.add
            drop |= reply.drop
        if merged is not None:
            return Reply(replace=merged.with_headers((*add, *self.extra)))
        return Reply((*add, *self.extra), drop)

    def body(self, chunk: bytes, more: bool) -> None:
        for part in self.parts:
            part.body(chunk, more)

    @property
    def body_complete(self) -> bool:
        """A part waits for the body, and has it whole already (its declared length
        reached): the finish flow may run now, before the last chunk leaves."""
        return any(isinstance(p, CachePart) and p.complete for p in self.parts)

    @property
    def wants_rest(self) -> bool:
        """A part would store the response if it had the rest of the body."""
        return any(isinstance(p, CachePart) and p.wants_rest for p in self.parts)

    def on_app_error(self, exc: Exception, passed: bool) -> Response | None:
        for part in self.parts:
            response = part.on_app_error(exc, passed)
            if response is not None:
                return response.with_headers(self.extra)
        return None

    def finish_flow(self) -> Flow[None]:
        flows = [p.finish_flow() for p in self.parts]
        if len(flows) == 1:
            yield from flows[0]
        else:
            yield from gather(*flows)


class SessionPart:
    """Saves the session's changes at the response start and sets or expires the cookie.

    A session the app could not load (Redis down) turns the app's 500 into a 503; a save
    Redis refuses is a 503 too, logged once per incident.
    """

    __slots__ = ("core", "https", "incoming", "session", "unavailable")
    conditional: Headers = ()
    watches_body = False  # all it writes goes at the response start

    def __init__(self, core: SessionCore, session: Session, incoming: IncomingCookie,
                 https: bool, unavailable: Callable[[], Response]) -> None:
        self.core = core
        self.session = session
        self.incoming = incoming
        self.https = https
        self.unavailable = unavailable

    def replace(self, status: int) -> Response | None:
        if self.session.unavailable_raised and status == 500:
            # The app (or its framework's error handler) turned our
            # SessionUnavailableError into a 500: answer what it means.
            return self.unavailable()
        return None

    def start_flow(self, status: int, headers: Sequence[tuple[str, str]]) -> Flow[Reply]:
        vary = vary_with(headers, "Cookie") if self.session.accessed else _NOTHING
        try:
            result = yield from self.core.save_flow(self.session, self.incoming, self.https)
        except RedisMiddlewareError as exc:
            kind = "session-command" if isinstance(exc, RedisCommandError) else "session-save"
            log_failure(kind, "session changes not saved, answered 503: %s", exc)
            if metrics.hook is not None:
                metrics.hook.session("unavailable")
            return Reply(replace=self.unavailable())
        if result.set_cookie:
            # A response that sets or expires the cookie varies on it, read or not (Flask).
            if not self.session.accessed:
                vary = vary_with(headers, "Cookie")
            return Reply((*vary.add, ("Set-Cookie", result.set_cookie)), vary.drop)
        return vary

    def body(self, chunk: bytes, more: bool) -> None:
        pass

    def on_app_error(self, exc: Exception, passed: bool) -> Response | None:
        if isinstance(exc, SessionUnavailableError) and not passed:
            return self.unavailable()
        return None

    def finish_flow(self) -> Flow[None]:
        return
        yield  # a flow with nothing to write


class SocketSessionPart:
    """A WebSocket's session: no cookie can be set on a socket, so when it ends only a
    live session's changes are written (a failure is logged once per incident)."""

    __slots__ = ("core", "incoming", "session")
    conditional: Headers = ()
    watches_body = True  # its finish flow writes the changes

    def __init__(self, core: SessionCore, session: Session, incoming: IncomingCookie) -> None:
        self.core = core
        self.session = session
        self.incoming = incoming

    def replace(self, status: int) -> Response | None:
        return None

    def start_flow(self, status: int, headers: Sequence[tuple[str, str]]) -> Flow[Reply]:
        return _NOTHING
        yield  # nothing to write at a start

    def body(self, chunk: bytes, more: bool) -> None:
        pass

    def on_app_error(self, exc: Exception, passed: bool) -> Response | None:
        return None

    def finish_flow(self) -> Flow[None]:
        if not self.session.exists:
            return
        try:
            yield from self.core.save_flow(self.session, self.incoming, False)
        except RedisMiddlewareError as exc:
            log_incident("session-save", "session changes of a websocket were lost: %s", exc)


class CachePart:
    """Decides whether the computed response is stored, copies its body, stores it.

    When a stored entry with a validator is stale, the app's request carries
    :attr:`conditional` (the entry's validators); the app's 304 then updates the entry,
    and the client gets the stored response (RFC 9111 4.3). Serves the stored (stale)
    entry instead of a 5xx or an app error while ``stale-if-error`` allows; invalidates
    the URL after a successful request of an unsafe method.
    """

    __slots__ = ("capture", "conditional", "core", "head", "plan", "session_touched",
                 "stale")
    watches_body = True  # it copies the body, then stores the entry

    def __init__(self, core: CacheCore, plan: CachePlan, lookup: Lookup | None, head: bool,
                 now: float, session_touched: Callable[[], SessionUse],
                 bypass: str = "redis-unavailable") -> None:
        self.core = core
        self.plan = plan
        self.head = head
        self.session_touched = session_touched
        entry = lookup.entry if lookup is not None else None
        stale = entry if not plan.invalidate and core.usable_if_error(entry, now) else None
        self.stale = stale
        self.capture = None if plan.invalidate else Capture(core, plan, lookup, stale, now,
                                                            bypass)
        revalidating = self.capture.revalidating if self.capture is not None else None
        # The request fields that replace the client's conditional ones (none: as sent).
        self.conditional = core.conditional(revalidating)

    def _stale(self) -> Response | None:
        if self.stale is None:
            return None
        status, headers, body = self.core.hit(self.plan, self.stale, self.head,
                                              outcome="stale-if-error")
        return Response(status, tuple(headers), body)

    def replace(self, status: int) -> Response | None:
        return self._stale() if status >= 500 else None

    def start_flow(self, status: int, headers: Sequence[tuple[str, str]]) -> Flow[Reply]:
        capture = self.capture
        if capture is None:  # not a safe method
            # RFC 9111 4.4: a successful unsafe request invalidates the URL (and the
            # same-origin URLs in Location and Content-Location); done before the
            # response leaves, so the client's next GET sees fresh data.
            if 200 <= status < 400:
                try:
                    yield from self.core.invalidate_flow(
                        *self.core.invalidated_urls(self.plan, headers))
                except RedisMiddlewareError as exc:
                    log_failure("cache", "cache entry not invalidated: %s", exc)
            return _NOTHING
        if status == 304 and self.conditional:
            entry, store = capture.revalidated(list(headers), self.session_touched())
            yield from self._finish_flow(store)
            code, served, body = self.core.hit(self.plan, entry, self.head,
                                               outcome="revalidated")
            return Reply(replace=Response(code, tuple(served), body), merge=True)
        added = capture.start(status, list(headers), self.session_touched()) or []
        if not capture.storing and capture.lookup is not None:
            yield from self._finish(capture)  # decided now: free the guard with the rest
            capture.lookup = None
        return Reply(tuple(added), self.core.own_targets)

    def body(self, chunk: bytes, more: bool) -> None:
        if self.capture is not None:
            self.capture.body(chunk, more)

    @property
    def complete(self) -> bool:
        """The body to store is whole, and not stored yet."""
        capture = self.capture
        return capture is not None and capture.complete and capture.lookup is not None

    @property
    def wants_rest(self) -> bool:
        return self.capture is not None and self.capture.wants_rest

    def on_app_error(self, exc: Exception, passed: bool) -> Response | None:
        if passed or isinstance(exc, SessionUnavailableError):
            return None
        return self._stale()

    def finish_flow(self) -> Flow[None]:
        capture = self.capture
        if capture is not None and capture.lookup is not None:
            yield from self._finish(capture)
            capture.lookup = None

    @staticmethod
    def _finish(capture: Capture) -> Flow[None]:
        yield from CachePart._finish_flow(capture.finish_flow())

    @staticmethod
    def _finish_flow(flow: Flow[None]) -> Flow[None]:
        try:
            yield from flow
        except RedisMiddlewareError as exc:
            log_failure("cache", "response not stored: %s", exc)
