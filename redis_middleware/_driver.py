"""The two drivers: run a flow's batches on the sync or the asyncio redis-py client.

redis-py's sync and asyncio pipelines queue commands the same (synchronous) way;
only ``execute`` differs, so everything but that one call is shared here.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Protocol, TypeVar

from redis import exceptions as rex

from ._breaker import Breaker
from ._flow import Batch, Call, Flow
from .errors import RedisCommandError, RedisMiddlewareError, RedisUnavailableError

T = TypeVar("T")

_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, OSError, TimeoutError)
# Anything else a client call raises (a redis-py bug under a race, say) also means
# "Redis is not usable now": never a 500. Only the client call sits in these blocks.
_CLIENT_FAILURES = (rex.RedisError, OSError, TimeoutError, AttributeError, RuntimeError)


class Counter(Protocol):
    round_trips: int
    commands: int
    script_loads: int  # round trips spent sending a script's source (first use per server)


def _queue(pipe: Any, batch: Batch) -> None:
    for op in batch:
        pipe.execute_command(*op.args)


def _retry_ops(batch: Batch, results: Sequence[Any]) -> list[int]:
    """Indexes of EVALSHA calls that failed only because the script was not loaded."""
    return [
        i for i, (op, res) in enumerate(zip(batch, results, strict=True))
        if op.script is not None and isinstance(res, rex.NoScriptError)
    ]


def _as_eval(op: Call) -> tuple[Any, ...]:
    assert op.script is not None  # only called for script ops
    return ("EVAL", op.script.source, *op.args[2:])


def _check(results: list[Any]) -> list[Any]:
    for res in results:
        if isinstance(res, BaseException):
            if isinstance(res, _UNAVAILABLE):
                raise RedisUnavailableError(str(res)) from res
            raise RedisCommandError(str(res)) from res
    return results


def _wrap(exc: BaseException, breaker: Breaker) -> BaseException:
    if isinstance(exc, _UNAVAILABLE) or not isinstance(exc, rex.RedisError):
        breaker.failure(exc)
        return RedisUnavailableError(f"Redis at {breaker.name} is unavailable: {exc}")
    return RedisCommandError(str(exc))


def run_sync(flow: Flow[T], client: Any, breaker: Breaker, counter: Counter) -> T:
    """Drive ``flow`` on a sync client: one round trip per batch.

    A failed batch is thrown into the flow, which may handle it and go on.
    """
    try:
        batch = next(flow)
        while True:
            try:
                results = execute_sync(batch, client, breaker, counter)
            except RedisMiddlewareError as exc:
                batch = flow.throw(exc)
                continue
            batch = flow.send(results)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], client: Any, breaker: Breaker, counter: Counter) -> T:
    """Drive ``flow`` on an asyncio client: one round trip per batch (failures thrown in)."""
    try:
        batch = next(flow)
        while True:
            try:
                results = await execute_async(batch, client, breaker, counter)
            except RedisMiddlewareError as exc:
                batch = flow.throw(exc)
                continue
            batch = flow.send(results)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _pipelines(batch: Batch, client: Any, counter: Counter) -> Generator[Any, list[Any], list[Any]]:
    """Yield the pipelines that answer ``batch`` (a second only to load new scripts)."""
    pipe = client.pipeline(transaction=False)
    _queue(pipe, batch)
    counter.round_trips += 1
    counter.commands += len(batch)
    results = yield pipe
    retry = _retry_ops(batch, results)
    if retry:  # first use of a script on this server: send its source once
        pipe = client.pipeline(transaction=False)
        for i in retry:
            pipe.execute_command(*_as_eval(batch[i]))
        counter.round_trips += 1
        counter.script_loads += 1
        for i, res in zip(retry, (yield pipe), strict=True):
            results[i] = res
    return results


def _single_sync(op: Call, client: Any, counter: Counter) -> list[Any]:
    counter.round_trips += 1
    counter.commands += 1
    try:
        return [client.execute_command(*op.args)]
    except rex.NoScriptError:
        if op.script is None:
            raise
        counter.round_trips += 1
        counter.script_loads += 1
        return [client.execute_command(*_as_eval(op))]
    except rex.ResponseError as exc:
        return [exc]


async def _single_async(op: Call, client: Any, counter: Counter) -> list[Any]:
    counter.round_trips += 1
    counter.commands += 1
    try:
        return [await client.execute_command(*op.args)]
    except rex.NoScriptError:
        if op.script is None:
            raise
        counter.round_trips += 1
        counter.script_loads += 1
        return [await client.execute_command(*_as_eval(op))]
    except rex.ResponseError as exc:
        return [exc]


def execute_sync(batch: Batch, client: Any, breaker: Breaker, counter: Counter) -> list[Any]:
    breaker.check()
    if len(batch) == 1:  # no pipeline object: measurably cheaper for the common case
        try:
            single = _single_sync(batch[0], client, counter)
        except _CLIENT_FAILURES as exc:
            raise _wrap(exc, breaker) from exc
        breaker.success()
        return _check(single)
    steps = _pipelines(batch, client, counter)
    try:
        pipe = next(steps)
        while True:
            pipe = steps.send(pipe.execute(raise_on_error=False))
    except StopIteration as stop:
        results: list[Any] = stop.value
    except _CLIENT_FAILURES as exc:
        raise _wrap(exc, breaker) from exc
    breaker.success()
    return _check(results)


async def execute_async(
    batch: Batch, client: Any, breaker: Breaker, counter: Counter
) -> list[Any]:
    breaker.check()
    if len(batch) == 1:
        try:
            single = await _single_async(batch[0], client, counter)
        except _CLIENT_FAILURES as exc:
            raise _wrap(exc, breaker) from exc
        breaker.success()
        return _check(single)
    steps = _pipelines(batch, client, counter)
    try:
        pipe = next(steps)
        while True:
            pipe = steps.send(await pipe.execute(raise_on_error=False))
    except StopIteration as stop:
        results: list[Any] = stop.value
    except _CLIENT_FAILURES as exc:
        raise _wrap(exc, breaker) from exc
    breaker.success()
    return _check(results)
