"""What one process does with the rooms it has local subscribers in: each room's cursor,
handing a channel's payloads to the subscribers' inboxes, reading back what a durable
room's subscription skipped, and what a room does when the shared subscription comes
back after a lost connection (replay, or tell its subscribers of a gap). No I/O: the
asyncio hub (``asgi/realtime.py``) reads the channels, runs the replays and their tries,
and hands the results here."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence

from .core import RealtimeCore
from .inbox import Inbox
from .messages import Message, parse_payload, skipped, stream_order

__all__ = ["REPLAY_TRIES", "Cursor", "Resume", "Room", "Rooms"]

# Tries of one replay (over about 1.2 s): the subscription is back, but a breaker still
# open after the outage or a Cluster slot map not yet refreshed can refuse the first.
REPLAY_TRIES = 4


class Cursor:
    """The newest message of a durable room that one process's subscription carried:
    where a replay starts after a reconnect, and whether a live message skipped numbers
    (Pub/Sub lost some on the way: they are in the stream, to be read back)."""

    __slots__ = ("_order", "last_id", "last_seq")

    def __init__(self) -> None:
        self.last_id = ""
        self.last_seq: int | None = None
        self._order = (0, 0)

    def advance(self, message: Message) -> str | None:
        """Note ``message``; the id to read back after when numbers were skipped."""
        after, order = self.last_id, stream_order(message.id)
        if after and order <= self._order:
            return None  # an older one (a replay overlapping live messages)
        missed = skipped(self.last_seq, message.seq) if after else 0
        self.last_id, self.last_seq, self._order = message.id, message.seq, order
        return after if missed else None


class Room:
    """One room with local subscribers: their inboxes and the room's cursor."""

    __slots__ = ("core", "cursor", "healing", "inboxes", "name")

    def __init__(self, core: RealtimeCore, name: str) -> None:
        self.core, self.name = core, name
        self.inboxes: set[Inbox] = set()
        self.cursor = Cursor()  # the newest message seen (durable rooms)
        # The inboxes holding live messages while skipped ones are read back, or None.
        self.healing: tuple[Inbox, ...] | None = None

    def deliver(self, payload: bytes | str) -> str | None:
        """Hand a payload of the room's channel to every subscriber.

        Returns the stream id to read back after (with :meth:`healed` once read) when a
        durable room's message skipped numbers: Pub/Sub lost some on the way (a Cluster
        node that changed roles under the subscription, say). The subscribers then hold
        live messages, this one included, until the read-back ended. None otherwise
        (also while a read-back runs already).
        """
        message = parse_payload(self.name, payload)
        if message is None:
            return None  # not one of ours
        heal = None
        if message.id:
            after = self.cursor.advance(message)
            if after is not None and self.healing is None:
                heal, self.healing = after, tuple(self.inboxes)
                for inbox in self.healing:
                    inbox.hold()
        for inbox in tuple(self.inboxes):
            inbox.push(message)
        return heal

    def healed(self, found: Sequence[Message] | None) -> None:
        """What the read-back found (None: nothing could be read). The held messages are
        released; what is still missing then shows as a gap (``sequence``)."""
        inboxes, self.healing = self.healing or (), None
        for inbox in inboxes:
            inbox.replayed(found or [])

    def resume_from(self) -> str | None:
        """The shared subscription came back after a lost connection: the stream id a
        durable room replays after; or None, and the subscribers of a plain room (or of
        a durable room that carried nothing yet) are told they may have missed messages
        (a gap, ``reconnect``)."""
        if self.cursor.last_id and self.core.durable(self.name):
            return self.cursor.last_id
        for inbox in tuple(self.inboxes):
            inbox.gap("reconnect")
        return None

    def resumed(self, found: Sequence[Message] | None) -> None:
        """What the replay after a reconnect read, for every subscriber, in order (None:
        Redis did not answer: a gap, ``unavailable``). Live messages waited meanwhile
        (the subscription is not read during a replay), so the order stays."""
        if found is None:
            for inbox in tuple(self.inboxes):
                inbox.gap("unavailable")
            return
        for message in found:
            self.cursor.advance(message)
            for inbox in tuple(self.inboxes):
                inbox.push(message)


# What resuming asks for (a room, the id to replay after, how many tries) and is sent
# back (what the replay read, or None).
Resume = Generator[tuple[Room, str, int], Sequence[Message] | None, None]


class Rooms(dict[str, Room]):
    """The rooms with local subscribers in one event loop, by channel."""

    def join(self, core: RealtimeCore, name: str, inbox: Inbox) -> str:
        """Add a subscriber; the room's channel (to subscribe, if not yet)."""
        channel = core.channel(name)
        room = self.get(channel)
        if room is None:
            room = self[channel] = Room(core, name)
        room.inboxes.add(inbox)
        return channel

    def leave(self, core: RealtimeCore, name: str, inbox: Inbox) -> str | None:
        """Remove a subscriber; the channel to unsubscribe when it was the room's last."""
        channel = core.channel(name)
        room = self.get(channel)
        if room is None:
            return None
        room.inboxes.discard(inbox)
        if room.inboxes:
            return None
        del self[channel]
        return channel

    def resume(self, channels: Iterable[str]) -> Resume:
        """After a lost connection, room by room: a durable room replays from the last id
        it carried, any other tells its subscribers of a gap (:meth:`Room.resume_from`).
        Yields each replay to run, with its tries, and takes what it read (None: Redis
        did not answer); once Redis refused a replay every try, each later room gets one
        try, so a long outage does not hold the subscription for every room in turn."""
        tries = REPLAY_TRIES
        for channel in channels:
            room = self.get(channel)
            after = room.resume_from() if room is not None else None
            if room is None or after is None:
                continue
            found = yield room, after, tries
            if found is None:
                tries = 1
            room.resumed(found)

    def close(self) -> None:
        """End every subscriber (the hub is closing)."""
        for room in self.values():
            for inbox in room.inboxes:
                inbox.close()
        self.clear()
