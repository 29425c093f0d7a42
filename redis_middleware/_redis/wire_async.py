"""The built-in asyncio client: automatic pipelining on one connection per event loop
(why it exists: ``endpoint``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rex

from .endpoint import _MORE, Command, Endpoint, Replies, _finish, _pack, _reader, _table

__all__ = ["AsyncWire"]


class _Waiting:
    __slots__ = ("count", "future", "replies", "sent")

    def __init__(self, future: asyncio.Future[Replies], count: int, sent: float) -> None:
        self.future = future
        self.count = count
        self.replies: Replies = []
        self.sent = sent


class _AsyncConnection(asyncio.Protocol):
    """One connection shared by every coroutine of a loop; replies come back in order.

    Commands issued during one turn of the loop go out in one write (``call_soon``
    flush), except a batch sent while nothing is in flight, which is written at once;
    each caller's batch is answered through one future. A reply overdue by
    the timeout fails everything in flight and closes the connection (later replies
    could not be matched to their callers any more).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.reader = _reader()
        self.waiting: deque[_Waiting] = deque()
        self.outbox: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.gone: asyncio.Future[None] = loop.create_future()
        self._flush_due = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        try:
            while waiting:
                head = waiting[0]
                replies = head.replies
                while len(replies) < head.count:
                    reply = reader.gets()
                    if reply is _MORE:
                        return
                    replies.append(reply)
                waiting.popleft()
                if not head.future.done():  # its caller may have been cancelled
                    head.future.set_result(replies)
        except hiredis.ProtocolError as exc:
            self.fail(rex.ConnectionError(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rex.ConnectionError(f"Connection to Redis lost: {exc or 'closed by server'}"))
        if not self.gone.done():
            self.gone.set_result(None)

    def fail(self, error: Exception) -> None:
        """Close, and fail everything in flight with ``error``."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(error)

    def send(self, packed: bytes, count: int) -> asyncio.Future[Replies]:
        """Send ``count`` packed commands; the future of their replies."""
        if self.closed:
            raise rex.ConnectionError("Connection to Redis closed")
        if not self.waiting and not self._flush_due and self.transport is not None:
            # Nothing in flight: no other caller's batch to wait for, so the write goes
            # now rather than on the next turn of the loop (one turn less per request
            # when traffic is light; under load, batches of one turn still share a write).
            self.transport.write(packed)
        else:
            self.outbox.append(packed)
            if not self._flush_due:
                self._flush_due = True
                self.loop.call_soon(self._flush)
        future: asyncio.Future[Replies] = self.loop.create_future()
        now = self.loop.time()
        self.waiting.append(_Waiting(future, count, now))
        if self._timer is None:
            self._timer = self.loop.call_at(now + self.timeout, self._check_overdue)
        return future

    def _flush(self) -> None:
        self._flush_due = False
        if self.closed or self.transport is None:
            return
        data = self.outbox[0] if len(self.outbox) == 1 else b"".join(self.outbox)
        self.outbox.clear()
        self.transport.write(data)

    def _check_overdue(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        due = self.waiting[0].sent + self.timeout
        if self.loop.time() >= due:
            self.fail(rex.TimeoutError(f"Timeout reading from Redis ({self.timeout:g} s)"))
        else:
            self._timer = self.loop.call_at(due, self._check_overdue)


class AsyncWire:
    """The asyncio client of one event loop: one pipelined connection, reopened on use
    after a failure."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._conn: _AsyncConnection | None = None
        self._lock: asyncio.Lock | None = None
        self._callbacks = _table(endpoint.current_protocol)

    async def execute(self, commands: Sequence[Command]) -> Replies:
        """Send ``commands`` in order; error replies come back as exceptions, in place."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connected()
        replies = await conn.send(_pack(commands), len(commands))
        return _finish(commands, replies, self.endpoint.current_protocol)

    async def call(self, command: Command) -> Any:
        """One command's reply (an error reply as an exception): :meth:`execute` without
        its lists, for the cache backends' hot reads (``SyncWire.call``'s twin)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connected()
        (reply,) = await conn.send(bytes(hiredis.pack_command(command)), 1)
        callback = self._callbacks.get(command[0])
        if callback is None or isinstance(reply, Exception):
            return reply
        return callback(reply)

    async def _connected(self) -> _AsyncConnection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # concurrent callers share one connection attempt
            if self._conn is None or self._conn.closed:
                self._conn = await self._open()
            return self._conn

    async def _open(self) -> _AsyncConnection:
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        context = ep.ssl_context()
        try:
            if ep.path is not None:
                opening = loop.create_unix_connection(
                    lambda: _AsyncConnection(loop, ep.timeout), ep.path)
            else:
                opening = loop.create_connection(
                    lambda: _AsyncConnection(loop, ep.timeout), ep.host, ep.port, ssl=context,
                    server_hostname=ep.host if context is not None else None)
            _, conn = await asyncio.wait_for(opening, ep.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise rex.ConnectionError(f"Error connecting to {ep.where}: {exc!r}") from exc
        try:
            for _ in range(2):  # twice only when the server refused HELLO (then RESP2)
                setup = ep.setup()
                if ep.check_setup(await conn.send(_pack(setup), len(setup))):
                    break
        except BaseException:
            conn.fail(rex.ConnectionError("session setup failed"))
            raise
        self._callbacks = _table(ep.current_protocol)  # as negotiated
        return conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.transport is None:
            return
        conn.fail(rex.ConnectionError("client closed"))
        try:
            await asyncio.wait_for(asyncio.shield(conn.gone), 1.0)
        except TimeoutError:
            conn.transport.abort()
