"""Real-time decisions without Redis: the wire form, each subscriber's inbox."""

from __future__ import annotations

import json

import pytest

from redis_middleware import SubscriberOverflow
from redis_middleware.sansio.flow import run_pure
from redis_middleware.sansio.realtime.core import RealtimeCore
from redis_middleware.sansio.realtime.inbox import Inbox
from redis_middleware.sansio.realtime.messages import Gap, Message, parse_payload
from redis_middleware.sansio.realtime.rooms import Cursor

from .helpers import settings


def _msg(seq: int, stream_id: str = "") -> Message:
    return Message("r", seq, stream_id, 1.5, json.dumps({"n": seq}))


def _drain(inbox: Inbox) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    while (item := inbox.pop()) is not None:
        out.append(("gap", item.reason) if isinstance(item, Gap) else ("msg", item.seq))
    return out


def test_payloads_carry_number_id_and_time_before_the_json() -> None:
    m = parse_payload("room", b'7 1700000000000-0 1700000000123\n{"a":[1,2]}')
    assert m is not None and (m.seq, m.id, m.ts, m.data) == (7, "1700000000000-0",
                                                              1700000000.123, {"a": [1, 2]})
    envelope = json.loads(m.envelope())
    assert envelope == {"type": "message", "room": "room", "seq": 7, "id": "1700000000000-0",
                        "ts": 1700000000.123, "data": {"a": [1, 2]}}
    assert m.envelope() is m.envelope()  # built once, shared by every socket
    assert m.raw == '{"a":[1,2]}'  # the published text, as sent (from the envelope)
    tricky = '}{\\"x'  # braces, a backslash and a quote inside the data
    odd = Message('a "room"\n', 1, "", 0.0, json.dumps(tricky))
    assert json.loads(odd.envelope())["room"] == 'a "room"\n' and odd.data == tricky
    for junk in (b"", b"hello", b"1 2\n{}", b"x y z\n{}"):
        assert parse_payload("room", junk) is None


def test_a_skipped_number_is_a_gap_and_a_replayed_id_is_delivered_once() -> None:
    inbox = Inbox("r", 10, "drop-oldest", lambda: None)
    for m in (_msg(1, "5-0"), _msg(2, "6-0"), _msg(2, "6-0"), _msg(5, "9-0")):
        inbox.push(m)
    assert _drain(inbox) == [("msg", 1), ("msg", 2), ("gap", "sequence"), ("msg", 5)]


def test_live_messages_wait_for_the_replay_then_follow_it_without_doubles() -> None:
    inbox = Inbox("r", 10, "drop-oldest", lambda: None)
    inbox.hold()
    inbox.push(_msg(3, "3-0"))  # live, arrived while the replay was read
    inbox.push(_msg(4, "4-0"))
    assert inbox.pop() is None
    inbox.replayed([_msg(1, "1-0"), _msg(2, "2-0"), _msg(3, "3-0")])
    assert _drain(inbox) == [("msg", 1), ("msg", 2), ("msg", 3), ("msg", 4)]


def test_overlapping_replays_release_live_messages_once_both_ended() -> None:
    """A client's own replay (``since``) and a read-back of skipped numbers can overlap:
    nothing is delivered until both ended, then everything once, in stream order."""
    inbox = Inbox("r", 10, "drop-oldest", lambda: None)
    inbox.hold()  # the client's replay
    inbox.push(_msg(4, "4-0"))
    inbox.hold()  # a read-back: 5 and 6 went missing on the way
    inbox.push(_msg(7, "7-0"))
    inbox.replayed([_msg(5, "5-0"), _msg(6, "6-0"), _msg(7, "7-0")])  # the read-back
    assert inbox.pop() is None  # the first replay is still being read
    inbox.replayed([_msg(2, "2-0"), _msg(3, "3-0"), _msg(4, "4-0")])
    assert _drain(inbox) == [("msg", n) for n in range(2, 8)]
    inbox.hold()
    inbox.push(_msg(10, "10-0"))
    inbox.replayed([])  # the read-back found nothing: the gap is told, not hidden
    assert _drain(inbox) == [("gap", "sequence"), ("msg", 10)]


def test_a_cursor_asks_for_a_read_back_only_when_numbers_skip() -> None:
    cursor = Cursor()
    assert cursor.advance(_msg(7, "7-0")) is None  # the first: nothing to compare with
    assert cursor.advance(_msg(8, "8-0")) is None
    assert cursor.advance(_msg(11, "11-0")) == "8-0"  # 9 and 10: read back after 8-0
    assert cursor.advance(_msg(9, "9-0")) is None  # older (a replay): changes nothing
    assert (cursor.last_id, cursor.last_seq) == ("11-0", 11)
    assert cursor.advance(_msg(1, "12-0")) is None  # numbering restarted (a new stream)


def test_drop_oldest_keeps_the_newest_and_counts_what_it_dropped() -> None:
    woken: list[int] = []
    inbox = Inbox("r", 3, "drop-oldest", lambda: woken.append(1))
    for n in range(1, 8):
        inbox.push(_msg(n))
    assert len(inbox.queue) == 3 and woken == [1]  # woken once: empty to not empty
    gap = inbox.pop()
    assert isinstance(gap, Gap) and (gap.reason, gap.missed) == ("overflow", 4)
    assert _drain(inbox) == [("msg", 5), ("msg", 6), ("msg", 7)]


def test_disconnect_ends_the_subscription_once_it_overflows() -> None:
    inbox = Inbox("r", 2, "disconnect", lambda: None)
    for n in range(1, 4):
        inbox.push(_msg(n))
    assert inbox.closed and not inbox.queue
    with pytest.raises(SubscriberOverflow):
        inbox.pop()


def test_publish_is_one_script_and_channels_share_the_rooms_hash_tag() -> None:
    core = RealtimeCore(settings(realtime_durable_rooms=("chat:*",)))
    assert core.durable("chat:1") and not core.durable("news")
    flow = core.publish_flow("chat:1", {"t": 1}, now=1000.0)
    batch = next(flow)
    (call,) = batch
    args = call.args
    assert args[0] == "EVALSHA" and args[2] == 2
    seq_key, stream_key, channel = args[3], args[4], args[5]
    tag = "{chat%3A1}"
    assert tag in seq_key and tag in stream_key and channel == core.channel("chat:1")
    assert channel.endswith(tag)
    assert run_pure(core.publish_flow("news", 1), [[[3, b""]]]).seq == 3


@pytest.mark.parametrize(("room", "since", "after"), [
    pytest.param("chat:1", None, None, id="none-asked"),
    pytest.param("plain", "1-0", None, id="plain-room-ignores-it"),
    pytest.param("plain", "garbage", None, id="plain-room-ignores-garbage"),
    pytest.param("chat:1", "1700000000000-3", "1700000000000-3", id="ms-n"),
    pytest.param("chat:1", "1700000000000", "1700000000000", id="ms"),
    pytest.param("chat:1", "", "", id="empty-from-the-oldest"),
    pytest.param("chat:1", "0", "0", id="zero"),
    pytest.param("chat:1", "18446744073709551615-18446744073709551614",
                 "18446744073709551615-18446744073709551614", id="largest-but-one"),
    pytest.param("chat:1", "18446744073709551615-18446744073709551615",
                 Gap("chat:1", "since"), id="largest-has-nothing-after"),
    pytest.param("chat:1", "18446744073709551616", Gap("chat:1", "since"), id="over-64-bits"),
    pytest.param("chat:1", "not-an-id", Gap("chat:1", "since"), id="text"),
    pytest.param("chat:1", "1-", Gap("chat:1", "since"), id="dangling-dash"),
    pytest.param("chat:1", "(5", Gap("chat:1", "since"), id="redis-syntax"),
    pytest.param("chat:1", "-", Gap("chat:1", "since"), id="redis-minus"),
    pytest.param("chat:1", "\u0661", Gap("chat:1", "since"), id="unicode-digit"),
    pytest.param("chat:1", 5, Gap("chat:1", "since"), id="not-text"),
])
def test_where_a_replay_starts(room: str, since: object, after: object) -> None:
    core = RealtimeCore(settings(realtime_durable_rooms=("chat:*",)))
    assert core.replay_after(room, since) == after  # type: ignore[arg-type]


def _entry(stream_id: str, seq: int) -> list[object]:
    return [stream_id.encode(), [b"s", str(seq).encode(), b"t", b"1500", b"d", b"1"]]


NOW = 1_700_000_000.0  # the replay window (3600 s) starts at 1699996400000 ms


@pytest.mark.parametrize(("since", "read", "oldest", "reason", "seqs"), [
    pytest.param("5-0", ["5-0", "6-0"], ["5-0"], None, [6], id="kept-the-oldest"),
    pytest.param("6-0", ["6-0", "7-0"], ["5-0"], None, [7], id="kept"),
    pytest.param("7-0", ["7-0"], ["5-0"], None, [], id="kept-the-newest"),
    pytest.param("6", ["6-0", "7-0"], ["5-0"], None, [7], id="ms-form-kept"),
    pytest.param("6-5", ["7-0"], ["5-0"], None, [7], id="inside-not-an-entry"),
    pytest.param("4-0", ["5-0", "6-0"], ["5-0"], "trimmed", [5, 6], id="trimmed-past"),
    pytest.param("8-0", [], ["5-0"], "future", [], id="newer-than-the-newest"),
    pytest.param("1699999999000-0", [], [], "future", [], id="gone-inside-the-window"),
    pytest.param("1699996399999-0", [], [], "trimmed", [], id="gone-past-the-window"),
])
def test_what_a_since_the_stream_cannot_answer_for_gets(
        since: str, read: list[str], oldest: list[str], reason: str | None,
        seqs: list[int]) -> None:
    core = RealtimeCore(settings(realtime_durable_rooms=("chat:*",)))
    flow = core.since_flow("chat:1", since, now=NOW)
    batch = next(flow)
    stream = core.keys.realtime("chat:1", "stream")
    assert [c.args for c in batch] == [("XRANGE", stream, since, "+", "COUNT", 257),
                                       ("XRANGE", stream, "-", "+", "COUNT", 1)]
    found = run_pure(core.since_flow("chat:1", since, now=NOW), [[
        [_entry(i, int(i.split("-")[0])) for i in read],
        [_entry(i, int(i.split("-")[0])) for i in oldest]]])
    assert found.gap == (None if reason is None else Gap("chat:1", reason))
    assert [m.seq for m in found.messages] == seqs


def test_a_since_of_everything_kept_reads_once_and_misses_nothing() -> None:
    core = RealtimeCore(settings(realtime_durable_rooms=("chat:*",)))
    for since in ("", "0", "0-0", "00", "0-00"):  # every spelling of the first id
        assert [c.args[2] for c in next(core.since_flow("chat:1", since))] == ["-"]
        found = run_pure(core.since_flow("chat:1", since), [[[_entry("9-0", 9)]]])
        assert found.gap is None and [m.seq for m in found.messages] == [9]


def test_a_since_gap_comes_before_the_replay_and_the_held_live_messages() -> None:
    inbox = Inbox("r", 10, "drop-oldest", lambda: None)
    inbox.hold()
    inbox.push(_msg(7, "7-0"))
    inbox.caught_up([_msg(5, "5-0"), _msg(6, "6-0")], Gap("r", "trimmed"))
    assert _drain(inbox) == [("gap", "trimmed"), ("msg", 5), ("msg", 6), ("msg", 7)]
