"""The responses the middleware answers itself (429, 503, a stored entry), as values.

Each is built here once; the adapters only translate a :class:`Response` into ASGI
messages or a WSGI ``start_response`` call.

A *refusal* (rate limited, rate limiter unavailable, session store unavailable) is
answered by the app's ``refusal_handler`` when it returns a response, otherwise by
:func:`render`: ``application/problem+json`` (RFC 9457) for API clients, a minimal
HTML page for a browser (``Accept: text/html``), always with the status and
``Retry-After``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from .._memo import Memo
from .incidents import log_incident

__all__ = ["Refusal", "RefusalKind", "Refusals", "Response", "json_response",
           "preferred_format", "rate_limited", "render", "status_line", "store_unavailable"]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Response:
    """A whole response: status, headers (names as sent) and body."""

    status: int
    headers: Headers
    body: bytes

    def with_headers(self, extra: Headers) -> Response:
        return self if not extra else Response(self.status, (*self.headers, *extra), self.body)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as an ASGI server wants them."""
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]


def status_line(status: int) -> str:
    """A WSGI status line; a code ``http.HTTPStatus`` does not know keeps a bare reason."""
    line = _STATUS_LINES.get(status)
    if line is None:  # once per code: ``HTTPStatus(status)`` runs the enum's Python lookup
        try:
            line = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            line = f"{status} Unknown"
        line = _STATUS_LINES.put(status, line)
    return line


# Status code -> its line (every cache hit and refusal on WSGI). Bounded: an app may
# answer with any integer.
_STATUS_LINES: Memo[int, str] = Memo(1024)


def json_response(status: int, payload: object, headers: Headers = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, (("Content-Type", "application/json"),
                             ("Content-Length", str(len(body))), *headers), body)


RefusalKind = Literal["rate-limited", "ratelimit-unavailable", "session-unavailable"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the middleware answers instead of the app, and what it must say."""

    kind: RefusalKind
    status: int
    detail: str
    headers: Headers  # Retry-After, and the rate-limit headers of a 429

    @property
    def retry_after(self) -> str:
        return next((v for k, v in self.headers if k.lower() == "retry-after"), "1")


_FORMATS = {"text/html": "html", "application/xhtml+xml": "html",
            "application/problem+json": "problem", "application/json": "problem"}


def preferred_format(accept: str | None) -> Literal["html", "problem"]:
    """HTML when the client prefers it (a browser's navigation), else problem+json.

    Media ranges are compared by their q-value (RFC 9110 12.5.1), the first listed
    winning a tie; ``*/*`` and no Accept at all mean problem+json, as for any API
    client."""
    best_q, best = 0.0, "problem"
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        found = _FORMATS.get(media.lower())
        if found is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best_q, best = q, found
    return "html" if best == "html" else "problem"


def render(refusal: Refusal, accept: str | None = None) -> Response:
    """The default answer to a refusal, in the format the client prefers."""
    title = _phrase(refusal.status)
    if preferred_format(accept) == "html":
        body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{refusal.status} "
                f"{title}</title><h1>{title}</h1><p>{html.escape(refusal.detail)}</p>"
                f"<p>Try again in {html.escape(refusal.retry_after)} s.</p></html>").encode()
        content_type = "text/html; charset=utf-8"
    else:
        body = json.dumps({"type": "about:blank", "title": title, "status": refusal.status,
                           "detail": refusal.detail}, separators=(",", ":")).encode()
        content_type = "application/problem+json"
    # no-store: a 429 is one client's and a 503 one moment's; a shared cache in front
    # (a CDN that caches errors) must not answer other clients with it.
    return Response(refusal.status, (("Content-Type", content_type),
                                     ("Content-Length", str(len(body))),
                                     ("Cache-Control", "no-store"), *refusal.headers),
                    body)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


RefusalHandler = Callable[[Any, Refusal], Response | None]


class Refusals:
    """Answers refusals for one configuration: the app's handler first, then
    :func:`render`. A handler that raises or returns nothing gets the default (logged
    once per incident); a response without ``Retry-After`` gets the refusal's."""

    __slots__ = ("handler", "retry")

    def __init__(self, handler: RefusalHandler | None, breaker_cooldown: float) -> None:
        self.handler = handler
        self.retry = str(max(1, round(breaker_cooldown)))

    def answer(self, refusal: Refusal, request: Any) -> Response:
        """``request``: the :class:`~.request.RequestInfo` (read for ``Accept``)."""
        if self.handler is not None:
            try:
                custom = self.handler(request, refusal)
            except Exception as exc:  # the app's hook: never a 500 because of it
                log_incident("refusal-handler", "refusal_handler failed, default answer "
                             "sent: %r", exc)
                custom = None
            if custom is not None:
                if not any(k.lower() == "retry-after" for k, _ in custom.headers):
                    custom = custom.with_headers((("Retry-After", refusal.retry_after),))
                return custom
        accept = request.header("accept") if request is not None else None
        return render(refusal, accept)

    def session_unavailable(self, request: Any) -> Response:
        """503: the session store failed for a request that needs its session."""
        return self.answer(Refusal("session-unavailable", 503, "Session store unavailable, "
                                   "retry shortly.", (("Retry-After", self.retry),)), request)

    def rate_limited(self, request: Any, status: int, detail: str, headers: Headers
                     ) -> Response:
        """429, or 503 when a fail-closed limiter is unavailable, with its headers."""
        kind: RefusalKind = "rate-limited" if status == 429 else "ratelimit-unavailable"
        return self.answer(Refusal(kind, status, detail, headers), request)


def store_unavailable(retry_after: float) -> Response:
    """503 for a client whose preferences are unknown (problem+json)."""
    return render(Refusal("session-unavailable", 503, "Session store unavailable, retry "
                          "shortly.", (("Retry-After", str(max(1, round(retry_after)))),)))


def rate_limited(status: int, detail: str, headers: Headers) -> Response:
    """429 (or 503 when a fail-closed limiter is unavailable) as problem+json."""
    kind: RefusalKind = "rate-limited" if status == 429 else "ratelimit-unavailable"
    return render(Refusal(kind, status, detail, headers))
