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
