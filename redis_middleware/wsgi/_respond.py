"""Runs an app under an :class:`~redis_middleware.sansio.exchange.Exchange` (WSGI side).

Only translation: ``start_response`` calls and body chunks in, the exchange's
decisions out. The app's iterable is always closed (PEP 3333).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._redis.connections import RedisConnections
from ..config.settings import Settings
from ..sansio.cache import CONDITIONAL
from ..sansio.exchange import Exchange
from ..sansio.flow import step
from ..sansio.incidents import log_incident
from ..sansio.responses import Headers, Response, status_line

__all__ = ["refresh", "refresh_workers", "respond", "start", "with_conditional"]


def start(start_response: Any, response: Response, exc_info: Any = None) -> list[bytes]:
    """Start a whole response; returns its body, as a WSGI app would."""
    start_response(status_line(response.status), list(response.headers), exc_info)
    return [response.body]


_BODY_FIELDS = frozenset({"content-type", "content-length"})  # what describes a body


def _discard(data: bytes) -> None:
    """The ``write`` of a replaced response: the app's bytes go nowhere."""


class _Flight:
    """One request's response under an exchange; the app's body passes through it."""

    def __init__(self, exchange: Exchange, redis: RedisConnections, start_response: Any) -> None:
        self.exchange = exchange
        self.redis = redis
        self.start_response = start_response
        self.passed = False
        self.replaced: Response | None = None
        self.app_iter: Iterable[bytes] = ()
        self._chunks: Iterator[bytes] | None = None
        self._finished = False  # closed
        self._stored = False  # the exchange's finish flow ran
        self.through = False  # the server got the app's own iterable (see respond)

    def wrapped_start_response(self, status: str, headers: list[tuple[str, str]],
                               exc_info: Any = None) -> Any:
        code = int(status.split(" ", 1)[0])
        # Most response starts decide with no round trip: stepped here, no driver.
        flow = self.exchange.start_flow(code, list(headers))
        done, reply = step(flow)
        if not done:
            reply = self.redis.run(flow, reply)
        if reply.replace is not None:
            if self.through:
                # A start again (``exc_info``) from inside a body the server got untouched:
                # that body cannot be replaced any more, so it goes out under the
                # replacement's status and headers (a 503's Retry-After), its own type
                # and length kept.
                self.passed = True
                answer = reply.replace
                return self.start_response(status_line(answer.status), [*headers, *(
                    h for h in answer.headers if h[0].lower() not in _BODY_FIELDS)],
                    exc_info)
            self.replaced = reply.replace
            start(self.start_response, reply.replace, exc_info)
            return _discard
        self.passed = True
        write = self.start_response(status, reply.apply(headers), exc_info)
        exchange = self.exchange
        if not exchange.watches_body:  # the body passes untouched (see respond)
            return write

        def write_through(data: bytes) -> None:
            exchange.body(data, True)
            write(data)

        return write_through

    def failed(self, exc: Exception) -> list[bytes]:
        """The app raised: the response the exchange answers with (or the error again)."""
        response = self.exchange.on_app_error(exc, self.passed)
        if response is None:
            raise exc
        if self.replaced is None:
            return start(self.start_response, response)
        return [self.replaced.body]

    def __iter__(self) -> Iterator[bytes]:
        exchange = self.exchange
        self._chunks = chunks = iter(self.app_iter)
        try:
            for chunk in chunks:
                if self.replaced is not None:
                    break
                exchange.body(chunk, True)
                if exchange.body_complete:
                    # The declared length is reached: store now, not at close(), which a
                    # client may call late or never (Flask's test client without
                    # .close()), holding the stampede guard until its timeout.
                    self._finish()
                yield chunk
        except Exception as exc:
            yield from self.failed(exc)
            return
        if self.replaced is not None:
            yield self.replaced.body
        else:
            exchange.body(b"", False)
            self._finish()

    def _finish(self) -> None:
        if not self._stored:
            self._stored = True
            flow = self.exchange.finish_flow()
            done, first = step(flow)
            if not done:
                self.redis.run(flow, first)

    def _read_rest(self) -> None:
        """The client stopped reading a body the cache would store: read the rest, as a
        caching proxy does, so that "stored" holds. Only a body with a declared length
        (bounded, at most ``cache_max_body``) is read; a stream is left as it is."""
        chunks = self._chunks if self._chunks is not None else iter(self.app_iter)
        try:
            for chunk in chunks:
                self.exchange.body(chunk, True)
                if not self.exchange.wants_rest:
                    break
        except Exception as exc:  # the app's own error, after the client left
            log_incident("cache-rest", "response not stored, its body failed: %r", exc)

    def close(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if not self._stored and self.replaced is None and self.exchange.wants_rest:
                self._read_rest()
            close = getattr(self.app_iter, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


def respond(app: Any, environ: dict[str, Any], start_response: Any, exchange: Exchange,
            redis: RedisConnections) -> Iterable[bytes]:
    """Call ``app``; its response goes out as ``exchange`` decides."""
    flight = _Flight(exchange, redis, start_response)
    try:
        flight.app_iter = app(environ, flight.wrapped_start_response)
    except Exception as exc:
        try:
            return flight.failed(exc)
        finally:
            flight.close()
    if flight.passed and flight.replaced is None and not exchange.watches_body:
        # The app's response started as it is, and nothing waits for its body: the body
        # passes through untouched (an error in it is the server's to handle, as no part
        # answers one once the response has started).
        flight.through = True
        return flight.app_iter
    return flight


def with_conditional(environ: dict[str, Any], fields: Headers) -> dict[str, Any]:
    """The environ the app sees when the cache revalidates: the client's conditional
    fields replaced by ``fields`` (the environ itself when there are none)."""
    if not fields:
        return environ
    out = {k: v for k, v in environ.items()
           if not (k.startswith("HTTP_") and k[5:].replace("_", "-").lower() in CONDITIONAL)}
    for name, value in fields:
        out["HTTP_" + name.upper().replace("-", "_")] = value
    return out


def _ignore_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return _discard


def refresh(app: Any, environ: dict[str, Any], exchange: Exchange, redis: RedisConnections,
            workers: ThreadPoolExecutor) -> None:
    """Run ``app`` again on a worker thread for a GET of this URL, under ``exchange``
    (stale-while-revalidate: the client was served the stale entry, and its request
    is not held up by the refresh)."""
    background = with_conditional(environ, exchange.conditional)
    background = {k: v for k, v in background.items() if not k.startswith("werkzeug.")}
    background.update({"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "0",
                       "wsgi.input": io.BytesIO(b"")})

    def run() -> None:
        try:
            body = respond(app, background, _ignore_start, exchange, redis)
            try:
                for _ in body:
                    pass
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except Exception as exc:  # the app's own error: nobody is waiting for this answer
            log_incident("cache-refresh", "background refresh failed: %r", exc)

    workers.submit(run)


def refresh_workers(settings: Settings) -> ThreadPoolExecutor:
    """The threads that run background refreshes (created lazily by the executor)."""
    return ThreadPoolExecutor(settings.cache_refresh_workers,
                              thread_name_prefix="redis-middleware-refresh")
