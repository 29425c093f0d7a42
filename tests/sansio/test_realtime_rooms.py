"""What one process does with its rooms' subscriptions, decided without Redis: handing
payloads to subscribers, reading back what a durable room's subscription skipped, and
what each room does when the shared subscription comes back (replay or gap)."""

from __future__ import annotations

from typing import Any

import pytest

from redis_middleware.sansio.realtime.core import RealtimeCore
from redis_middleware.sansio.realtime.inbox import Inbox
from redis_middleware.sansio.realtime.messages import Gap, Message
from redis_middleware.sansio.realtime.rooms import REPLAY_TRIES, Room, Rooms

from .helpers import settings

CORE = RealtimeCore(settings(realtime_durable_rooms=("d:*",)))


def payload(seq: int, stream_id: str = "") -> bytes:
    return f'{seq} {stream_id} 1000\n{{"n":{seq}}}'.encode()


def message(room: str, seq: int, stream_id: str) -> Message:
    return Message(room, seq, stream_id, 1.0, f'{{"n":{seq}}}')


def drain(inbox: Inbox) -> list[Any]:
    out: list[Any] = []
    while (item := inbox.pop()) is not None:
        out.append(item.reason if isinstance(item, Gap) else item.seq)
    return out


def room_with(name: str, subscribers: int = 2) -> tuple[Room, list[Inbox]]:
    room = Room(CORE, name)
    inboxes = [Inbox(name, 50, "drop-oldest", lambda: None) for _ in range(subscribers)]
    room.inboxes.update(inboxes)
    return room, inboxes


def test_every_subscriber_gets_each_message_and_foreign_payloads_are_dropped() -> None:
    room, inboxes = room_with("plain")
    for data in (payload(1), b"not ours", payload(2)):
        assert room.deliver(data) is None
    assert [drain(i) for i in inboxes] == [[1, 2], [1, 2]]


def test_a_durable_room_reads_back_skipped_numbers_holding_live_messages() -> None:
    room, inboxes = room_with("d:1")
    assert room.deliver(payload(1, "1-0")) is None
    assert room.deliver(payload(4, "4-0")) == "1-0"  # 2 and 3 were lost on the way
    assert room.deliver(payload(6, "6-0")) is None  # one read-back at a time
    assert [drain(i) for i in inboxes] == [[1], [1]]  # the live ones wait for it
    room.healed([message("d:1", n, f"{n}-0") for n in (2, 3, 4, 5)])
    assert [drain(i) for i in inboxes] == [[2, 3, 4, 5, 6]] * 2  # in order, once each
    assert room.healing is None


def test_a_read_back_that_failed_leaves_the_gap_to_be_told() -> None:
    room, (inbox,) = room_with("d:1", 1)
    room.deliver(payload(1, "1-0"))
    assert room.deliver(payload(3, "3-0")) == "1-0"
    room.healed(None)
    assert drain(inbox) == [1, "sequence", 3]


def test_a_plain_room_skipping_a_number_asks_for_no_read_back() -> None:
    room, (inbox,) = room_with("plain", 1)
    room.deliver(payload(1))
    assert room.deliver(payload(3)) is None
    assert drain(inbox) == [1, "sequence", 3]


def resume(rooms: Rooms, channels: list[str], answers: list[Any]) -> list[tuple[str, str, int]]:
    """Run the resume plan with canned replay results; what it asked for."""
    asked: list[tuple[str, str, int]] = []
    plan = rooms.resume(channels)
    found: Any = None
    replies = iter(answers)
    try:
        while True:
            room, after, tries = plan.send(found)
            asked.append((room.name, after, tries))
            found = next(replies)
    except StopIteration:
        return asked


def test_after_a_reconnect_durable_rooms_replay_and_plain_ones_mark_a_gap() -> None:
    rooms = Rooms()
    inboxes = {name: Inbox(name, 50, "drop-oldest", lambda: None)
               for name in ("plain", "d:1", "d:new")}
    channels = [rooms.join(CORE, name, inbox) for name, inbox in inboxes.items()]
    rooms[CORE.channel("d:1")].deliver(payload(1, "1-0"))
    rooms[CORE.channel("plain")].deliver(payload(1))
    asked = resume(rooms, [*channels, "gone"], [[message("d:1", 2, "2-0")]])
    assert asked == [("d:1", "1-0", REPLAY_TRIES)]  # "d:new" carried nothing yet
    assert drain(inboxes["plain"]) == [1, "reconnect"]
    assert drain(inboxes["d:1"]) == [1, 2]
    assert drain(inboxes["d:new"]) == ["reconnect"]
    assert rooms[CORE.channel("d:1")].cursor.last_id == "2-0"


def test_once_a_replay_failed_every_try_later_rooms_get_one_try() -> None:
    rooms = Rooms()
    names = ("d:1", "d:2", "d:3")
    inboxes = {name: Inbox(name, 50, "drop-oldest", lambda: None) for name in names}
    channels = [rooms.join(CORE, name, inbox) for name, inbox in inboxes.items()]
    for name in names:
        rooms[CORE.channel(name)].deliver(payload(1, "1-0"))
    asked = resume(rooms, channels, [None, None, [message("d:3", 2, "2-0")]])
    assert [tries for _, _, tries in asked] == [REPLAY_TRIES, 1, 1]
    assert [drain(inboxes[name]) for name in names] == [
        [1, "unavailable"], [1, "unavailable"], [1, 2]]


def test_a_room_is_subscribed_with_its_first_subscriber_and_left_with_its_last() -> None:
    rooms = Rooms()
    first, second = (Inbox("r", 5, "drop-oldest", lambda: None) for _ in range(2))
    channel = rooms.join(CORE, "r", first)
    assert rooms.join(CORE, "r", second) == channel == CORE.channel("r")
    assert rooms.leave(CORE, "r", first) is None
    assert rooms.leave(CORE, "r", second) == channel and channel not in rooms
    assert rooms.leave(CORE, "r", second) is None
    rooms.join(CORE, "r", first)
    rooms.close()
    assert first.closed and not rooms


@pytest.mark.parametrize(
    ("room", "since", "after"),
    [
        pytest.param("d:1", "5-0", "5-0", id="durable-room-replays-from-since"),
        pytest.param("d:1", None, None, id="no-since-no-replay"),
        pytest.param("plain", "5-0", None, id="a-plain-room-keeps-nothing-to-replay"),
    ],
)
def test_where_a_new_subscribers_replay_starts(room: str, since: str | None,
                                               after: str | None) -> None:
    assert CORE.replay_after(room, since) == after


def test_a_subscribers_replay_that_failed_is_told_after_the_held_messages() -> None:
    inbox = Inbox("d:1", 10, "drop-oldest", lambda: None)
    inbox.hold()
    inbox.push(message("d:1", 7, "7-0"))
    inbox.caught_up(None)
    assert drain(inbox) == [7, "unavailable"]
    inbox.hold()
    inbox.push(message("d:1", 9, "9-0"))
    inbox.caught_up([message("d:1", 8, "8-0")])
    assert drain(inbox) == [8, 9]
