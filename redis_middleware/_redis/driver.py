"""The two drivers: run a flow's batches on a sync or an asyncio client.

A client is an *execute* function: commands in, replies out (error replies as
exceptions, in place), one round trip per call. The built-in client
(``wire_sync.py``, ``wire_async.py``) is one; :func:`redispy_execute` makes one of a
redis-py client (Cluster, Sentinel, ``memory://``). Everything but that call is shared
by the two drivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from redis import exceptions as rex

from ..errors import RedisCommandError, RedisMiddlewareError, RedisUnavailableError
from ..sansio import metrics
from ..sansio.flow import Batch, Delegate, Pause, PausingFlow
from .breaker import Breaker

T = TypeVar("T")

# A Cluster with a master missing answers CLUSTERDOWN (ClusterError), or redis-py finds a
# slot no node serves (RedisClusterException): an outage of part of Redis, like a refused
# connection, not a refused command.
_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.ClusterError,
                rex.RedisClusterException, OSError, TimeoutError)
# Anything else a client call raises (a redis-py bug under a race, say) also means
# "Redis is not usable now": never a 500. Only the client call sits in these blocks.
_CLIENT_FAILURES = (rex.RedisError, rex.RedisClusterException, OSError, TimeoutError,
                    AttributeError, RuntimeError)


class Counter(Protocol):
    round_trips: int
    commands: int
    script_loads: int  # round trips spent sending a script's source (first use per server)


Command = tuple[Any, ...]
Execute = Callable[[list[Command]], list[Any]]
AsyncExecute = Callable[[list[Command]], Awaitable[list[Any]]]
CallOne = Callable[[Command], Any]  # one command in, its reply out (an error reply too)
AsyncCallOne = Callable[[Command], Awaitable[Any]]


def one_of(execute: Execute) -> CallOne:
    """A client's :data:`CallOne`, when it has none of its own (the redis-py clients)."""
    def call(command: Command) -> Any:
        return execute([command])[0]

    return call


def aone_of(execute: AsyncExecute) -> AsyncCallOne:
    """:func:`one_of` for asyncio."""
    async def call(command: Command) -> Any:
        return (await execute([command]))[0]

    return call


def redispy_execute(client: Any) -> Execute:
    """Run commands on a redis-py sync client: one call, or one pipeline for several.

    Error replies come back as exceptions, in place, as with the built-in client.
    """
    def execute(commands: list[Command]) -> list[Any]:
        if len(commands) == 1:  # no pipeline object: measurably cheaper
            try:
                return [client.execute_command(*commands[0])]
            except rex.ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    return execute


def redispy_cluster_execute(client: Any) -> Execute:
    """:func:`redispy_execute` on a sync RedisCluster, with one repair.

    In a pipeline, redis-py asks its *default node* for the keys of EVALSHA (``COMMAND
    GETKEYS``). After a failover that node may be gone, and redis-py keeps it on that
    path: every pipeline carrying a script then fails, for good (seen in the Cluster
    failover drill). So on a connection failure a new default node is chosen among the
    primaries redis-py knows by then.
    """
    inner = redispy_execute(client)

    def execute(commands: list[Command]) -> list[Any]:
        try:
            results = inner(commands)
        except _UNAVAILABLE:
            client.replace_default_node()
            raise
        if any(isinstance(res, _UNAVAILABLE) for res in results):
            client.replace_default_node()
        return results

    return execute


def redispy_aexecute(client: Any) -> AsyncExecute:
    """The asyncio twin of :func:`redispy_execute`."""
    async def execute(commands: list[Command]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await client.execute_command(*commands[0])]
            except rex.ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    return execute


def _any_error(results: list[Any]) -> bool:
    """Whether any reply is an error (the rare case: everything below is skipped without)."""
    for res in results:  # noqa: SIM110 - a loop: any() of a generator costs more here
        if isinstance(res, BaseException):
            return True
    return False


def _not_loaded(batch: Batch, results: Sequence[Any]) -> list[int]:
    """Indexes of EVALSHA calls that failed only because the script was not loaded."""
    return [
        i for i, (op, res) in enumerate(zip(batch, results, strict=True))
        if op.script is not None and isinstance(res, rex.NoScriptError)
    ]


def _with_source(batch: Batch, retry: list[int], counter: Counter) -> list[Command]:
    """First use of scripts on this server: send their source once (EVAL)."""
    counter.round_trips += 1
    counter.script_loads += 1
    out: list[Command] = []
    for i in retry:
        script = batch[i].script
        assert script is not None  # only script ops are retried
        out.append(("EVAL", script.source, *batch[i].args[2:]))
    return out


def _check(results: list[Any]) -> list[Any]:
    failed = None
    for res in results:
        if isinstance(res, BaseException):
            if isinstance(res, _UNAVAILABLE):
                raise RedisUnavailableError(str(res)) from res
            failed = failed or res
    if failed is not None:  # the replies go along: gather() gives each flow its own
        raise RedisCommandError(str(failed), results) from failed
    return results


def _wrap(exc: BaseException, breaker: Breaker) -> BaseException:
    if isinstance(exc, _UNAVAILABLE) or not isinstance(exc, rex.RedisError):
        breaker.failure(exc)
        return RedisUnavailableError(f"Redis at {breaker.name} is unavailable: {exc}")
    return RedisCommandError(str(exc))


def run_sync(flow: PausingFlow[T], execute: Execute, breaker: Breaker, counter: Counter,
             first: Batch | Pause | Delegate | None = None) -> T:
    """Drive ``flow`` on a sync client: one round trip per batch; a :class:`Pause` sleeps;
    a :class:`Delegate` is called.

    A failed batch is thrown into the flow, which may handle it and go on. So is whatever
    a delegate raises (its own failure, never the breaker's: a slow or failing loader is
    no Redis outage): the flow may free what it holds with a round trip, then let it go
    on. A driver stopped by anything else (an interrupt, a cancelled task) closes the
    flow, so that its ``finally`` blocks run now rather than when it is collected.
    ``first``: the batch the flow yielded already (:func:`~..sansio.flow.step`).
    """
    try:
        batch = next(flow) if first is None else first
        while True:
            if isinstance(batch, Pause):
                time.sleep(batch.seconds)
                batch = flow.send(None)
                continue
            if isinstance(batch, Delegate):
                try:
                    answer = batch.call()
                except BaseException as exc:
                    batch = flow.throw(exc)
                    continue
                batch = flow.send(answer)
                continue
            try:
                results = execute_sync(batch, execute, breaker, counter)
            except RedisMiddlewareError as exc:
                batch = flow.throw(exc)
                continue
            batch = flow.send(results)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        flow.close()
        raise


async def run_async(flow: PausingFlow[T], execute: AsyncExecute, breaker: Breaker,
                    counter: Counter, first: Batch | Pause | Delegate | None = None) -> T:
    """The asyncio twin of :func:`run_sync` (a delegate's ``acall()`` is awaited; a
    cancellation there is thrown into the flow like any exception of the delegate)."""
    try:
        batch = next(flow) if first is None else first
        while True:
            if isinstance(batch, Pause):
                await asyncio.sleep(batch.seconds)
                batch = flow.send(None)
                continue
            if isinstance(batch, Delegate):
                try:
                    answer = await batch.acall()
                except BaseException as exc:
                    batch = flow.throw(exc)
                    continue
                batch = flow.send(answer)
                continue
            try:
                results = await execute_async(batch, execute, breaker, counter)
            except RedisMiddlewareError as exc:
                batch = flow.throw(exc)
                continue
            batch = flow.send(results)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        flow.close()
        raise


def execute_sync(batch: Batch, execute: Execute, breaker: Breaker, counter: Counter
                 ) -> list[Any]:
    breaker.check()
    counter.round_trips += 1
    counter.commands += len(batch)
    started = time.perf_counter() if metrics.hook is not None else 0.0
    try:
        results = execute([op.args for op in batch])
        failed = _any_error(results)
        if failed:
            retry = _not_loaded(batch, results)
            if retry:
                for i, res in zip(retry, execute(_with_source(batch, retry, counter)),
                                  strict=True):
                    results[i] = res
    except _CLIENT_FAILURES as exc:
        if metrics.hook is not None:
            metrics.hook.redis(time.perf_counter() - started, len(batch), type(exc).__name__)
        raise _wrap(exc, breaker) from exc
    breaker.success()
    if metrics.hook is not None:
        metrics.hook.redis(time.perf_counter() - started, len(batch), None)
    return _check(results) if failed else results


def _one_failed(exc: BaseException, breaker: Breaker, hook: Any, started: float
                ) -> BaseException:
    """What :func:`call_sync` and :func:`call_async` raise when the client call failed."""
    if hook is not None:
        hook.redis(time.perf_counter() - started, 1, type(exc).__name__)
    return _wrap(exc, breaker)


def _one_answered(reply: Any, breaker: Breaker, hook: Any, started: float) -> Any:
    """One command's reply, once the breaker and the metrics know it came (an error
    reply raised as :func:`_check` raises it)."""
    if breaker.failing:
        breaker.success()
    if hook is not None:
        hook.redis(time.perf_counter() - started, 1, None)
    if isinstance(reply, BaseException):
        _check([reply])
    return reply


def call_sync(command: Command, call: CallOne, breaker: Breaker, counter: Counter) -> Any:
    """:func:`execute_sync` of one command that is no script: its reply. The cache
    backends' hot read: the batch, its lists and its loops were 6 of the 28 Python calls
    of a Django ``get`` hit, and each call costs several times more right after a wait on
    the socket than in a loop (``docs/benchmarks.md``, "Data cache")."""
    if breaker.failing:
        breaker.check()
    counter.round_trips += 1
    counter.commands += 1
    hook = metrics.hook
    started = time.perf_counter() if hook is not None else 0.0
    try:
        reply = call(command)
    except _CLIENT_FAILURES as exc:
        raise _one_failed(exc, breaker, hook, started) from exc
    if breaker.failing or hook is not None or isinstance(reply, BaseException):
        return _one_answered(reply, breaker, hook, started)
    return reply  # the usual case, without a call more


async def call_async(command: Command, call: AsyncCallOne, breaker: Breaker, counter: Counter
                     ) -> Any:
    """:func:`call_sync` for asyncio: 9 of the 56 Python calls of an asyncio hit were the
    batch's."""
    if breaker.failing:
        breaker.check()
    counter.round_trips += 1
    counter.commands += 1
    hook = metrics.hook
    started = time.perf_counter() if hook is not None else 0.0
    try:
        reply = await call(command)
    except _CLIENT_FAILURES as exc:
        raise _one_failed(exc, breaker, hook, started) from exc
    if breaker.failing or hook is not None or isinstance(reply, BaseException):
        return _one_answered(reply, breaker, hook, started)
    return reply  # the usual case, without a call more


async def execute_async(
    batch: Batch, execute: AsyncExecute, breaker: Breaker, counter: Counter
) -> list[Any]:
    breaker.check()
    counter.round_trips += 1
    counter.commands += len(batch)
    started = time.perf_counter() if metrics.hook is not None else 0.0
    try:
        results = await execute([op.args for op in batch])
        failed = _any_error(results)
        if failed:
            retry = _not_loaded(batch, results)
            if retry:
                again = await execute(_with_source(batch, retry, counter))
                for i, res in zip(retry, again, strict=True):
                    results[i] = res
    except _CLIENT_FAILURES as exc:
        if metrics.hook is not None:
            metrics.hook.redis(time.perf_counter() - started, len(batch), type(exc).__name__)
        raise _wrap(exc, breaker) from exc
    breaker.success()
    if metrics.hook is not None:
        metrics.hook.redis(time.perf_counter() - started, len(batch), None)
    return _check(results) if failed else results
