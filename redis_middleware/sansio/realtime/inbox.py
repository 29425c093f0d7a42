"""One subscriber's bounded queue of a room's messages: order, doubles, gaps, overflow."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from ...errors import SubscriberOverflow
from .messages import Gap, Item, Message, skipped, stream_order

__all__ = ["Inbox"]


class Inbox:
    """One subscriber's bounded queue: what it has not read yet, in order.

    It drops what it already has (a durable room's replay overlapping live messages),
    marks a gap when a room's numbering skips, and applies the overflow policy when the
    subscriber falls ``size`` messages behind: ``drop-oldest`` (a gap marker takes
    their place) or ``disconnect`` (the next read raises :class:`SubscriberOverflow`).
    ``wake`` is called when an item arrives for a reader that may be waiting.
    """

    def __init__(self, room: str, size: int, policy: str, wake: Callable[[], None]) -> None:
        self.room, self.size, self.policy, self.wake = room, size, policy, wake
        self.queue: deque[Item] = deque()
        self.last_seq: int | None = None
        self.last_id = (0, 0)
        self.dropped = 0
        self.overflowed = False
        self.closed = False
        self._held: list[Message] | None = None  # live messages kept during replays
        self._replays: list[Message] = []  # what the replays read, until the last ends
        self._holds = 0  # replays being read

    # -- arrivals -------------------------------------------------------------
    def push(self, message: Message) -> None:
        if self.closed:
            return
        if self._held is not None:
            self._held.append(message)
            return
        self._accept(message)

    def gap(self, reason: str, missed: int | None = None) -> None:
        if self.closed:
            return
        self.last_seq = None  # numbering starts again after a marker
        self._put(Gap(self.room, reason, missed))

    def hold(self) -> None:
        """Keep live messages aside until :meth:`replayed` (a replay is being read).
        Replays can overlap: each ``hold`` is ended by one ``replayed``."""
        self._holds += 1
        if self._held is None:
            self._held = []

    def replayed(self, messages: Sequence[Message]) -> None:
        """A replay's messages; once the last replay ended, they and the live messages
        that arrived meanwhile are delivered in stream order, without doubles."""
        self._replays.extend(messages)
        self._holds = max(0, self._holds - 1)
        if self._holds:
            return
        items = [*self._replays, *(self._held or ())]
        self._held, self._replays = None, []
        if self.closed:
            return
        if all(m.id for m in items):  # a durable room's: stream ids order them
            items.sort(key=lambda m: stream_order(m.id))
        for message in items:
            self._accept(message)

    def caught_up(self, found: Sequence[Message] | None, gap: Gap | None = None) -> None:
        """The replay this subscriber asked for (``since``) read ``found``, then the live
        messages held meanwhile follow; None: the replay could not be read, which the
        subscriber is told after them (a gap, ``unavailable``). ``gap``: what the replay
        could not answer for (``since`` trimmed away, or newer than the stream), told
        before what it found."""
        if gap is not None:
            self.gap(gap.reason, gap.missed)
        self.replayed(found or [])
        if found is None:
            self.gap("unavailable")

    def _accept(self, message: Message) -> None:
        if message.id:
            order = stream_order(message.id)
            if order <= self.last_id:
                return  # replayed and live: delivered once
            self.last_id = order
        missed = skipped(self.last_seq, message.seq)
        if missed:
            self._put(Gap(self.room, "sequence", missed))
        self.last_seq = message.seq
        self._put(message)

    def _put(self, item: Item) -> None:
        if len(self.queue) >= self.size:
            if self.policy == "disconnect":
                self.overflowed = True
                self.closed = True
                self.queue.clear()
                self.wake()
                return
            dropped = self.queue.popleft()
            if isinstance(dropped, Message):
                self.dropped += 1
        was_empty = not self.queue
        self.queue.append(item)
        if was_empty:
            self.wake()

    # -- reading ----------------------------------------------------------------
    def pop(self) -> Item | None:
        """The next item (None: nothing yet). Raises SubscriberOverflow once it overflowed."""
        if self.overflowed:
            raise SubscriberOverflow(f"subscriber of room {self.room!r} fell more than "
                                     f"{self.size} messages behind")
        if self.dropped:
            missed, self.dropped = self.dropped, 0
            return Gap(self.room, "overflow", missed)
        return self.queue.popleft() if self.queue else None

    def close(self) -> None:
        self.closed = True
        self.wake()
