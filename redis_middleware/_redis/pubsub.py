"""The shared Pub/Sub subscription of one event loop: many channels, one connection
(one per owning node on a Cluster, where channels are sharded), re-established after a
failure — on a Cluster, on whichever node serves the channels' slots by then (a failover
promoted a replica, a reshard moved slots). redis-py's asyncio Pub/Sub does the protocol;
this adds sharing, confirmation of each (un)subscribe, liveness pings and resubscription."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from .._tasks import stop_tasks
from ..errors import RedisMiddlewareError
from .connections import RedisConnections

__all__ = ["SharedPubSub"]

logger = logging.getLogger("redis_middleware")

Deliver = Callable[[str, bytes], None]
Resumed = Callable[[list[str]], Awaitable[None]]

# A link that heard nothing (no message, no pong) for PING_AFTER seconds pings; one
# that still hears nothing DEAD_AFTER seconds later is dropped and reconnected: a
# blackholed connection is noticed even in a silent room.
PING_AFTER = 10.0
DEAD_AFTER = 10.0
_PUSH = frozenset({"message", "smessage"})
_CONFIRM = frozenset({"subscribe", "ssubscribe", "unsubscribe", "sunsubscribe"})


class SharedPubSub:
    """Channels of one event loop, subscribed once each, whatever the number of local
    subscribers; ``deliver(channel, payload)`` is called for every message (it must not
    block), ``resumed(channels)`` after a lost connection was subscribed again."""

    def __init__(self, conns: RedisConnections, deliver: Deliver, resumed: Resumed) -> None:
        self.conns = conns
        self.deliver = deliver
        self.resumed = resumed
        self.sharded = conns.target.kind == "cluster"
        self._links: dict[str, _Link] = {}
        self._where: dict[str, _Link] = {}

    @property
    def connections(self) -> int:
        """Open Pub/Sub connections (one without a Cluster)."""
        return sum(1 for link in self._links.values() if link.pubsub is not None)

    async def add(self, channel: str, wait: float | None = None) -> bool:
        """Subscribe ``channel``; True once Redis confirmed it (False: not within ``wait``
        seconds; the subscription is made when the connection comes back)."""
        link = self._where.get(channel)
        if link is None:
            link = await self._link_for(channel)
            self._where[channel] = link
        return await link.add(channel, self._wait(wait))

    async def discard(self, channel: str) -> None:
        """Unsubscribe ``channel`` (the last local subscriber left)."""
        link = self._where.pop(channel, None)
        if link is not None:
            await link.discard(channel, self._wait(None))
            if not link.channels:
                self._links.pop(link.key, None)
                await link.aclose()

    async def aclose(self) -> None:
        links, self._links, self._where = list(self._links.values()), {}, {}
        for link in links:
            await link.aclose()

    def _wait(self, wait: float | None) -> float:
        s = self.conns.settings
        return wait if wait is not None else s.connect_timeout + 2 * s.socket_timeout

    async def rehome(self, link: _Link) -> None:
        """A Cluster link lost its node: find where each of its channels' slots is served
        now and move the channels there. Channels that go to another link are told they
        may have missed messages once that link has subscribed them."""
        homes: dict[str, list[str]] = {}
        for i, channel in enumerate(sorted(link.channels)):
            host, port = await self.conns.cluster_node_for(channel, refresh=i == 0)
            homes.setdefault(f"{host}:{port}", []).append(channel)
        if link.key in homes:
            del homes[link.key]  # these stay
        elif len(homes) == 1 and next(iter(homes)) not in self._links:
            self._links.pop(link.key, None)  # the usual failover: the link moves whole
            link.key = next(iter(homes))
            self._links[link.key] = link
            return
        for key, found in homes.items():
            channels = [c for c in found if c in link.channels]  # not left meanwhile
            if not channels:
                continue
            target = self._links.get(key)
            if target is None:
                target = self._links[key] = _Link(self, key)
            for channel in channels:
                link.give(channel, target)
                self._where[channel] = target
            await target.adopt(channels, self._wait(None))
        if not link.channels and self._links.get(link.key) is link:
            del self._links[link.key]

    async def _link_for(self, channel: str) -> _Link:
        key = ""
        if self.sharded:  # the node that owns the channel's slot
            host, port = await self.conns.cluster_node_for(channel)
            key = f"{host}:{port}"
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(self, key)
        return link


class _Link:
    """One Pub/Sub connection and the channels it carries."""

    def __init__(self, owner: SharedPubSub, key: str) -> None:
        self.owner = owner
        self.key = key
        self.channels: set[str] = set()
        self.client: Any = None
        self.pubsub: Any = None
        self.task: asyncio.Task[None] | None = None
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._resume: set[str] = set()  # came from a lost link: may have missed messages
        self._heard = time.monotonic()
        self._pinged = False

    # -- channels -----------------------------------------------------------------
    async def add(self, channel: str, wait: float) -> bool:
        if channel in self.channels and channel not in self._confirmed:
            return True
        self.channels.add(channel)
        confirmed = self._confirmed.setdefault(
            channel, asyncio.get_running_loop().create_future())
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="redis-middleware-pubsub")
        elif self.pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._command("SUBSCRIBE", [channel])
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), wait)
            return True
        except TimeoutError:
            return False

    def give(self, channel: str, target: _Link) -> None:
        """Hand ``channel`` (and whoever waits for its confirmation) to ``target``."""
        self.channels.discard(channel)
        self._resume.discard(channel)
        target.channels.add(channel)
        target._resume.add(channel)
        confirmed = self._confirmed.pop(channel, None)
        if confirmed is not None:
            target._confirmed[channel] = confirmed

    async def adopt(self, channels: list[str], wait: float) -> None:
        """Subscribe channels another link lost; once confirmed, tell their subscribers
        (unless this link's own reconnection did it first)."""
        loop = asyncio.get_running_loop()
        futures = [self._confirmed.setdefault(c, loop.create_future()) for c in channels]
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="redis-middleware-pubsub")
        elif self.pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._command("SUBSCRIBE", channels)
        try:
            await asyncio.wait_for(asyncio.gather(*map(asyncio.shield, futures)), wait)
        except TimeoutError:
            return  # this link's own (re)connection resumes them
        await self._resumed([c for c in channels if c in self._resume])

    async def _resumed(self, channels: list[str]) -> None:
        mine = [c for c in channels if c in self.channels]
        self._resume.difference_update(channels)
        if mine:
            logger.warning("real-time subscription to Redis at %s restored (%d channels)",
                           self.owner.conns.name, len(mine))
            await self.owner.resumed(mine)

    async def discard(self, channel: str, wait: float) -> None:
        self.channels.discard(channel)
        self._confirmed.pop(channel, None)
        if self.pubsub is not None and self.channels:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._command("UNSUBSCRIBE", [channel])

    async def _command(self, verb: str, channels: list[str]) -> None:
        if not self.owner.sharded:
            await self.pubsub.execute_command(verb, *channels)
            return
        for channel in channels:  # one slot per SSUBSCRIBE: else CROSSSLOT
            await self.pubsub.execute_command("S" + verb, channel)

    # -- the connection -------------------------------------------------------------
    async def _run(self) -> None:
        backoff, lost = 0.1, False
        while self.channels:
            try:
                if lost and self.owner.sharded:
                    await self.owner.rehome(self)
                    if not self.channels:
                        break  # all of them are served by other nodes now
                self.client = self._client()
                self.pubsub = self.client.pubsub()
                wanted = sorted(self.channels)
                await self._command("SUBSCRIBE", wanted)
                self._heard, self._pinged = time.monotonic(), False
                await self._read_until_confirmed(set(wanted))
                if lost:
                    lost = False
                    self._resume.update(wanted)
                await self._resumed(sorted(self._resume.intersection(wanted)))
                backoff = 0.1
                await self._read()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError, TimeoutError, RedisMiddlewareError) as exc:
                if not lost:
                    lost = True
                    logger.warning("real-time subscription to Redis at %s lost (%s: %s); "
                                   "subscribing again", self.owner.conns.name,
                                   type(exc).__name__, exc)
            finally:
                await self._drop()
            if self.channels:
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    def _client(self) -> Any:
        conns = self.owner.conns
        if not self.owner.sharded:
            return conns.pubsub_client()
        host, _, port = self.key.rpartition(":")
        return conns.pubsub_client(host, int(port))

    async def _read_until_confirmed(self, pending: set[str]) -> None:
        deadline = time.monotonic() + self.owner._wait(None)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Redis did not confirm the subscriptions")
            message = await self.pubsub.get_message(timeout=min(left, 1.0))
            if message is not None:
                self._handle(message)
                if message["type"] in ("subscribe", "ssubscribe"):
                    pending.discard(_text(message["channel"]))

    async def _read(self) -> None:
        while self.channels:
            message = await self.pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                self._heard, self._pinged = now, False
                self._handle(message)
                continue
            quiet = now - self._heard
            if quiet >= PING_AFTER + DEAD_AFTER:
                raise TimeoutError(f"no answer from Redis for {quiet:.0f}s")
            if quiet >= PING_AFTER and not self._pinged:
                self._pinged = True
                await self.pubsub.ping()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind in _PUSH:
            self.owner.deliver(_text(message["channel"]), message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            confirmed = self._confirmed.pop(_text(message["channel"]), None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == "sunsubscribe" and _text(message["channel"]) in self.channels:
            # The slot moved (resharding): Redis dropped us; subscribe where it is now.
            raise redis.ConnectionError("shard channel moved to another node")

    async def _drop(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        client, self.client = self.client, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                for sentinel in getattr(client, "_rmw_sentinels", ()):
                    await sentinel.aclose()
                await client.aclose()

    async def aclose(self) -> None:
        self.channels.clear()
        task, self.task = self.task, None
        await stop_tasks(task, what="Pub/Sub reader")
        await self._drop()
        for future in self._confirmed.values():
            future.cancel()
        self._confirmed.clear()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
