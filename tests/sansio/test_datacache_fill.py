"""``get_or_set`` as one flow, with no Redis: the round trips of each case (hit, miss,
another process loading, a failing loader, Redis failing, callers of one process sharing
a load, stale and early values), driven on canned replies as the sync driver drives it
(a delegate called, its exception thrown back in), with a stand-in for the process."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from redis_middleware import RedisUnavailableError
from redis_middleware.sansio.cache import datascripts
from redis_middleware.sansio.cache.data import DataCore
from redis_middleware.sansio.cache.datafill import UNREAD, Fill, Followed, Lease, Local
from redis_middleware.sansio.flow import Batch, Delegate, Pause, PausingFlow

from .helpers import settings

SCRIPTS = {script.sha: name for name, script in vars(datascripts).items()
           if isinstance(script, datascripts.Script)}


def names(batch: Batch) -> list[str]:
    """A round trip's commands, a script by its name in datascripts."""
    return [SCRIPTS[op.args[1]] if op.script is not None else str(op.args[0]) for op in batch]


class Ticket:
    def __init__(self) -> None:
        self.outcome: Any = None
        self.closed = False

    def settle(self, stored: bytes) -> None:
        self.outcome = stored

    def fail(self, error: BaseException) -> None:
        self.outcome = error

    def close(self) -> None:
        self.closed = True


class Process:
    """What the flow asks of the process: ``joins`` answers the joins in turn (then the
    caller leads); ``busy`` keys are being refreshed here already."""

    def __init__(self, joins: list[Followed] | None = None, busy: bool = False) -> None:
        self.joins = list(joins or [])
        self.tickets: list[Ticket] = []
        self.leases: list[Lease | None] = []
        self.refreshes: list[PausingFlow[None]] = []
        self.busy = busy
        self.writes: list[str] = []  # told around each store of a loaded value

    def wrote(self, name: str) -> None:
        self.writes.append(name)

    def join(self, name: str) -> Ticket | Followed:
        if self.joins:
            return self.joins.pop(0)
        self.tickets.append(Ticket())
        return self.tickets[-1]

    async def ajoin(self, name: str) -> Ticket | Followed:
        return self.join(name)

    def load(self, loader: Delegate, lease: Lease | None) -> Any:
        self.leases.append(lease)
        return loader.call()

    async def aload(self, loader: Delegate, lease: Lease | None) -> Any:
        return self.load(loader, lease)

    def refreshing(self, name: str) -> bool:
        return self.busy

    def refresh(self, name: str, flow: PausingFlow[None]) -> bool:
        self.refreshes.append(flow)
        return True

    async def arefresh(self, name: str, flow: PausingFlow[None]) -> bool:
        return self.refresh(name, flow)


def drive(flow: PausingFlow[Any], replies: list[Any], seen: list[Any],
          sent: list[Batch] | None = None) -> Any:
    """Run ``flow`` as ``run_sync`` does; each round trip answered by the next of
    ``replies`` (an exception: thrown in, as the driver throws a failed batch). ``seen``
    gets the names of each round trip's commands, ``sent`` the batches."""
    replies = list(replies)
    try:
        step = next(flow)
        while True:
            if isinstance(step, Pause):
                seen.append("pause")
                step = flow.send(None)
            elif isinstance(step, Delegate):
                try:
                    answer = step.call()
                except BaseException as exc:
                    step = flow.throw(exc)
                    continue
                step = flow.send(answer)
            else:
                seen.append(names(step))
                if sent is not None:
                    sent.append(step)
                reply = replies.pop(0)
                step = flow.throw(reply) if isinstance(reply, BaseException) else flow.send(reply)
    except StopIteration as stop:
        assert replies == [], "replies left over"
        return stop.value


class Loader:
    def __init__(self, value: Any = "loaded", error: BaseException | None = None) -> None:
        self.value, self.error, self.calls = value, error, 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value

    def delegate(self) -> Delegate:
        async def acall() -> Any:
            return self()

        return Delegate(self, acall)


CORE = DataCore(settings())
NOW = time.time() * 1000


def stored(value: Any, fresh_ms: int = 60_000, stale_ms: int = 0, age_ms: int = 0,
           compute_ms: int = 0) -> bytes:
    return CORE.encode(value, fresh_ms, stale_ms, (), compute_ms, int(NOW) - age_ms)


def get_or_set(process: Process, read: Any, replies: list[Any], seen: list[Any],
               loader: Loader | None = None, stale: float = 0, early: float = 0,
               tags: Callable[[], list[str]] = list, sent: list[Batch] | None = None) -> Any:
    fill = Fill(CORE, Local(process, process, process, process.wrote))
    policy = fill.policy(60, stale, early, "t")
    flow = fill.flow("k", policy, (loader or Loader()).delegate(), tags, read)
    return drive(flow, replies, seen, sent)


# -- hits ------------------------------------------------------------------------------
@pytest.mark.parametrize(("read", "stale", "early"), [
    pytest.param(stored({"a": 1}), 0, 0, id="plain"),
    pytest.param(stored({"a": 1}, stale_ms=60_000), 60, 0, id="with-a-stale-window"),
    pytest.param(stored({"a": 1}), 0, 1, id="early-refresh-not-due"),
])
def test_a_fresh_value_the_caller_read_costs_nothing_more(read: bytes, stale: float,
                                                          early: float) -> None:
    seen: list[Any] = []
    loader, process = Loader(), Process()
    assert get_or_set(process, read, [], seen, loader, stale, early) == {"a": 1}
    assert seen == [] and loader.calls == 0 and process.writes == []


def test_a_flow_run_alone_reads_with_one_get() -> None:
    seen: list[Any] = []
    assert get_or_set(Process(), UNREAD, [[stored("v")]], seen) == "v"
    assert seen == [["GET"]]


# -- misses ----------------------------------------------------------------------------
def test_a_miss_claims_the_lease_loads_and_stores_with_it() -> None:
    seen: list[Any] = []
    sent: list[Batch] = []
    process, loader = Process(), Loader({"fresh": True})
    assert get_or_set(process, UNREAD, [[None], [[None, 1]], [1]], seen, loader,
                      sent=sent) == {"fresh": True}
    assert seen == [["GET"], ["CLAIM"], ["STORE"]]  # a miss: three round trips
    assert loader.calls == 1
    ((fill, token, px),) = process.leases  # renewed while the loader ran
    assert fill == CORE.fill_key("k") and px == CORE.lease_ms
    claimed, stored_with = sent[1][0].args, sent[2][0].args
    assert claimed[3:6] == (CORE.key("k"), fill, token)  # the lease taken with the token
    assert stored_with[3:5] == (CORE.key("k"), fill) and stored_with[-1] == token
    (ticket,) = process.tickets
    assert stored_with[5] == ticket.outcome  # the value stored is the one handed over
    assert CORE.decode(ticket.outcome).value == {"fresh": True}  # type: ignore[union-attr]
    assert ticket.closed
    assert process.writes == ["k", "k"]  # before the store is sent, and after its reply


def test_the_value_stored_meanwhile_by_another_process_is_taken() -> None:
    seen: list[Any] = []
    loader = Loader()
    out = get_or_set(Process(), None, [[[None, 0]], [[stored("theirs"), 0]]], seen, loader)
    assert out == "theirs" and loader.calls == 0
    assert seen == [["CLAIM"], "pause", ["CLAIM"]]  # polled while their lease was held


def test_a_failing_loader_frees_the_lease_and_stores_nothing() -> None:
    seen: list[Any] = []
    process, error = Process(), LookupError("no such row")
    with pytest.raises(LookupError) as info:
        get_or_set(process, None, [[[None, 1]], [1]], seen, Loader(error=error))
    assert info.value is error
    assert seen == [["CLAIM"], ["RELEASE"]]
    assert process.tickets[0].outcome is error and process.tickets[0].closed


def test_a_value_the_serializer_refuses_frees_the_lease() -> None:
    seen: list[Any] = []
    with pytest.raises(TypeError):
        get_or_set(Process(), None, [[[None, 1]], [1]], seen, Loader((1, 2)))
    assert seen == [["CLAIM"], ["RELEASE"]]


@pytest.mark.parametrize(("read", "replies", "round_trips"), [
    pytest.param(RedisUnavailableError("down"), [], [], id="the-read-failed"),
    pytest.param(None, [RedisUnavailableError("down")], [["CLAIM"]], id="the-claim-failed"),
])
def test_redis_failing_runs_the_loader_and_stores_nothing(
        read: Any, replies: list[Any], round_trips: list[Any]) -> None:
    seen: list[Any] = []
    process, loader = Process(), Loader("computed")
    assert get_or_set(process, read, replies, seen, loader) == "computed"
    assert seen == round_trips and loader.calls == 1
    assert process.leases == [None]  # no lease to renew
    assert CORE.decode(process.tickets[0].outcome).value == "computed"  # type: ignore[union-attr]


def test_a_failing_store_still_returns_the_value() -> None:
    seen: list[Any] = []
    assert get_or_set(Process(), None, [[[None, 1]], RedisUnavailableError("gone")], seen,
                      Loader("v")) == "v"
    assert seen == [["CLAIM"], ["STORE"]]


def test_tags_are_rendered_on_a_miss_and_stored_with_the_value() -> None:
    seen: list[Any] = []
    tag = CORE.tag_key("users")
    get_or_set(Process(), None, [[[None, 1]], [1, 1]], seen, tags=lambda: [tag])
    assert seen == [["CLAIM"], ["STORE", "TAG_ADD"]]


# -- callers of one process sharing a load -----------------------------------------------
def test_a_follower_takes_the_leaders_value_without_redis() -> None:
    seen: list[Any] = []
    loader = Loader()
    process = Process([Followed(stored("led"), None, 0.01)])
    assert get_or_set(process, None, [], seen, loader) == "led"
    assert seen == [] and loader.calls == 0


def test_a_follower_gets_the_leaders_error() -> None:
    error = LookupError("no")
    with pytest.raises(LookupError) as info:
        get_or_set(Process([Followed(None, error, 0.01)]), None, [], [])
    assert info.value is error


def test_a_follower_past_the_wait_loads_and_stores_without_a_lease() -> None:
    seen: list[Any] = []
    process = Process([Followed(None, None, None)])
    assert get_or_set(process, None, [[True]], seen, Loader("mine")) == "mine"
    assert seen == [["SET"]] and process.leases == [None] and process.tickets == []


def test_a_leader_that_gave_up_hands_over_to_a_follower() -> None:
    seen: list[Any] = []
    process = Process([Followed(None, None, 0.01)])  # cancelled: nothing stored
    assert get_or_set(process, None, [[[None, 1]], [1]], seen) == "loaded"
    assert seen == [["CLAIM"], ["STORE"]] and len(process.tickets) == 1


# -- stale and early -----------------------------------------------------------------------
STALE = stored("old", fresh_ms=1_000, stale_ms=60_000, age_ms=2_000)


def test_a_stale_value_is_served_while_one_refresh_starts() -> None:
    seen: list[Any] = []
    process, loader = Process(), Loader("new")
    assert get_or_set(process, STALE, [[True]], seen, loader, stale=60) == "old"
    assert seen == [["SET"]] and loader.calls == 0  # the lease, for the refresh
    assert process.writes == []  # serving the stale value wrote nothing
    (refresh,) = process.refreshes
    refreshed: list[Any] = []
    assert drive(refresh, [[1]], refreshed) is None
    assert refreshed == [["STORE"]] and loader.calls == 1  # stored, the lease freed
    assert process.writes == ["k", "k"]


@pytest.mark.parametrize(("busy", "lease_free", "round_trips"), [
    pytest.param(True, True, [], id="this-process-refreshes-it"),
    pytest.param(False, False, [["SET"]], id="another-process-holds-the-lease"),
])
def test_a_stale_value_someone_refreshes_is_just_served(
        busy: bool, lease_free: bool, round_trips: list[Any]) -> None:
    seen: list[Any] = []
    process = Process(busy=busy)
    replies = [[lease_free]] if round_trips else []
    assert get_or_set(process, STALE, replies, seen, stale=60) == "old"
    assert seen == round_trips and process.refreshes == []


def test_a_failing_refresh_is_logged_and_frees_the_lease() -> None:
    process = Process()
    get_or_set(process, STALE, [[True]], [], Loader(error=LookupError("down")), stale=60)
    refreshed: list[Any] = []
    assert drive(process.refreshes[0], [[1]], refreshed) is None  # not raised
    assert refreshed == [["RELEASE"]]


def test_a_stale_value_is_a_miss_without_a_stale_window() -> None:
    seen: list[Any] = []
    assert get_or_set(Process(), STALE, [[[None, 1]], [1]], seen, Loader("new")) == "new"
    assert seen == [["CLAIM"], ["STORE"]]


def test_early_refresh_serves_the_value_and_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.5)
    seen: list[Any] = []
    process = Process()
    near_expiry = stored("soon", fresh_ms=1_000, age_ms=900, compute_ms=500)
    assert get_or_set(process, near_expiry, [[True]], seen, early=1) == "soon"
    assert seen == [["SET"]] and len(process.refreshes) == 1


def test_early_must_be_xfetchs_beta() -> None:
    process = Process()
    fill = Fill(CORE, Local(process, process, process, process.wrote))
    with pytest.raises(ValueError, match="beta"):
        fill.policy(60, 0, 101, "t")
    assert fill.policy(60, 0, True, "t").early == 1.0
