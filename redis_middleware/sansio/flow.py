"""The decide-once core's vocabulary: Redis operations and flows.

A *flow* is a generator that yields batches of operations and receives their
results (in the style of httpx's auth flows). It does no I/O; the drivers in
``_redis/driver.py`` run each batch as one pipeline round trip on the sync or the
asyncio client. :func:`gather` runs several flows in lock-step so that several
features of one request share round trips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import RedisCommandError

__all__ = ["Batch", "Call", "Delegate", "Flow", "Pause", "PausingFlow", "Script",
           "gather", "run_pure", "step"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, run with EVALSHA (falling back to EVAL once per process)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    def __call__(self, keys: Sequence[str], args: Sequence[Any] = ()) -> Call:
        return Call(
            ("EVALSHA", self.sha, len(keys), *keys, *args), script=self
        )


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
class Call:
    """One Redis command (``args[0]`` is its name)."""

    args: tuple[Any, ...]
    script: Script | None = None

    @classmethod
    def of(cls, *args: Any) -> Call:
        return cls(args)


@dataclass(frozen=True, slots=True)
class Pause:
    """Yielded instead of a batch: the driver waits ``seconds``, then sends None.

    Only for a flow run on its own (:func:`gather` merges batches, not pauses).
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class Delegate:
    """Yielded instead of a batch: work done outside the flow's round trips, by a client
    library on its own connection (the ``limits`` strategies) or by the process (the
    data cache's loader). The sync driver sends back ``call()``, the asyncio driver
    ``await acall()``; what either raises (a cancellation too) is thrown into the flow,
    which may free what it holds with a round trip before letting it go on. Neither
    counts for the circuit breaker. Only for a flow run on its own, like :class:`Pause`.

    A driver that stops on anything else closes the flow: its cleanup on
    ``GeneratorExit`` must not yield."""

    call: Callable[[], Any]
    acall: Callable[[], Awaitable[Any]]


Batch = tuple[Call, ...]
Flow = Generator[Batch, list[Any], T]
PausingFlow = Generator[Batch | Pause | Delegate, Any, T]  # a Flow that may also wait
# or delegate


def step(flow: PausingFlow[T]) -> tuple[bool, Any]:
    """Start ``flow``: ``(True, its result)`` when it needs no I/O at all, else
    ``(False, its first batch)``, which a driver takes with the flow and goes on from
    (``run(flow, first)``).

    Many flows on the request path decide without Redis (nothing to save, nothing to
    store); stepping them here spares the asyncio driver's coroutine for them. Handing
    the driver the first batch, rather than a generator that yields it and then relays
    to the flow, spares a generator per request and a frame per round trip (measured:
    about 1% of a signed-in request's instructions).
    """
    try:
        return False, next(flow)
    except StopIteration as stop:
        return True, stop.value


def run_pure(flow: Flow[T], results: Sequence[list[Any]]) -> T:
    """Drive ``flow`` with canned results, one list per batch (for tests and dry runs)."""
    batch = next(flow)
    for answer in results:
        if len(answer) != len(batch):
            raise ValueError(f"batch of {len(batch)} ops answered with {len(answer)} results")
        try:
            batch = flow.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
    raise RuntimeError("flow wanted more batches than results were given")


def gather(*flows: Flow[Any], return_exceptions: bool = False) -> Flow[list[Any]]:
    """Run ``flows`` side by side: each round trip carries every unfinished flow's batch.

    Returns the flows' return values in order. A failed round trip is thrown into
    every flow it carried, except that when Redis answered with error replies only the
    flows whose own commands failed get the error; the others go on with their replies.
    With ``return_exceptions`` a flow that does not handle its error returns it as its
    result (as :func:`asyncio.gather` does) instead of failing the whole gather.
    """
    if len(flows) == 1:  # nothing to merge: run it directly (the common case)
        try:
            return [(yield from flows[0])]
        except Exception as exc:
            if not return_exceptions:
                raise
            return [exc]
    results: list[Any] = [None] * len(flows)
    pending: list[tuple[int, Batch]] = []
    for i, flow in enumerate(flows):
        _advance(flow, i, None, None, pending, results, return_exceptions)
    while pending:
        order, pending = pending, []
        merged: Batch = ()
        for _, batch in order:
            merged += batch
        try:
            answers: list[Any] = yield merged
        except Exception as exc:
            replies = exc.replies if isinstance(exc, RedisCommandError) else None
            if replies is None or len(replies) != len(merged):
                for i, _ in order:  # handed to every flow that was waiting
                    _advance(flows[i], i, None, exc, pending, results, return_exceptions)
                continue
            offset = 0  # error replies in place: each flow gets its own, or its error
            for i, batch in order:
                own = replies[offset:offset + len(batch)]
                error = _own_error(own)
                _advance(flows[i], i, None if error else own, error, pending, results,
                         return_exceptions)
                offset += len(batch)
            continue
        offset = 0
        for i, batch in order:  # the common path, inlined: it runs for every round trip
            end = offset + len(batch)
            try:
                step = flows[i].send(answers[offset:end])
                while not step:
                    step = flows[i].send([])
                pending.append((i, step))
            except StopIteration as stop:
                results[i] = stop.value
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc
            offset = end
    return results


def _own_error(replies: list[Any]) -> RedisCommandError | None:
    """The error of a flow's own replies, if Redis refused any of its commands."""
    for reply in replies:
        if isinstance(reply, BaseException):
            error = RedisCommandError(str(reply), replies)
            error.__cause__ = reply
            return error
    return None


def _advance(
    flow: Flow[Any],
    i: int,
    answers: list[Any] | None,
    error: Exception | None,
    pending: list[tuple[int, Batch]],
    results: list[Any],
    return_exceptions: bool,
) -> None:
    """Step flow ``i`` (start it, send it its answers, or throw ``error`` into it)."""
    try:
        if error is not None:
            batch = flow.throw(error)
        elif answers is None:
            batch = next(flow)
        else:
            batch = flow.send(answers)
        while not batch:
            batch = flow.send([])
    except StopIteration as stop:
        results[i] = stop.value
        return
    except Exception as exc:
        if not return_exceptions:
            raise
        results[i] = exc
        return
    pending.append((i, batch))
