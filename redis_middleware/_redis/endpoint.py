"""The built-in client for a standalone Redis: where to connect, how to pack and finish.

The connections themselves are in ``wire_async`` (asyncio) and ``wire_sync``.

Why this is written by hand: redis-py's asyncio client takes a pooled connection per
command and holds it until the reply is read, so each command costs its own write,
wake-up and read. ``bench/`` measured ~100-130 µs of CPU per command that way with 16
requests in flight, against ~12 µs when every command issued during one turn of the
event loop shares one write and one read on one connection (automatic pipelining, as
ioredis and Lettuce do); redis-py has no such mode. The sync client keeps redis-py's
one-connection-per-thread model but skips its per-command layers (retry wrappers,
observability hooks, pool bookkeeping): ~60 µs instead of ~140 µs per round trip.

What is not redone here: redis-py parses the URL (``parse_url``), builds the TLS
context (``RedisSSLContext``), maps error replies to its exception classes
(``BaseParser.parse_error``) and post-processes replies with its response callbacks,
so every result is exactly what a redis-py client returns; hiredis packs commands and
parses replies. Cluster, Sentinel, ``memory://`` and Pub/Sub stay on redis-py.
"""

from __future__ import annotations

import inspect
import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
from redis import exceptions as rex
from redis._parsers.base import BaseParser
from redis.asyncio.connection import RedisSSLContext
from redis.connection import parse_url

from ..errors import ConfigError

__all__ = ["CLIENT_NAME", "Endpoint", "endpoint_for"]

Command = tuple[Any, ...]
CLIENT_NAME = "redis-middleware"  # as CLIENT LIST shows our connections
logger = logging.getLogger("redis_middleware")


class Negotiated:
    """What one server turned out to accept, learned by the first connection: RESP2
    when it refuses ``HELLO`` (RESP2-only proxies, renamed commands), no client name
    when it refuses ``CLIENT SETNAME``. Shared by every connection to that endpoint."""

    __slots__ = ("checked", "named", "protocol")

    def __init__(self) -> None:
        self.protocol: int | None = None
        self.named = True
        self.checked = False  # the server's version was looked at


# The newest command redis-middleware sends is XTRIM ... MINID (Redis 6.2): durable rooms
# trimmed by age. Valkey forked from Redis 7.2, so every Valkey release qualifies.
MIN_VERSION = (6, 2)


def too_old(hello: Any) -> str | None:
    """``"<server> <version>"`` when a ``HELLO`` reply names a server older than
    :data:`MIN_VERSION`; None when it is recent enough or says nothing of its version."""
    if not isinstance(hello, dict):
        return None
    fields = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in hello.items()}
    raw = fields.get("version")
    name = fields.get("server", b"redis")
    text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
    try:
        version = tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return None
    if len(version) < 2 or version >= MIN_VERSION:
        return None
    return f"{name.decode() if isinstance(name, bytes) else name} {text}"


def _refused(reply: Any) -> bool:
    """An error reply that means the command does not exist here (not a bad password)."""
    text = str(reply)
    return isinstance(reply, Exception) and not isinstance(reply, rex.ConnectionError) and (
        "unknown command" in text.lower() or text.startswith("NOPROTO"))
Replies = list[Any]

# The URL options implemented here. A URL carrying any other option is served by
# redis-py's client instead, so no option is silently ignored.
_OPTIONS = frozenset({
    "host", "port", "path", "db", "username", "password", "protocol", "connection_class",
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
    "ssl_password", "ssl_check_hostname", "ssl_ciphers", "ssl_min_version",
})
# RedisSSLContext argument -> URL option.
_TLS_ARGS = {
    "keyfile": "ssl_keyfile", "certfile": "ssl_certfile", "cert_reqs": "ssl_cert_reqs",
    "ca_certs": "ssl_ca_certs", "ca_path": "ssl_ca_path", "check_hostname": "ssl_check_hostname",
    "min_version": "ssl_min_version", "ciphers": "ssl_ciphers", "password": "ssl_password",
}
# What this redis-py's RedisSSLContext takes (ca_path and password: redis-py 8.0+).
_SSL_CONTEXT_ARGS = frozenset(inspect.signature(RedisSSLContext.__init__).parameters)
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")  # SO_RCVTIMEO takes a struct timeval
_MORE = object()  # hiredis: "not enough data yet" (False is a valid RESP3 reply)


class _ErrorReply(rex.ResponseError):
    """hiredis builds error replies with this: it returns redis-py's class for the code
    (NOSCRIPT -> NoScriptError, READONLY -> ReadOnlyError, LOADING -> BusyLoadingError)."""

    def __new__(cls, message: str) -> Any:
        return BaseParser.parse_error(message)  # type: ignore[no-untyped-call]


def _reader() -> Any:
    return hiredis.Reader(replyError=_ErrorReply, notEnoughData=_MORE)


def _callbacks(protocol: int) -> dict[str, Callable[[Any], Any]]:
    client = redis.Redis(protocol=protocol)  # only for its table: no connection is made
    table = {str(name).upper(): cb for name, cb in client.response_callbacks.items()}
    client.close()
    return table


_CALLBACKS: dict[int, dict[str, Callable[[Any], Any]]] = {}


def _table(protocol: int) -> dict[str, Callable[[Any], Any]]:
    """redis-py's response callbacks for ``protocol``, by command name."""
    return _CALLBACKS.get(protocol) or _CALLBACKS.setdefault(protocol, _callbacks(protocol))


def _pack(commands: Sequence[Command]) -> bytes:
    if len(commands) == 1:
        return bytes(hiredis.pack_command(commands[0]))
    return b"".join([hiredis.pack_command(c) for c in commands])


def _finish(commands: Sequence[Command], replies: Replies, protocol: int) -> Replies:
    """Apply redis-py's response callbacks, as its client does for ``execute_command``."""
    table = _table(protocol)
    for i, command in enumerate(commands):
        callback = table.get(command[0])
        if callback is not None and not isinstance(replies[i], Exception):
            replies[i] = callback(replies[i])
    return replies


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: decided once from the URL and the settings."""

    host: str
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    protocol: int
    tls: RedisSSLContext | None
    connect_timeout: float
    timeout: float
    negotiated: Negotiated = field(default_factory=Negotiated, compare=False, repr=False)

    @property
    def where(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    @property
    def current_protocol(self) -> int:
        """The protocol connections speak: the URL's, unless the server refused RESP3."""
        return self.negotiated.protocol or self.protocol

    def setup(self) -> list[Command]:
        """The commands that open a session: protocol, credentials, name, database."""
        out: list[Command] = []
        if self.current_protocol == 3:
            hello: list[Any] = ["HELLO", 3]
            if self.password is not None:
                hello += ["AUTH", self.username or "default", self.password]
            out.append((*hello, "SETNAME", CLIENT_NAME))
        else:
            if self.password is not None:
                out.append(("AUTH", *((self.username,) if self.username else ()), self.password))
            if self.negotiated.named:
                out.append(("CLIENT", "SETNAME", CLIENT_NAME))
        if self.db:
            out.append(("SELECT", self.db))
        return out

    def check_setup(self, replies: Replies) -> bool:
        """Whether the session is ready; False: the server refused ``HELLO``, so the
        caller sends :meth:`setup` again on the same connection, now in RESP2."""
        first = replies[0] if replies else None
        if self.current_protocol == 3 and _refused(first):
            self.negotiated.protocol = 2
            logger.warning("Redis at %s refuses HELLO (%s): speaking RESP2", self.where, first)
            return False
        if not self.negotiated.checked:
            self.negotiated.checked = True
            old = too_old(first) if self.current_protocol == 3 else None
            if old is not None:
                logger.error("Redis at %s is %s: redis-middleware needs Redis 6.2 or newer "
                             "(or any Valkey); presence's last-seen queries will fail there",
                             self.where, old)
        for command, reply in zip(self.setup(), replies, strict=False):
            if command[:2] == ("CLIENT", "SETNAME") and _refused(reply):
                self.negotiated.named = False  # a name is a courtesy, not a need
                logger.warning("Redis at %s refuses CLIENT SETNAME (%s): connections stay "
                               "unnamed", self.where, reply)
                continue
            if isinstance(reply, rex.ConnectionError):  # AuthenticationError is one
                raise reply
            if isinstance(reply, Exception):
                raise rex.ConnectionError(f"Redis at {self.where} refused the session: {reply}")
        return True

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        try:
            return self.tls.get()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise rex.ConnectionError(f"TLS setup for {self.where} failed: {exc}") from exc


def endpoint_for(url: str, connect_timeout: float, timeout: float) -> Endpoint | None:
    """The endpoint of a ``redis://``, ``rediss://`` or ``unix://`` URL, or None when
    the URL has options only redis-py implements."""
    options = parse_url(url)  # type: ignore[no-untyped-call]
    if set(options) - _OPTIONS:
        return None
    tls = None
    if url.startswith("rediss://"):
        given = {name: options[key] for name, key in _TLS_ARGS.items() if key in options}
        unsupported = sorted(_TLS_ARGS[n] for n in given if n not in _SSL_CONTEXT_ARGS)
        if unsupported:
            raise ConfigError("REDIS_URL", f"{', '.join(unsupported)} needs redis-py 8.0 or "
                              f"newer (installed: {redis.__version__})")
        defaults: dict[str, Any] = {"cert_reqs": "required", "check_hostname": True}
        if str(given.get("cert_reqs", "")).lower() in ("none", str(ssl.CERT_NONE)):
            defaults["check_hostname"] = False  # nothing verified: no name to check
        tls = RedisSSLContext(**{**defaults, **given})  # redis-py's sync client's defaults
    return Endpoint(
        host=options.get("host", "localhost"), port=int(options.get("port", 6379)),
        path=options.get("path"), db=int(options.get("db", 0)),
        username=options.get("username"), password=options.get("password"),
        protocol=int(options.get("protocol", 3)), tls=tls,
        connect_timeout=connect_timeout, timeout=timeout,
    )
