"""The near cache, decided without I/O: the memory, and what the tracking connection says.

A near cache keeps hot values in the process and serves them with no round trip; Redis
tells the process when a key under our prefixes changes (``CLIENT TRACKING ... BCAST``:
every write to a matching key, by anyone, is pushed to our tracking connection). The
connection, its thread and the drain before every hit are the Redis floor's
(``_redis/tracking.py``); this module holds what they decide with:

- :class:`NearStore`: the memory. An LRU bounded by entries and by bytes; every entry has
  a deadline, ``min(now + near_cache_ttl, the key's own expiry)``: Redis sends an
  invalidation on expiry only when it deletes the key (its active cycle, a lazy access),
  which may be much later. A read in flight holds a :class:`Ticket`, taken before its
  command is sent; an invalidation of its key, or a flush, voids it, so a reply that
  raced a write is never stored.
- :func:`freeze` and :func:`thaw`: a value a caller may mutate is kept as a ``marshal``
  image and each hit gets a fresh copy (cheapest of the safe ways: 0.65 µs for a 300-byte
  dict, against 0.8 µs for a hand-written recursive copy, 2.4 µs for ``json.loads`` and
  3.6 µs for ``copy.deepcopy``).
- :func:`classify`: what one frame read on the tracking connection means.
- :func:`hello`, :func:`tracking`, :func:`refusal`: the handshake, and which error
  replies mean "this server will not track" (the near cache turns itself off).
- :class:`NearView`: what the cores call; :func:`near_for` gives a settings' one.
"""

from __future__ import annotations

import marshal
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from ...config.settings import Settings
from .. import metrics

__all__ = ["ENTRY_OVERHEAD", "MISS", "NAME", "NearStore", "NearView", "Ticket", "classify",
           "freeze", "hello", "hello_refused", "install", "near_for", "prefixes", "refusal", "thaw",
           "tracking"]

NAME = "redis-middleware-near"  # the tracking connection, as CLIENT LIST shows it
# What an entry costs beyond its key and value: the OrderedDict node, the dict slot, the
# tuple and its float (measured 302-321 bytes over 1,000,000 keys).
ENTRY_OVERHEAD = 300
INVALIDATE_CHANNEL = "__redis__:invalidate"  # RESP2: where redirected invalidations go


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS: Final[Any] = _Miss()  # not in memory (None is a value)


# -- the memory ---------------------------------------------------------------------------
class _Reads:
    """The open tickets of one key; voided as a whole when the key changes."""

    __slots__ = ("open", "void")

    def __init__(self) -> None:
        self.open = 0
        self.void = False


class Ticket:
    """A read of ``key`` in flight: taken before its command is sent."""

    __slots__ = ("epoch", "key", "reads")

    def __init__(self, key: str, epoch: int, reads: _Reads) -> None:
        self.key, self.epoch, self.reads = key, epoch, reads


class NearStore:
    """The LRU of one near cache (the caller holds its lock around every method).

    ``max_entries`` and ``max_bytes`` bound it (an entry counts its key, its ``size`` and
    :data:`ENTRY_OVERHEAD`; one over an eighth of ``max_bytes`` is not kept, so that one
    value cannot crowd out the rest); ``ttl``: seconds an entry is served at most.
    """

    def __init__(self, max_entries: int, max_bytes: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.bytes = 0
        self.epoch = 0  # bumped by a flush: every ticket taken before it is void
        self.hits = self.misses = self.invalidations = self.evictions = self.refused = 0
        self._data: OrderedDict[str, tuple[Any, float, int]] = OrderedDict()
        self._reading: dict[str, _Reads] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, now: float) -> Any:
        """The kept value (as :func:`freeze` made it), or :data:`MISS`."""
        found = self._data.get(key)
        if found is None or now >= found[1]:
            if found is not None:
                del self._data[key]
                self.bytes -= found[2]
            self.misses += 1
            if metrics.hook is not None:
                metrics.hook.near("miss")
            return MISS
        self._data.move_to_end(key)
        self.hits += 1
        if metrics.hook is not None:
            metrics.hook.near("hit")
        return found[0]

    def begin(self, key: str) -> Ticket:
        """A ticket for a read of ``key`` about to be sent (several may be open)."""
        reads = self._reading.get(key)
        if reads is None:
            if len(self._reading) >= 4 * self.max_entries + 1024:
                # Reads that never ended (a flow dropped mid-way): forget them all, and
                # void their tickets, which no invalidation can reach any more.
                self._reading.clear()
                self.epoch += 1
            reads = self._reading[key] = _Reads()
        reads.open += 1
        return Ticket(key, self.epoch, reads)

    def fits(self, key: str, size: int) -> bool:
        """Whether a value of ``size`` bytes under ``key`` may be kept at all (checked
        before copying it: a value too large for memory is not copied for nothing)."""
        return size + len(key) + ENTRY_OVERHEAD <= self.max_bytes // 8

    def store(self, ticket: Ticket, value: Any, size: int, now: float,
              ttl: float | None = None) -> bool:
        """Keep the reply of ``ticket``'s read, unless the key changed since it was taken.

        ``size``: the value's bytes as Redis held them; ``ttl``: seconds the key itself
        had left (None: no expiry)."""
        if not self._end(ticket):
            self.refused += 1
            return False
        key = ticket.key
        if not self.fits(key, size):
            return False
        size += len(key) + ENTRY_OVERHEAD
        deadline = now + (self.ttl if ttl is None or ttl > self.ttl else ttl)
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        data[key] = (value, deadline, size)
        self.bytes += size
        evicted = 0
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= data.popitem(last=False)[1][2]
            evicted += 1
        if evicted:
            self.evictions += evicted
            if metrics.hook is not None:
                metrics.hook.near("eviction", count=evicted)
        return True

    def abandon(self, ticket: Ticket) -> None:
        """The read ended without a value to keep."""
        self._end(ticket)

    def live(self, ticket: Ticket) -> bool:
        """Whether nothing voided ``ticket`` yet: its key has not changed, nothing was
        flushed, since it was taken."""
        return not ticket.reads.void and ticket.epoch == self.epoch

    def _end(self, ticket: Ticket) -> bool:
        """Close ``ticket``; whether it was still valid."""
        reads = ticket.reads
        reads.open -= 1
        if reads.open <= 0 and self._reading.get(ticket.key) is reads:
            del self._reading[ticket.key]
        return self.live(ticket)

    def invalidate(self, keys: Iterable[str]) -> int:
        """Redis says ``keys`` changed (or this process changed them): drop them and void
        their open tickets. Returns how many kept entries were dropped."""
        data, reading = self._data, self._reading
        dropped = 0
        for key in keys:
            found = data.pop(key, None)
            if found is not None:
                self.bytes -= found[2]
                dropped += 1
            reads = reading.pop(key, None)
            if reads is not None:
                reads.void = True
        if dropped:
            self.invalidations += dropped
            if metrics.hook is not None:
                metrics.hook.near("invalidation", count=dropped)
        return dropped

    def flush(self, reason: str) -> None:
        """Anything kept may be stale (a lost connection, FLUSHDB, an open breaker):
        forget everything and void every open ticket. ``reason`` labels the metric."""
        self._data.clear()
        self._reading.clear()
        self.bytes = 0
        self.epoch += 1
        if metrics.hook is not None:
            metrics.hook.near("flush", reason)


# -- values a caller may change ---------------------------------------------------------------
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


class _Image(bytes):
    """A value kept as its ``marshal`` image: every hit gets a copy of its own."""

    __slots__ = ()


def freeze(value: Any, builtin: bool = False) -> Any:
    """What to keep for ``value`` so that each hit gets an object of its own: immutable
    scalars as they are, containers of builtin types as a ``marshal`` image; MISS for a
    value that cannot be copied that way (an instance of a class of the app, a
    ``bytearray``): it is not kept, its reads go to Redis. ``builtin``: the value is
    known to hold builtin types only (what JSON or msgpack decode), nothing to check."""
    if type(value) in _SCALARS:
        return value
    if not builtin and not _marshals_exactly(value):
        return MISS
    try:
        return _Image(marshal.dumps(value))
    except ValueError:  # "unmarshallable object": nested too deep for marshal
        return MISS


_LEAVES = frozenset({str, bytes, int, float, complex, bool, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset})


def _marshals_exactly(value: Any) -> bool:
    """Whether ``marshal`` gives ``value`` back with the same types: only builtin
    containers and scalars. (It writes any other object with a buffer, a bytearray or an
    array, as bytes, and refuses the rest, subclasses of the builtins included.) Runs
    when a value is kept, not per hit."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _LEAVES:
            continue
        if id(item) in seen:  # shared, or holding itself (pickle can give both)
            continue
        seen.add(id(item))
        if kind in _CONTAINERS:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            return False
    return True


def thaw(kept: Any) -> Any:
    """The value :func:`freeze` kept, as a fresh object."""
    if type(kept) is _Image:
        return marshal.loads(kept)
    return kept


# -- the tracking connection ------------------------------------------------------------------
def prefixes(key_prefix: str) -> tuple[str, ...]:
    """The key prefixes a near cache tracks: the data cache's and the response cache's
    (``keys.py``: every key is ``<prefix>:<component>:...``)."""
    return (f"{key_prefix}:data:", f"{key_prefix}:cache:")


def hello(protocol: int, username: str | None, password: str | None) -> tuple[Any, ...]:
    """The first command: RESP3 with the credentials and the connection's name, or (RESP2)
    the credentials alone (the name then follows as ``CLIENT SETNAME``)."""
    if protocol == 3:
        auth = ("AUTH", username or "default", password) if password is not None else ()
        return ("HELLO", 3, *auth, "SETNAME", NAME)
    if password is None:
        return ("PING",)
    return ("AUTH", *((username,) if username else ()), password)


def tracking(protocol: int, tracked: Sequence[str], own_id: int | None, channel: str
             ) -> list[tuple[Any, ...]]:
    """The commands that turn tracking on, after :func:`hello`.

    RESP3: invalidations are pushed on this connection, which also ``SUBSCRIBE``s to a
    channel nobody publishes on: that makes it a Pub/Sub client for the server, whose
    output buffer is bounded (32 MB), where a plain client's is not, so a process that
    stops reading is dropped instead of growing the server's memory. RESP2: the
    connection redirects its own invalidations to itself and subscribes to the channel
    they come on (``own_id``: its ``CLIENT ID``)."""
    command: list[Any] = ["CLIENT", "TRACKING", "ON", "BCAST"]
    for prefix in tracked:
        command += ["PREFIX", prefix]
    if protocol == 3:
        return [tuple(command), ("SUBSCRIBE", channel)]
    return [(*command, "REDIRECT", own_id), ("SUBSCRIBE", INVALIDATE_CHANNEL)]


def refusal(reply: Any) -> bool:
    """Whether an error reply to a tracking command means the server will not track
    (``CLIENT`` renamed away or unknown, an ACL without ``client|tracking``, a server
    without BCAST or PREFIX): then the near cache is off for the life of the process.
    A passing state (``LOADING`` after a restart, ``BUSY``, ``MASTERDOWN``, bad
    credentials) is not a refusal: the connection is tried again."""
    if not isinstance(reply, Exception) or isinstance(reply, OSError):
        return False
    text = str(reply)
    return text.startswith(("ERR", "NOPERM")) or "unknown command" in text.lower()


def hello_refused(reply: Any) -> bool:
    """Whether an error reply to ``HELLO`` means "speak RESP2" (an old server, a
    RESP2-only proxy, ``HELLO`` renamed away), not bad credentials."""
    text = str(reply)
    return isinstance(reply, Exception) and (
        "unknown command" in text.lower() or text.startswith("NOPROTO"))


# What one frame read on the tracking connection means.
INVALIDATE = "invalidate"  # the keys changed: forget them
FLUSH = "flush"  # everything may have changed (FLUSHDB, FLUSHALL)
ANSWER = "answer"  # the probe's answer: the node is a master (or, after PING, alive)
DEMOTED = "demoted"  # the node is not a master any more: nothing written reaches it
BROKEN = "broken"  # the server says the invalidations stopped, or refused the probe
IGNORE = "ignore"  # subscribe confirmations, other pushes


def classify(frame: Any, push: bool) -> tuple[str, list[str]]:
    """What ``frame`` means, and the keys it names (``push``: a RESP3 push frame).

    RESP3: ``>2 invalidate [keys]`` (a null list after FLUSHDB/FLUSHALL), and
    ``tracking-redir-broken``; RESP2: ``message __redis__:invalidate [keys]``. Anything
    else that is not a push is the probe's answer (``ROLE``, or ``PING`` in Pub/Sub
    mode)."""
    if push or (type(frame) is list and frame and frame[0] == b"message"):
        kind = frame[0] if frame else b""
        if kind == b"invalidate" or (kind == b"message" and len(frame) == 3 and (
                frame[1] == INVALIDATE_CHANNEL.encode())):
            keys = frame[-1]
            if keys is None:
                return FLUSH, []
            if type(keys) is not list:  # a single key as a bulk string
                keys = [keys]
            return INVALIDATE, [k.decode("utf-8", "surrogateescape") for k in keys]
        if kind == b"tracking-redir-broken":
            return BROKEN, []
        return IGNORE, []
    if isinstance(frame, Exception):
        return BROKEN, []
    if type(frame) is list and frame:
        head = frame[0]
        if head in (b"slave", b"replica", b"sentinel"):
            return DEMOTED, []
        if head in (b"subscribe", b"psubscribe"):
            return IGNORE, []
    return ANSWER, []


# -- what the cores call ------------------------------------------------------------------------
class NearView(Protocol):
    """A near cache as the cores see it (``_redis/near.NearCache``). Every method is
    safe from any thread and from coroutines (it never blocks: a lock held for
    microseconds, a non-blocking read of the invalidations already received)."""

    def get(self, key: str) -> Any:
        """The value kept for ``key`` (a fresh copy when it was put with ``copy``), or
        :data:`MISS`; pending invalidations are applied first."""

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """:meth:`get` of several keys, under one lock and one drain."""

    def ticket(self, key: str) -> Ticket | None:
        """Before sending a read of ``key``: its ticket (None: nothing may be kept now)."""

    def put(self, ticket: Ticket | None, value: Any, size: int, ttl_ms: float | None = None,
            copy: bool = True, builtin: bool = False) -> bool:
        """After the read: keep ``value`` unless the key changed since the ticket
        (``builtin``: as for :func:`freeze`)."""

    def drop(self, ticket: Ticket | None) -> None:
        """After a read with nothing to keep (missing, failed)."""

    def valid(self, ticket: Ticket) -> bool:
        """Whether a read sent under ``ticket`` may still be kept (its key has not
        changed since): another reader may then share that read's reply."""

    def forget(self, *keys: str) -> None:
        """Around this process's own writes of ``keys``: before sending, and after."""

    def flush(self, reason: str = "") -> None:
        """Forget everything (a clear of keys this process cannot name)."""


_source: Callable[[Settings], NearView | None] | None = None


def install(source: Callable[[Settings], NearView | None] | None) -> None:
    """Set how a settings' near cache is found (the Redis floor does, on import)."""
    global _source
    _source = source


def near_for(settings: Settings) -> NearView | None:
    """The near cache of ``settings`` (their Redis and key prefix), or None when it is off
    (``near_cache_size`` 0) or no Redis floor is loaded (a core used alone)."""
    if not settings.near_cache_size or _source is None:
        return None
    return _source(settings)
