"""The near cache's connections: one tracking connection per process and Redis master, its
thread, and the drain of pending invalidations before every hit.

The decisions (the memory, the frames, the handshake) are in ``sansio/cache/near.py``;
``docs/near-cache.md`` says what the near cache promises. Why it is built this way (each
point measured, on Redis 7.0 and Valkey 9):

- **A dedicated connection, BCAST on our prefixes.** ``CLIENT TRACKING ON BCAST PREFIX
  <prefix>:data: PREFIX <prefix>:cache:`` pushes every write to those keys, by anyone;
  the data connections are not touched (nothing for the built-in client, redis-py's
  Cluster or Sentinel clients to do). With BCAST the server writes the invalidation to
  the tracker *before* it writes the writer's reply (0 late in 60,000 writes); with
  default tracking it came after the reply 23-31 times in 5,000, ~4 ms late. BCAST also
  costs the server no table of tracked keys.
- **Drain before serve.** Before every memory hit, ``epoll.poll(0)`` on the trackers'
  sockets (~0.4 µs) and, only when bytes are pending, a non-blocking read applied under
  the lock: so a read that starts after another process's write was acknowledged sees
  it (0 stale of 16,000 checked reads; 9-43 in 500 with the thread alone).
- **A thread, not an asyncio task**: the drain must be a synchronous non-blocking call
  on the request path in both worlds (an event loop reads a transport only between
  turns), so the socket cannot belong to a loop. One thread per tracking connection
  connects, probes and reconnects for every thread and event loop of the process, and
  keeps blocking connects off any loop.
- **Proven alive.** The thread sends ``ROLE`` every 0.25 s; memory is served only within
  1 s of the send time of the last answered probe. An EOF, an error, a ``ROLE`` that
  says replica, or no answer within the socket timeout (at least 2 s): the connection is
  lost, the memory emptied (one WARNING per incident), and it reconnects with backoff.
- **Off for good** (one WARNING) where tracking is refused (``CLIENT`` renamed away, an
  ACL, a server without BCAST), on ``memory://`` (fakeredis has no tracking), and for a
  URL with options only redis-py reads.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import RedisSSLContext

from ..config.settings import Settings
from ..sansio.cache import near as decide
from ..sansio.cache.near import NearStore
from .endpoint import _TLS_ARGS, Endpoint

__all__ = ["NEVER", "PROBE_EVERY", "PROOF_WINDOW", "Link", "Owner", "Tracker", "tls_context"]

logger = logging.getLogger("redis_middleware")

PROBE_EVERY = 0.25  # seconds between liveness probes of a tracking connection
PROOF_WINDOW = 1.0  # memory is served this long after the send time of an answered probe
RECONNECT = (0.05, 2.0)  # backoff between connection attempts: first, most

NEVER = float("-inf")  # no probe answered yet
_MORE = object()  # hiredis: not enough data yet
_READ = 1 << 18


def _pack(command: tuple[Any, ...]) -> bytes:
    packer: Any = hiredis.pack_command
    return bytes(packer(command))


class _Refused(Exception):
    """The server will not track: the near cache turns itself off."""


class _Answered(ConnectionError):
    """The server answered the handshake, but not as a tracking connection needs (a
    refused login, a replica, a failed command): reported by the near cache itself.
    Other connection failures mean Redis is unreachable: an outage, which the circuit
    breaker reports for every component."""


class Link:
    """A blocking connection for the handshake (the tracker's socket afterwards)."""

    def __init__(self, ep: Endpoint) -> None:
        self.reader = hiredis.Reader(notEnoughData=_MORE)
        if ep.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(ep.connect_timeout)
            try:
                sock.connect(ep.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((ep.host, ep.port), ep.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            try:
                context = ep.ssl_context()
                if context is not None:
                    sock = context.wrap_socket(sock, server_hostname=ep.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(max(ep.timeout, 1.0))
        self.sock = sock

    def call(self, *command: Any) -> Any:
        """Send one command and return its reply (a subscription's confirmation for
        ``SUBSCRIBE``); invalidations pushed meanwhile are dropped: the memory is
        emptied when the connection is taken into use."""
        self.sock.sendall(_pack(command))
        subscribing = command[0] == "SUBSCRIBE"
        while True:
            reply = self.reader.gets()
            if reply is _MORE:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                self.reader.feed(data)
                continue
            push = type(reply) is hiredis.PushNotification
            if subscribing:
                if isinstance(reply, Exception) or (
                        isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                    return reply
                continue
            if not push:
                return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tls_context(target_options: dict[str, Any]) -> RedisSSLContext:
    """The TLS context of a Sentinel or Cluster URL's options (the defaults of
    ``endpoint_for``: certificates and host names checked unless told otherwise)."""
    given = {arg: target_options[key] for arg, key in _TLS_ARGS.items() if key in target_options}
    defaults: dict[str, Any] = {"cert_reqs": "required", "check_hostname": True}
    if str(given.get("cert_reqs", "")).lower() in ("none", str(ssl.CERT_NONE)):
        defaults["check_hostname"] = False
    return RedisSSLContext(**{**defaults, **given})


class Owner(Protocol):
    """What a tracker needs of the near cache it serves (``_redis/near.NearCache``)."""

    settings: Settings
    store: NearStore
    lock: threading.Lock
    prefixes: tuple[str, ...]
    channel: str

    def recompute(self) -> None: ...

    def watch(self, fd: int, tracker: Tracker) -> None: ...

    def unwatch(self, fd: int) -> None: ...

    def tracker_lost(self) -> None: ...

    def refused(self, reply: str) -> None: ...


class Tracker:
    """One tracking connection (to one master) and its thread."""

    def __init__(self, near: Owner, where: str, locate: Callable[[], Endpoint],
                 address: tuple[str, int] | None = None) -> None:
        self.near = near
        self.where = where  # for log lines
        self.address = address  # a Cluster primary's host and port
        self.locate = locate  # where the master is now (Sentinel: asked at each connect)
        self.state = "down"  # "up" while connected and tracking
        self.sock: Any = None
        self.reader: Any = None
        self.fd = -1
        self.generation = 0
        self.probe = _pack(("ROLE",))
        self.sent = 0.0  # send time of the probe in flight (0: none)
        self.proven = NEVER  # send time of the last answered probe
        self.timeout = max(2.0, near.settings.socket_timeout)
        # One log line per incident. A lost connection is reported once the thread knows
        # what it was: back at once (Redis answers: its own connection was killed or
        # timed out) is a WARNING; Redis unreachable is an outage, which the circuit
        # breaker reports with a WARNING for every component, so the near cache only
        # says at INFO what it does meanwhile.
        self.loss: str | None = None  # why the connection was lost, not reported yet
        self.incident = False  # a failure to connect was logged, and it is not back yet
        self.stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"redis-middleware-near {where}")

    # -- the request path (the near cache's lock held) ---------------------------------
    def drain(self, now: float) -> None:
        """Read what is pending and apply it."""
        sock, reader = self.sock, self.reader
        while True:
            try:
                data = sock.recv(_READ)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self.lost(f"{type(exc).__name__}: {exc}")
                return
            if not data:
                self.lost("closed by the server")
                return
            reader.feed(data)
        store = self.near.store
        while True:
            try:
                frame = reader.gets()
            except hiredis.ProtocolError as exc:
                self.lost(f"unreadable reply: {exc}")
                return
            if frame is _MORE:
                return
            kind, keys = decide.classify(frame, type(frame) is hiredis.PushNotification)
            if kind == decide.INVALIDATE:
                store.invalidate(keys)
            elif kind == decide.ANSWER:
                if self.sent:
                    self.proven, self.sent = self.sent, 0.0
                    self.near.recompute()
            elif kind == decide.FLUSH:
                store.flush("flushdb")
            elif kind == decide.DEMOTED:
                self.lost("the server is not a master any more", "failover")
                return
            elif kind == decide.BROKEN:
                self.lost(f"the server said {frame!r}")
                return

    def lost(self, why: str, reason: str = "disconnect") -> None:
        """Empty the memory and close; the thread connects again."""
        if self.state != "up":
            return
        self._detach()
        self.near.store.flush(reason)
        self.near.recompute()
        if self.loss is None:
            self.loss = why  # reported when the thread has tried to connect again
        self.wake()
        self.near.tracker_lost()

    def _detach(self) -> None:
        near = self.near
        self.state = "down"
        if self.sock is not None:
            near.unwatch(self.fd)
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.reader = None
        self.fd = -1

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (already woken) or closed
            pass

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        waiter = select.epoll()
        waiter.register(self._wake_r.fileno(), select.EPOLLIN)
        try:
            self._loop(waiter)
        finally:
            waiter.close()
            with self.near.lock:
                if self.sock is not None:
                    self._detach()
            self._wake_r.close()
            self._wake_w.close()

    def _loop(self, waiter: Any) -> None:
        watched, watched_fd = 0, -1
        delay = RECONNECT[0]
        while not self.stopped:
            if self.state == "down":
                try:
                    self._connect()
                    delay = RECONNECT[0]
                except _Refused as exc:
                    self.near.refused(str(exc))
                    return
                except Exception as exc:  # OSError, a Sentinel naming no master, ...
                    if not self.incident:  # once per incident; an outage is the breaker's
                        unreachable = isinstance(exc, OSError) and not isinstance(
                            exc, _Answered)
                        lost = f" (the tracking connection was lost: {self.loss})" if (
                            self.loss) else ""
                        (logger.info if unreachable else logger.warning)(
                            "near cache: connecting to %s failed: %s%s; memory emptied, "
                            "reads go to Redis until it tracks", self.where, exc, lost)
                    self.incident, self.loss = True, None
                    self._pause(delay)
                    delay = min(delay * 2, RECONNECT[1])
                    continue
            if watched != self.generation:
                if watched_fd >= 0:
                    try:
                        waiter.unregister(watched_fd)
                    except (OSError, ValueError):  # closed meanwhile: gone already
                        pass
                    watched_fd = -1
                with self.near.lock:
                    if self.state == "up":
                        waiter.register(self.fd, select.EPOLLIN)
                        watched, watched_fd = self.generation, self.fd
            for fd, _ in waiter.poll(PROBE_EVERY):
                if fd == self._wake_r.fileno():
                    self._wake_r.recv(4096)
            with self.near.lock:
                if self.state != "up" or self.stopped:
                    continue
                now = time.monotonic()
                self.drain(now)
                if self.state != "up":
                    continue
                if self.sent and now - self.sent > self.timeout:
                    self.lost(f"no answer to the probe for {now - self.sent:.1f}s")
                elif not self.sent and now - self.proven >= PROBE_EVERY:
                    self.send_probe(now)

    def _pause(self, seconds: float) -> None:
        """Sleep, unless woken (closed)."""
        readable, _, _ = select.select([self._wake_r], [], [], seconds)
        if readable:
            self._wake_r.recv(4096)

    def send_probe(self, now: float) -> None:
        try:
            sent = self.sock.send(self.probe)  # a few bytes: never blocks in practice
        except OSError as exc:
            self.lost(f"probe not sent: {exc}")
            return
        if sent != len(self.probe):
            self.lost("probe not sent: the send buffer is full")
            return
        self.sent = now

    def _connect(self) -> None:
        """Open, authenticate, check the role, turn tracking on (blocking: this thread)."""
        near = self.near
        ep = self.locate()
        link = Link(ep)
        try:
            protocol = ep.current_protocol
            reply = link.call(*decide.hello(protocol, ep.username, ep.password))
            if protocol == 3 and decide.hello_refused(reply):
                protocol = 2
                reply = link.call(*decide.hello(2, ep.username, ep.password))
            if isinstance(reply, Exception):
                raise _Answered(f"the server refused the session: {reply}")
            if protocol == 2:
                link.call("CLIENT", "SETNAME", decide.NAME)  # a courtesy: refusals ignored
            probe: tuple[str, ...] = ("ROLE",)
            role = link.call("ROLE")
            if isinstance(role, Exception):
                probe = ("PING",)  # ROLE refused (an ACL): demotions are seen as kills
            elif not role or role[0] != b"master":
                raise _Answered(f"{self.where} is not a master")
            own_id = None
            if protocol == 2:
                probe = ("PING",)  # the only useful command in RESP2's Pub/Sub mode
                own_id = link.call("CLIENT", "ID")
                if decide.refusal(own_id):
                    raise _Refused(f"CLIENT ID: {own_id}")
            for command in decide.tracking(protocol, near.prefixes, own_id, near.channel):
                reply = link.call(*command)
                if decide.refusal(reply):
                    raise _Refused(f"{' '.join(map(str, command[:2]))}: {reply}")
                if isinstance(reply, Exception):
                    raise _Answered(f"{command[0]} failed: {reply}")
        except BaseException:
            link.close()
            raise
        link.sock.setblocking(False)
        with near.lock:
            if self.stopped:
                link.close()
                return
            self.sock, self.reader, self.fd = link.sock, link.reader, link.sock.fileno()
            self.probe = _pack(probe)
            self.generation += 1
            self.state = "up"
            self.sent, self.proven = 0.0, NEVER
            near.watch(self.fd, self)
            # Nothing read before this connection listened may be served or stored.
            near.store.flush("")
            # Up: what is reported is taken now, under the lock, so that a loss from here
            # on (the probe below, a request's read) is another incident.
            loss, self.loss = self.loss, None
            back, self.incident = self.incident, False
            self.send_probe(time.monotonic())
            near.recompute()
        if loss is not None:  # lost, and back at once: Redis answered all along
            logger.warning("near cache: the tracking connection to %s was lost (%s); memory "
                           "emptied, tracking again", self.where, loss)
        elif back:
            logger.info("near cache: tracking %s again", self.where)

    def start(self) -> None:
        self.thread.start()

    def stop(self, join: bool) -> None:
        """Stop the thread, which closes the connection as it ends (the near cache's
        lock not held when ``join``)."""
        self.stopped = True
        self.wake()
        if join and self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5)

    def forsake(self) -> None:
        """In a forked child, where the thread does not exist: close this process's copies
        of the descriptors, touching neither the connection nor the shared epoll."""
        self.stopped = True
        for end in (self.sock, self._wake_r, self._wake_w):
            if end is not None:
                try:
                    end.close()
                except OSError:
                    pass
        self.sock = None
