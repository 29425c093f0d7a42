"""The decide-once core: both drivers run the flows on both backends (the flows alone,
with no I/O: tests/sansio/test_flow.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from redis_middleware import RedisCommandError, RedisUnavailableError, Settings
from redis_middleware._redis.connections import RedisConnections, connections_for
from redis_middleware.sansio.flow import (
    Call,
    Delegate,
    Flow,
    Pause,
    PausingFlow,
    gather,
)

from .sansio.test_flow import counter_flow, two_step_flow
from .support.clients import SECRET, make_settings
from .support.servers import free_port


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Any:
    def _run(conns: RedisConnections, flow: Flow[Any]) -> Any:
        if request.param == "sync":
            return conns.run(flow)

        async def go() -> Any:
            try:
                return await conns.arun(flow)
            finally:
                await conns.aclose()

        return asyncio.run(go())

    return _run


@pytest.mark.usefixtures("audit")
def test_drivers_run_scripts_and_pipelines(settings: Settings, run: Any) -> None:
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:ratelimit:{{x}}:c"
    assert run(conns, counter_flow(key, 2)) == 2
    before = conns.round_trips
    assert run(conns, counter_flow(key, 3)) == 5
    assert conns.round_trips - before == 1  # script cached: one round trip
    assert run(conns, gather(counter_flow(key, 1), counter_flow(key, 1))) == [6, 7]


@pytest.mark.usefixtures("audit")
def test_command_errors_are_wrapped_with_the_cause(settings: Settings, run: Any) -> None:
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:session:{{x}}:h"

    def flow() -> Flow[Any]:
        yield (Call.of("HSET", key, "f", "v"), Call.of("EXPIRE", key, 60))
        yield (Call.of("INCR", key),)

    with pytest.raises(RedisCommandError) as info:
        run(conns, flow())
    assert "WRONGTYPE" in str(info.value.__cause__)
    assert not conns.breaker.failing  # a command error is not an outage


@pytest.mark.usefixtures("audit")
def test_a_command_error_fails_only_the_flow_it_belongs_to(settings: Settings, run: Any
                                                          ) -> None:
    """Flows sharing a round trip: the one whose command Redis refused gets the error
    (its cause attached); the others get their replies and go on to their next batch."""
    conns = connections_for(settings)
    good = f"{settings.key_prefix}:ratelimit:{{x}}:c"
    bad = f"{settings.key_prefix}:session:{{x}}:h"

    def failing() -> Flow[tuple[Any, str]]:
        yield (Call.of("HSET", bad, "f", "v"), Call.of("EXPIRE", bad, 60))
        try:
            yield (Call.of("INCR", bad), Call.of("HGET", bad, "f"))
        except RedisCommandError as exc:
            return exc.replies, str(exc.__cause__)
        return None, "not reached"

    before = conns.round_trips
    out = run(conns, gather(two_step_flow(good), failing(), counter_flow(good, 5),
                            return_exceptions=True))
    assert out[0] == (1, 7) and out[2] == 6  # 1, then +5 in the same trip, then +1
    replies, cause = out[1]
    assert replies is not None and replies[1] == b"v"  # its own replies, error in place
    assert "WRONGTYPE" in cause
    assert conns.round_trips - before <= 3  # EVAL once (first use) at most
    unhandled = run(conns, gather(counter_flow(good, 1), failing_once(bad),
                                  return_exceptions=True))
    assert unhandled[0] == 8 and isinstance(unhandled[1], RedisCommandError)


def failing_once(key: str) -> Flow[Any]:
    result = yield (Call.of("INCR", key),)
    return result


@pytest.mark.usefixtures("audit")
def test_a_flow_can_pause_between_round_trips(settings: Settings, run: Any) -> None:
    """A Pause makes the driver wait (time.sleep or asyncio.sleep) and costs no round trip."""
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:ratelimit:{{p}}:c"

    def paused() -> PausingFlow[tuple[Any, Any]]:
        first = yield from two_step_flow(key)
        nothing = yield Pause(0.1)
        return first, nothing

    run(conns, counter_flow(key, 0))  # load the script, start the clients
    before, started = conns.round_trips, time.monotonic()
    assert run(conns, paused()) == ((1, 2), None)
    assert time.monotonic() - started >= 0.1
    assert conns.round_trips - before == 2


def test_a_flow_can_delegate_to_a_client_library(settings: Settings, run: Any) -> None:
    """A Delegate is called (sync) or awaited (asyncio) by the driver, its result sent
    back into the flow, between the flow's own round trips."""
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:ratelimit:{{d}}:c"
    calls: list[str] = []

    async def acall() -> str:
        calls.append("async")
        return "from-async"

    def call() -> str:
        calls.append("sync")
        return "from-sync"

    def delegating() -> PausingFlow[tuple[Any, Any]]:
        first = yield from two_step_flow(key)
        answer = yield Delegate(call, acall)
        return first, answer

    first, answer = run(conns, delegating())
    assert first == (1, 2) and answer in ("from-sync", "from-async")
    assert calls == [answer.removeprefix("from-")]


def holding(key: str, delegate: Delegate) -> PausingFlow[Any]:
    """Holds ``key`` while ``delegate`` runs, and frees it whatever happens there."""
    yield (Call.of("SET", key, "held", "PX", 60_000),)
    try:
        answer = yield delegate
    except GeneratorExit:
        raise  # closed: no more round trips
    except BaseException:
        yield (Call.of("DEL", key),)
        raise
    yield (Call.of("DEL", key),)
    return answer


@pytest.mark.usefixtures("audit")
def test_a_delegates_exception_is_thrown_into_the_flow(settings: Settings, run: Any) -> None:
    """The flow hears what its delegate raised (a loader's error): it may free what it
    holds with a round trip before the exception reaches the caller, and the breaker
    does not count it."""
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:data:{{held}}"

    def fail() -> None:
        raise LookupError("no such row")

    async def afail() -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError, match="no such row"):
        run(conns, holding(key, Delegate(fail, afail)))
    assert run(conns, exists_flow(key)) == 0  # freed on the way out
    assert not conns.breaker.failing


def exists_flow(key: str) -> Flow[int]:
    (found,) = yield (Call.of("EXISTS", key),)
    return int(found)


@pytest.mark.usefixtures("audit")
async def test_a_cancelled_delegate_lets_the_flow_free_what_it_holds(
        settings: Settings) -> None:
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:data:{{cancelled}}"
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(conns.arun(holding(key, Delegate(lambda: None, forever))))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await conns.arun(exists_flow(key)) == 0
    await conns.aclose()


async def test_a_driver_stopped_by_a_cancellation_closes_its_flow(settings: Settings) -> None:
    """The flow's ``finally`` runs when its driver stops, not when the flow is collected
    (the cancelled task still holds the flow through its exception's traceback)."""
    conns = connections_for(settings)
    ended: list[str] = []

    def waiting() -> PausingFlow[None]:
        try:
            yield Pause(60)
        finally:
            ended.append("finally")

    task = asyncio.create_task(conns.arun(waiting()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["finally"]


def test_a_slow_delegate_is_no_redis_timeout(backend_url: str, run: Any) -> None:
    """A delegate longer than the socket timeout (a slow loader) opens no breaker."""
    settings = make_settings(backend_url, socket_timeout=0.2)
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:data:{{slow}}"

    def slow() -> str:
        time.sleep(0.4)
        return "late"

    async def aslow() -> str:
        await asyncio.sleep(0.4)
        return "late"

    assert run(conns, holding(key, Delegate(slow, aslow))) == "late"
    assert not conns.breaker.failing
    assert run(conns, exists_flow(key)) == 0


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_unreachable_redis_fails_fast_and_logs_once(
    run: Any, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Down from the first call on: a clear error through the breaker, one log line. (A
    Cluster client connects as it is built: that is part of the first call too.)"""
    url = (f"redis://127.0.0.1:{free_port()}/0" if kind == "standalone" else
           f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    settings = Settings(redis_url=url, secret_key=SECRET, breaker_cooldown=5)
    conns = connections_for(settings)  # building never touches the network
    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        with pytest.raises(RedisUnavailableError) as info:
            run(conns, counter_flow("k", 1))
        assert info.value.__cause__ is not None
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(RedisUnavailableError, match="circuit open"):
                run(conns, counter_flow("k", 1))
        assert time.monotonic() - started < 2
    assert sum("unavailable" in r.message for r in caplog.records) == 1


def test_breaker_probes_again_after_cooldown(run: Any, redis_server: Any) -> None:
    # A cooldown long enough that a loaded machine still runs the first call inside it.
    settings = Settings(redis_url=redis_server.url, secret_key=SECRET, breaker_cooldown=1.0)
    conns = connections_for(settings)
    conns.breaker.failure(ConnectionError("simulated"))
    with pytest.raises(RedisUnavailableError):
        run(conns, counter_flow("t-probe:ratelimit:{p}:c", 1))
    time.sleep(1.1)
    assert run(conns, counter_flow("t-probe:ratelimit:{p}:c", 1)) >= 1
    assert not conns.breaker.failing


@pytest.mark.usefixtures("audit")
@pytest.mark.parametrize("side", ["sync", "async"])
def test_one_command_without_a_flow_behaves_as_its_flow(settings: Settings, side: str
                                                        ) -> None:
    """``call`` and ``acall`` (the cache backends' hot read): the reply, one round trip
    and one command counted, an error reply as a RedisCommandError (no outage), as a flow
    of that one command gives."""
    conns = connections_for(settings)
    key = f"{settings.key_prefix}:data:{{x}}"
    conns.run(_one((("SET", key, b"v", "EX", 60),)))

    async def acalls(commands: list[tuple[str, ...]]) -> list[Any]:
        try:
            return [await conns.acall(c) for c in commands]
        finally:
            await conns.aclose()

    def calls(*commands: tuple[str, ...]) -> list[Any]:
        if side == "sync":
            return [conns.call(c) for c in commands]
        return asyncio.run(acalls(list(commands)))

    trips, commands = conns.round_trips, conns.commands
    assert calls(("GET", key), ("GET", key + "-missing")) == [b"v", None]
    assert (conns.round_trips - trips, conns.commands - commands) == (2, 2)
    assert calls(("SET", key, b"w", "EX", 60)) == [True]  # redis-py's reply callback
    with pytest.raises(RedisCommandError) as info:
        calls(("HGET", key, "f"))
    assert "WRONGTYPE" in str(info.value.__cause__)
    assert not conns.breaker.failing


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
@pytest.mark.parametrize("side", ["sync", "async"])
def test_one_command_without_a_flow_goes_through_the_breaker(
        caplog: pytest.LogCaptureFixture, side: str, kind: str) -> None:
    """Down from the first call on (a Cluster client's first use included): a clear
    error through the breaker, one log line."""
    url = (f"redis://127.0.0.1:{free_port()}/0" if kind == "standalone" else
           f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    conns = connections_for(Settings(redis_url=url, secret_key=SECRET, breaker_cooldown=5))

    async def acall() -> Any:
        try:
            return await conns.acall(("GET", "k"))
        finally:
            await conns.aclose()

    def call() -> Any:
        return conns.call(("GET", "k")) if side == "sync" else asyncio.run(acall())

    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        with pytest.raises(RedisUnavailableError) as info:
            call()
        assert info.value.__cause__ is not None and conns.breaker.failing
        with pytest.raises(RedisUnavailableError, match="circuit open"):
            call()
    assert sum("unavailable" in r.message for r in caplog.records) == 1


def _one(commands: tuple[tuple[Any, ...], ...]) -> Flow[list[Any]]:
    return (yield tuple(Call(c) for c in commands))
