"""What one request owes presence, decided with no Redis."""

from __future__ import annotations

import pytest

from redis_middleware.sansio.flow import run_pure
from redis_middleware.sansio.presence import PresenceCore

from .helpers import batches, settings


def test_first_request_sweeps_and_heartbeats_in_one_round_trip() -> None:
    core = PresenceCore(settings())
    flow = core.request_flow("alice")
    assert flow is not None
    seen, _ = batches(flow, [[0, 1]])
    assert len(seen) == 1 and len(seen[0]) == 2


def test_heartbeats_are_throttled_per_user() -> None:
    core = PresenceCore(settings(presence_heartbeat_interval=30))
    assert core.due("alice", now=100.0)
    assert not core.due("alice", now=120.0)
    assert core.due("bob", now=120.0)
    assert core.due("alice", now=131.0)


def test_the_throttle_remembers_as_many_users_as_it_promises_whatever_their_ids() -> None:
    """100,000 users each keep their throttle, however long their ids (a long one counts
    as its digest, not its characters), and forgetting one frees its place."""
    core = PresenceCore(settings(presence_heartbeat_interval=30))
    users = [f"user-{n:06d}@example.org" for n in range(99_990)]
    long_ids = [f"{n}-" + "x" * 10_000 for n in range(10)]
    for user in users + long_ids:
        assert core.due(user, now=100.0)
    assert not any(core.due(user, now=110.0) for user in users + long_ids)
    assert core.due(users[0], "room-b", now=110.0)  # each room keeps its own
    chars = core._throttle.chars
    core.forget(long_ids[0])
    core.forget(users[1])
    assert core._throttle.chars == chars - 16 - len(users[1])  # their budget is free again
    assert core.due(long_ids[0], now=111.0) and core.due(users[1], now=111.0)
    assert not core.due(long_ids[1], now=111.0)


def test_a_user_s_throttle_is_per_room_even_where_the_pair_is_long() -> None:
    core = PresenceCore(settings(presence_heartbeat_interval=30))
    user = "u" * 100
    assert core.due(user, "ab", now=100.0)
    assert core.due(user, "a", now=100.0)
    assert core.due("b" + user, "a", now=100.0)  # the same text as ("ab", user), run together
    assert not core.due(user, "ab", now=101.0)


def test_nothing_due_costs_nothing() -> None:
    core = PresenceCore(settings())
    core.mark_swept()
    assert core.due("alice")
    assert core.request_flow("alice") is None  # swept just now, heartbeat already recorded
    assert core.request_flow(None) is None


def test_a_heartbeat_reports_coming_online() -> None:
    core = PresenceCore(settings())
    assert run_pure(core.heartbeat_flow("alice"), [[1]]) is True
    assert run_pure(core.heartbeat_flow("alice"), [[0]]) is False


@pytest.mark.parametrize(
    ("user", "member"),
    [
        pytest.param("alice", "alice", id="ascii-as-is"),
        pytest.param("zoë ✓", "zoë ✓", id="valid-unicode-as-is"),
        pytest.param("bob\ud800", '\x00"bob\\ud800"', id="lone-surrogate-as-json"),
        pytest.param("\x00x", '\x00"\\u0000x"', id="starts-with-the-mark"),
        pytest.param('\x00"x"', '\x00"\\u0000\\"x\\""', id="looks-escaped"),
    ],
)
def test_every_user_id_is_a_utf8_member_that_lists_back_as_it(user: str, member: str) -> None:
    """A lone surrogate (what json.loads gives for "\\ud800") has no UTF-8 form."""
    core = PresenceCore(settings())
    (heartbeat,) = next(core.heartbeat_flow(user))
    (score,) = next(core.is_online_flow(user))
    assert member in heartbeat.args and score.args[-1] == member
    member.encode()  # Redis gets UTF-8
    assert run_pure(core.online_users_flow(), [[[member.encode()]]]) == [user]
