"""The built-in sync client: one connection per thread, one write and one read per
round trip (why it exists: ``endpoint``)."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rex

from .endpoint import (
    _KERNEL_TIMEOUTS,
    _MORE,
    Command,
    Endpoint,
    Replies,
    _finish,
    _pack,
    _reader,
    _table,
)

__all__ = ["SyncWire"]


class _SyncConnection:
    def __init__(self, endpoint: Endpoint) -> None:
        ep = endpoint
        self.reader = _reader()
        try:
            if ep.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(ep.connect_timeout)
                sock.connect(ep.path)
            else:
                sock = socket.create_connection((ep.host, ep.port), ep.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                context = ep.ssl_context()
                if context is not None:
                    sock = context.wrap_socket(sock, server_hostname=ep.host)
        except OSError as exc:  # ssl.SSLError and socket.timeout are OSErrors
            raise rex.ConnectionError(f"Error connecting to {ep.where}: {exc!r}") from exc
        if _KERNEL_TIMEOUTS and not isinstance(sock, ssl.SSLSocket):
            # The kernel enforces the timeout: Python's own (settimeout) polls before
            # every send and recv, two more system calls per round trip.
            sock.settimeout(None)
            whole = int(ep.timeout)
            tv = struct.pack("ll", whole, int((ep.timeout - whole) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        else:
            sock.settimeout(ep.timeout)
        self.sock = sock
        try:
            for _ in range(2):  # twice only when the server refused HELLO (then RESP2)
                setup = ep.setup()
                if ep.check_setup(self.round_trip(_pack(setup), len(setup))):
                    break
        except BaseException:
            self.close()
            raise

    def round_trip(self, packed: bytes, count: int) -> Replies:
        reader: Any = self.reader
        sock = self.sock
        replies: Replies = []
        try:
            sock.sendall(packed)
            while count:  # replies still to read (a count, not len(): this runs per hit)
                reply = reader.gets()
                if reply is _MORE:
                    data = sock.recv(65536)
                    if not data:
                        raise rex.ConnectionError("Connection closed by server.")
                    reader.feed(data)
                else:
                    replies.append(reply)
                    count -= 1
        except (TimeoutError, BlockingIOError) as exc:  # EAGAIN: the kernel's timeout
            raise rex.TimeoutError("Timeout reading from Redis") from exc
        except OSError as exc:
            raise rex.ConnectionError(f"Error talking to Redis: {exc!r}") from exc
        except hiredis.ProtocolError as exc:
            raise rex.ConnectionError(f"unreadable reply from Redis: {exc}") from exc
        return replies

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Turn:
    """A caller in line for a connection of a full pool: served in the order of arrival
    (a thread that gives one back and calls again cannot take it first)."""

    __slots__ = ("cond", "conn", "served")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.conn: _SyncConnection | None = None
        self.served = False

    def serve(self, conn: _SyncConnection | None) -> None:
        """Hand over ``conn`` (None: the caller opens one; it was counted). Lock held."""
        self.conn, self.served = conn, True
        self.cond.notify()


class SyncWire:
    """The sync client of a process: a LIFO of idle connections, one per busy thread,
    at most ``max_connections``. When all are busy, callers wait in line, up to ``wait``
    seconds (by default the socket timeout), and get the connections given back in
    their order. Taking and returning an idle connection takes no lock."""

    def __init__(self, endpoint: Endpoint, max_connections: int, wait: float | None = None
                 ) -> None:
        self.endpoint = endpoint
        self.max_connections = max_connections
        self.wait = endpoint.timeout if wait is None else wait
        self._callbacks = _table(endpoint.current_protocol)
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._idle: list[_SyncConnection] = []
        self._open = 0  # connections made and not closed (idle or in use)
        self._lock = threading.Lock()
        # Callers waiting for a connection. Someone is in line only while the pool is full,
        # and then every connection given back goes to the first of them, never to idle.
        self._line: deque[_Turn] = deque()

    def execute(self, commands: Sequence[Command]) -> Replies:
        """Send ``commands`` in order; error replies come back as exceptions, in place."""
        replies = self._round_trip(_pack(commands), len(commands))
        return _finish(commands, replies, self.endpoint.current_protocol)

    def call(self, command: Command) -> Any:
        """One command's reply (an error reply as an exception): :meth:`execute` without
        its lists, for the cache backends' hot reads."""
        (reply,) = self._round_trip(bytes(hiredis.pack_command(command)), 1)
        # The callbacks of the protocol the connections speak (a connection was made by
        # then): _finish's, without two calls.
        callback = self._callbacks.get(command[0])
        if callback is None or isinstance(reply, Exception):
            return reply
        return callback(reply)

    def _take(self) -> _SyncConnection | None:
        """No connection was idle: one, or None: the caller may open one (it was counted).
        When the pool is full, the caller waits in line."""
        deadline = time.monotonic() + self.wait
        with self._lock:
            try:  # one given back since (idle pops take no lock: try, not check)
                return self._idle.pop()
            except IndexError:
                pass
            if self._open < self.max_connections:
                self._open += 1
                return None
            turn = _Turn(self._lock)
            self._line.append(turn)
            try:
                while not turn.served:
                    try:  # one given back without the lock as this caller got in line
                        conn = self._idle.pop()
                    except IndexError:
                        pass
                    else:
                        self._line.remove(turn)
                        return conn
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._line.remove(turn)
                        raise rex.ConnectionError(
                            f"all {self.max_connections} connections are busy")
                    turn.cond.wait(left)
            except BaseException:
                if turn.served:  # served as it was interrupted: pass it on
                    self._pass_on(turn.conn)
                elif turn in self._line:
                    self._line.remove(turn)
                raise
            return turn.conn

    def _give(self, conn: _SyncConnection) -> None:
        """Back to the pool: to the first caller in line, else idle."""
        with self._lock:
            self._pass_on(conn)

    def _serve_idle(self) -> None:
        """Callers got in line while a connection went back idle without the lock."""
        with self._lock:
            while self._line:
                try:
                    conn = self._idle.pop()
                except IndexError:
                    return
                self._line.popleft().serve(conn)

    def _release(self) -> None:
        """A counted connection is gone: its place goes to the first caller in line (who
        opens one), else it is free."""
        with self._lock:
            self._pass_on(None)

    def _pass_on(self, conn: _SyncConnection | None) -> None:
        """``conn`` (None: a counted place) to the first caller in line, else back to the
        pool. Lock held."""
        if self._line:
            self._line.popleft().serve(conn)
        elif conn is None:
            self._open -= 1
        else:
            self._idle.append(conn)

    def _closed(self, conn: _SyncConnection) -> None:
        conn.close()
        self._release()

    def _new(self) -> _SyncConnection:
        try:
            conn = _SyncConnection(self.endpoint)
            self._callbacks = _table(self.endpoint.current_protocol)  # as negotiated
            return conn
        except BaseException:
            self._release()
            raise

    def _round_trip(self, packed: bytes, count: int) -> Replies:
        try:
            conn: _SyncConnection | None = self._idle.pop()  # the usual case: no lock
        except IndexError:
            conn = self._take()
        if conn is not None:
            try:
                replies = conn.round_trip(packed, count)
            except rex.ConnectionError:
                # An idle connection the server dropped (a restart, CLIENT KILL, its
                # idle timeout): nothing was run; one retry on a new connection.
                conn.close()
                conn = None
            except BaseException:
                self._closed(conn)
                raise
            else:
                if self._line:  # callers wait: it goes to the first of them
                    self._give(conn)
                else:  # the usual case, without the lock
                    self._idle.append(conn)
                    if self._line:  # one got in line meanwhile, having seen none idle
                        self._serve_idle()
                return replies
        conn = self._new()  # counted already (by _take, or kept from the dropped one)
        try:
            replies = conn.round_trip(packed, count)
        except BaseException:
            self._closed(conn)
            raise
        self._give(conn)
        return replies

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for conn in idle:
            conn.close()


# A forked child never shares its parent's sockets: its wires start empty. (A check of
# the pid on every round trip was a system call each time: glibc no longer caches it.)
_live: weakref.WeakSet[SyncWire] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for wire in list(_live):
        wire._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
