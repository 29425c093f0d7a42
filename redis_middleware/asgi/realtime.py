"""Real-time fan-out for asyncio apps: publish to a room from any process, deliver to
every local subscriber of it over one shared Redis subscription per event loop; and a
WebSocket joined to a room (:func:`join_room`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .._redis.connections import RedisConnections, connections_for
from .._redis.pubsub import SharedPubSub
from .._tasks import Every, detach, finish, stop_tasks
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..errors import RedisMiddlewareError
from ..sansio.flow import Flow
from ..sansio.incidents import log_failure
from ..sansio.realtime.core import CatchUp, Published, RealtimeCore
from ..sansio.realtime.inbox import Inbox
from ..sansio.realtime.messages import Gap, Message
from ..sansio.realtime.rooms import REPLAY_TRIES, Rooms
from .presence import Presence

__all__ = ["Broadcast", "Gap", "Message", "Published", "RoomSocket", "Subscription",
           "join_room"]

logger = logging.getLogger("redis_middleware.realtime")
T = TypeVar("T")


class Broadcast:
    """Rooms of JSON messages, shared by every process of the app.

    Example::

        broadcast = Broadcast(settings)
        await broadcast.publish("room:123", {"text": "Hello!"})
        async with broadcast.subscribe("room:123") as messages:
            async for message in messages:     # Message, or Gap: you may have missed some
                ...

    Plain rooms are Redis Pub/Sub: at most once, and a subscriber is told (a
    :class:`Gap`) when it may have missed messages. Rooms matching
    ``realtime_durable_rooms`` are also kept in a Redis Stream and replayed after a
    reconnect, and from ``since=`` (a message's ``id``) when a client comes back.
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "realtime", options)
        self.core = RealtimeCore(self.settings)
        self.redis = connections_for(self.settings)

    async def publish(self, room: str, message: Any) -> Published:
        """Send ``message`` (JSON) to every subscriber of ``room``, in every process.

        One round trip. Raises ValueError for a message that is not JSON or is too
        large, :class:`~redis_middleware.RedisUnavailableError` when Redis is down.
        """
        return await self.redis.arun(self.core.publish_flow(room, message))

    async def history(self, room: str, limit: int = 50) -> list[Message]:
        """A durable room's latest ``limit`` messages, oldest first ([] for a plain room)."""
        if not self.core.durable(self.core.check_room(room)):
            return []
        return await self.redis.arun(self.core.history_flow(room, limit))

    @contextlib.asynccontextmanager
    async def subscribe(self, room: str, *, since: str | None = None
                        ) -> AsyncIterator[Subscription]:
        """Receive ``room``'s messages while the block runs.

        ``since``: in a durable room, first replay what was published after that
        message id (a reconnecting client's last id); ignored in a plain room. One that
        is no message id is not sent to Redis: the subscription starts with a
        :class:`Gap` (``reason="since"``). One the stream no longer keeps messages
        after (trimmed past it) starts with a gap ``trimmed``, then what is kept; one
        newer than anything the stream has (another Redis, a flush) with a gap
        ``future``.
        """
        hub = _hub(self.redis)
        subscription = Subscription(self, room)
        after = self.core.replay_after(room, since)
        if isinstance(after, Gap):  # a since that is no stream id: nothing to replay
            subscription.inbox.gap(after.reason)
            after = None
        elif after is not None:
            subscription.inbox.hold()
        await hub.join(self.core, room, subscription.inbox)
        try:
            if after is not None:  # one try: the subscriber waits for it
                found = await hub.catch_up(self.core, room, after)
                if found is None:
                    subscription.inbox.caught_up(None)
                else:
                    subscription.inbox.caught_up(found.messages, found.gap)
            yield subscription
        finally:
            subscription.inbox.close()
            await finish(hub.leave(self.core, room, subscription.inbox))

    def connections(self) -> int:
        """Pub/Sub connections this process's running event loop holds open for rooms."""
        hub = _hubs.get(asyncio.get_running_loop(), {}).get(id(self.redis))
        return hub.pubsub.connections if hub is not None else 0

    async def aclose(self) -> None:
        """Close this event loop's shared subscription (subscribers still open end)."""
        hub = _hubs.get(asyncio.get_running_loop(), {}).pop(id(self.redis), None)
        if hub is not None:
            await hub.aclose()


class Subscription:
    """What ``subscribe`` yields: an async iterator of :class:`Message` and :class:`Gap`,
    in the order published. Ends when the block ends; under the ``disconnect`` overflow
    policy a subscriber that fell too far behind gets
    :class:`~redis_middleware.SubscriberOverflow`."""

    def __init__(self, broadcast: Broadcast, room: str) -> None:
        broadcast.core.check_room(room)
        self.room = room
        self._ready = asyncio.Event()
        self.overflowed = asyncio.Event()  # set when the ``disconnect`` policy ended it
        # Called once when it overflows (a sender stuck on a client that stopped reading
        # is cancelled from here: no task per subscriber waits for it).
        self.on_overflow: Callable[[], object] | None = None
        s = broadcast.settings
        self.inbox = Inbox(room, s.realtime_queue_size, s.realtime_overflow, self._wake)

    def _wake(self) -> None:
        self._ready.set()
        if self.inbox.overflowed and not self.overflowed.is_set():
            self.overflowed.set()
            if self.on_overflow is not None:
                self.on_overflow()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message | Gap:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def get(self, timeout: float | None = None) -> Message | Gap | None:
        """The next item; None when the subscription ended or ``timeout`` passed."""
        while True:
            item = self.inbox.pop()
            if item is not None:
                return item
            if self.inbox.closed:
                return None
            self._ready.clear()
            if timeout is None:  # the common case: no timer per message
                await self._ready.wait()
                continue
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None

    @property
    def pending(self) -> int:
        """Items received and not read yet."""
        return len(self.inbox.queue)


class _Hub:
    """The rooms with local subscribers in one event loop (what to do with their
    messages is decided in ``sansio/realtime/rooms.py``), their shared subscription and
    the tasks that read back what a durable room's subscription skipped."""

    def __init__(self, conns: RedisConnections) -> None:
        self.conns = conns
        self.rooms = Rooms()
        self.healing: set[asyncio.Task[None]] = set()
        self.pubsub = SharedPubSub(conns, self._deliver, self._resumed)

    async def join(self, core: RealtimeCore, name: str, inbox: Inbox) -> None:
        await self.pubsub.add(self.rooms.join(core, name, inbox))

    async def leave(self, core: RealtimeCore, name: str, inbox: Inbox) -> None:
        channel = self.rooms.leave(core, name, inbox)
        if channel is not None:
            await self.pubsub.discard(channel)

    def _deliver(self, channel: str, payload: bytes) -> None:
        room = self.rooms.get(channel)
        after = room.deliver(payload) if room is not None else None
        if room is None or after is None:
            return

        async def read_back() -> None:
            found: list[Message] | None = None
            try:
                found = await self.replay(room.core, room.name, after, REPLAY_TRIES)
            finally:
                room.healed(found)

        task = asyncio.get_running_loop().create_task(read_back(),
                                                      name="redis-middleware-heal")
        self.healing.add(task)
        task.add_done_callback(self.healing.discard)

    async def _resumed(self, channels: list[str]) -> None:
        """After a lost connection: the rooms replay or mark a gap, one after another."""
        resume = self.rooms.resume(channels)
        found: list[Message] | None = None
        with contextlib.suppress(StopIteration):
            while True:
                room, after, tries = resume.send(found)
                found = await self.replay(room.core, room.name, after, tries)

    async def replay(self, core: RealtimeCore, room: str, after: str, tries: int
                     ) -> list[Message] | None:
        """A durable room's messages after ``after`` (None: Redis did not answer
        ``tries`` times, a little longer apart each time)."""
        return await self._tried(lambda: core.replay_flow(room, after), tries)

    async def catch_up(self, core: RealtimeCore, room: str, since: str) -> CatchUp | None:
        """What a new subscriber's ``since`` finds, with the gap before it when the
        stream cannot answer for it (None: Redis did not answer; one try: the subscriber
        waits for it)."""
        return await self._tried(lambda: core.since_flow(room, since), 1)

    async def _tried(self, make: Callable[[], Flow[T]], tries: int) -> T | None:
        for attempt in range(1, tries + 1):
            try:
                return await self.conns.arun(make())
            except RedisMiddlewareError as exc:
                if attempt == tries:
                    log_failure("realtime", "real-time replay skipped: %s", exc)
                    return None
                await asyncio.sleep(0.2 * attempt)
        return None

    async def aclose(self) -> None:
        await stop_tasks(*self.healing, what="room read-back")
        self.rooms.close()
        await self.pubsub.aclose()


# One hub per event loop and Redis target: every Broadcast of the process shares it.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Hub]] = (
    weakref.WeakKeyDictionary())


def _hub(conns: RedisConnections) -> _Hub:
    loop = asyncio.get_running_loop()
    hubs = _hubs.setdefault(loop, {})
    hub = hubs.get(id(conns))
    if hub is None:
        hub = hubs[id(conns)] = _Hub(conns)

        async def close() -> None:
            if hubs.get(id(conns)) is hub:
                del hubs[id(conns)]
            await hub.aclose()

        conns.on_aclose(close)
    return hub


# WebSocket close codes (RFC 6455 7.4.1).
NORMAL = 1000
TRY_AGAIN_LATER = 1013  # the client fell too far behind (the ``disconnect`` policy)
_END: Any = object()


class RoomSocket:
    """What :func:`join_room` yields.

    Iterate it for what the client sends (``str`` for text frames, ``bytes`` for binary
    ones); the iteration ends when either side goes away. A handler that only sends
    awaits :meth:`wait_closed` instead.
    """

    def __init__(self, websocket: Any, broadcast: Broadcast, room: str,
                 user: str | None, presence: Presence | None) -> None:
        self.websocket = websocket
        self.broadcast = broadcast
        self.room = room
        self.user = user
        self.presence = presence
        self.conn = "ws:" + secrets.token_hex(8)
        self._incoming: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self._closed = asyncio.Event()
        self.close_code: int | None = None  # set when we close the socket
        self.client_left = False

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Until the client left (or the room ended its subscription)."""
        await self._closed.wait()

    async def publish(self, message: Any) -> None:
        """Publish ``message`` to the room (every member, on every process, gets it)."""
        await self.broadcast.publish(self.room, message)

    async def members(self, limit: int = 100) -> list[str]:
        """Who is in the room now (needs ``presence``)."""
        if self.presence is None:
            return []
        return await self.presence.online_users(room=self.room, limit=limit)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[str | bytes]:
        while True:
            frame = await self._incoming.get()
            if frame is _END:
                self._incoming.put_nowait(_END)  # later readers end too
                return
            yield frame

    # -- the tasks: receiving, sending (and the renewal, an Every) ----------------------
    async def receive_loop(self) -> None:
        """Reads the client's frames; notices when it leaves (also for send-only
        handlers, which never read)."""
        try:
            while True:
                message = await self.websocket.receive()
                kind = message.get("type")
                if kind == "websocket.disconnect":
                    self.client_left = True
                    break
                if kind != "websocket.receive":
                    continue
                frame = message.get("text")
                if frame is None:
                    frame = message.get("bytes") or b""
                if self._incoming.full():  # a handler that does not read: keep it bounded
                    self._incoming.get_nowait()
                self._incoming.put_nowait(frame)
        except Exception:  # the connection broke under the server: the client is gone
            pass
        finally:
            self._end()

    async def send_loop(self, subscription: Subscription) -> None:
        """Forwards the room's messages (JSON envelopes, built once per message). A
        client too slow for the ``disconnect`` policy is closed with 1013, also while a
        send to it is stuck (it stopped reading): the overflow cancels the send."""
        this = asyncio.current_task()
        assert this is not None
        subscription.on_overflow = this.cancel
        try:
            try:
                async for item in subscription:
                    await self.websocket.send({"type": "websocket.send",
                                               "text": item.envelope()})
            except asyncio.CancelledError:
                if not subscription.overflowed.is_set():
                    raise  # the room's teardown
                this.uncancel()  # our own cancellation: the overflow
            except Exception:  # SubscriberOverflow, or the client went away while we sent
                pass
            if subscription.overflowed.is_set():
                logger.warning("closing a WebSocket of room %r: the client fell more than "
                               "%d messages behind", self.room, subscription.inbox.size)
                await self._close(TRY_AGAIN_LATER)
        finally:  # ended only now: the room's teardown must not cut the close short
            subscription.on_overflow = None
            self._end()

    def _renewal(self) -> Every:
        """Keeps the user's lease in the room while the socket is open."""
        assert self.presence is not None and self.user is not None
        return Every(self.presence.settings.presence_heartbeat_interval, self._present,
                     "room presence renewal")

    # -- presence ---------------------------------------------------------------------
    async def _present(self) -> bool:
        assert self.presence is not None and self.user is not None
        try:
            return await self.presence.heartbeat(self.user, room=self.room, conn=self.conn)
        except RedisMiddlewareError as exc:
            log_failure("presence", "room presence skipped: %s", exc)
            return False

    async def arrive(self) -> None:
        if self.presence is not None and self.user is not None and await self._present():
            await self._notice("online")

    async def _leave(self, tasks: list[asyncio.Task[None]]) -> None:
        """The teardown: the tasks stopped, the lease released, the socket closed if
        the client did not close it first (run to its end by :func:`finish`)."""
        await stop_tasks(*tasks, what="room task")
        await self.depart()
        if not self.client_left:
            await self._close(NORMAL)

    async def depart(self) -> None:
        """Release this connection's lease (after the grace period, so a reload does not
        flap); then, if the user has no other connection in the room, say they left."""
        presence, user = self.presence, self.user
        if presence is None or user is None:
            return
        try:
            await presence.redis.arun(presence.core.release_flow(user, self.conn, self.room))
        except RedisMiddlewareError as exc:
            log_failure("presence", "room presence skipped: %s", exc)
            return
        detach(self._left_after(presence.settings.presence_grace + 0.2))

    async def _left_after(self, delay: float) -> None:
        assert self.presence is not None and self.user is not None
        await asyncio.sleep(delay)
        try:
            await self.presence.sweep(room=self.room)
            if not await self.presence.is_online(self.user, room=self.room):
                await self._notice("offline")
        except RedisMiddlewareError as exc:
            log_failure("presence", "room presence skipped: %s", exc)

    async def _notice(self, status: str) -> None:
        try:
            await self.broadcast.publish(self.room, {"presence": status, "user": self.user})
        except RedisMiddlewareError as exc:
            log_failure("realtime", "presence notice not published: %s", exc)

    # -- endings ----------------------------------------------------------------------
    def _end(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            if self._incoming.full():  # make room for the end marker
                self._incoming.get_nowait()
            self._incoming.put_nowait(_END)

    async def _close(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            with contextlib.suppress(Exception):
                await self.websocket.send({"type": "websocket.close", "code": code})


@contextlib.asynccontextmanager
async def join_room(websocket: Any, broadcast: Broadcast, room: str, *,
                    user: str | None = None, presence: Presence | None = None,
                    since: str | None = None, accept: bool = True
                    ) -> AsyncIterator[RoomSocket]:
    """Join ``websocket`` (Starlette's / FastAPI's ``WebSocket``, or anything with the
    same ``accept()``, ``receive()`` and ``send(message)``) to ``room``.

    Example::

        @app.websocket("/ws/rooms/{room}")
        async def chat(websocket: WebSocket, room: str) -> None:
            user = websocket.session.get("user_id")       # authorise first
            if user is None:
                await websocket.accept()                   # then close: the client
                await websocket.close(code=4401)           # sees the code
                return
            async with join_room(websocket, broadcast, room, user=user,
                                 presence=presence) as joined:
                async for text in joined:                  # what the client sends
                    await joined.publish({"user": user, "text": text})

    The client receives every message of the room as a JSON envelope
    (:meth:`Message.envelope`, :meth:`Gap.envelope`). With ``presence`` and ``user``,
    the user is in the room's presence while connected and the room gets
    ``{"presence": "online" | "offline", "user": ...}`` messages when they arrive and
    leave. ``since``: a durable room's last message id the client saw (it reconnects).
    Refuse a client by accepting, then closing: an ASGI server answers a close before
    ``accept()`` with an HTTP 403, and the browser never sees the code.
    """
    broadcast.core.check_room(room)
    joined = RoomSocket(websocket, broadcast, room, user, presence)
    tasks: list[asyncio.Task[None]] = []
    # Subscribed before the handshake ends: once the client sees the socket open, every
    # message published to the room reaches it.
    async with broadcast.subscribe(room, since=since) as subscription:
        if accept:
            await websocket.accept()
        tasks.append(asyncio.create_task(joined.receive_loop()))
        tasks.append(asyncio.create_task(joined.send_loop(subscription)))
        await joined.arrive()
        renewal = joined._renewal() if presence is not None and user is not None else None
        try:
            yield joined
        finally:
            if renewal is not None:
                renewal.halt()
                tasks.append(renewal.task)
            await finish(joined._leave(tasks))
