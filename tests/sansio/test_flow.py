"""The decide-once core: flows are pure, driven here with canned answers and no I/O
(the drivers run them on both backends in tests/test_flow.py)."""

from __future__ import annotations

import pytest

from redis_middleware.sansio.flow import Call, Flow, Script, gather, run_pure

INCR_WITH_TTL = Script(
    "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) "
    "if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end return n"
)


def counter_flow(key: str, by: int) -> Flow[int]:
    (value,) = yield (INCR_WITH_TTL([key], [by, 60]),)
    return int(value)


def two_step_flow(key: str) -> Flow[tuple[int, int]]:
    first, _ = yield (Call.of("INCR", key), Call.of("EXPIRE", key, 60))
    (second,) = yield (Call.of("INCR", key),)
    return int(first), int(second)


def test_run_pure_drives_a_flow_without_io() -> None:
    assert run_pure(two_step_flow("k"), [[1, True], [2]]) == (1, 2)


def test_gather_merges_batches_into_shared_round_trips() -> None:
    flow = gather(counter_flow("a", 1), two_step_flow("b"))
    first = next(flow)
    assert [op.args[0] for op in first] == ["EVALSHA", "INCR", "EXPIRE"]
    second = flow.send([5, 1, True])
    assert [op.args for op in second] == [("INCR", "b")]
    with pytest.raises(StopIteration) as stop:
        flow.send([2])
    assert stop.value.value == [5, (1, 2)]


def test_run_pure_rejects_mismatched_answers() -> None:
    with pytest.raises(ValueError, match="batch of 2 ops"):
        run_pure(two_step_flow("k"), [[1]])
