"""Stopping background asyncio tasks: cancelled until they end, within a bound.

One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for``, which
redis-py uses to write each command under its socket timeout (and our Pub/Sub to wait
for confirmations), returns the inner result and drops a cancellation that arrives as
the inner call finishes (CPython gh-86296, fixed in 3.12). A loop such as the presence
sweeper then runs on as if never cancelled, and whoever awaits it (the app's lifespan
shutdown, a WebSocket's teardown) waits forever. So the cancellation is repeated while
the task runs on, and the wait is bounded; and loops that repeat an action (:class:`Every`)
also end on a flag, so that one whose cancellation is lost stops at its next round even
when nobody waits for it (a cancelled teardown cannot)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Every", "detach", "finish", "stop_tasks"]

logger = logging.getLogger("redis_middleware")

# A task is cancelled again when it has not ended this long after the last cancellation:
# long enough for its own cleanup (a close, a release) to run, which a new cancellation
# would cut short.
RECANCEL_AFTER = 0.5


_detached: set[asyncio.Task[Any]] = set()  # referenced until they finish


def detach(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``work`` on its own: a cancelled caller (a server cancelling a handler
    whose client left) does not stop it half-way."""
    task = asyncio.create_task(work)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task


async def finish(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to the end; if this caller is cancelled meanwhile, the work still
    runs to its end (cleanup: a teardown, an unsubscription, a presence lease)."""
    await asyncio.shield(detach(work))


async def stop_tasks(*tasks: asyncio.Task[Any] | None, within: float = 5.0,
                     what: str = "background task") -> bool:
    """Cancel ``tasks`` and wait until all have ended, at most ``within`` seconds.

    Their exceptions are retrieved, not raised: they are being stopped. A task still
    running after ``within`` seconds is left cancelled, with one log line; the answer
    is then False. A cancellation of the caller is not swallowed."""
    pending = {task for task in tasks if task is not None and not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning("%d %s(s) did not stop within %.1f s of being cancelled; "
                           "left behind", len(pending), what, within)
            break
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_AFTER, remaining))
        except asyncio.CancelledError:  # ours: no waiting, but they were cancelled again
            for task in pending:
                task.cancel()
            raise
    for ended in tasks:
        if ended is not None and ended.done() and not ended.cancelled():
            ended.exception()  # retrieved: no "exception was never retrieved" later
    return not pending


class Every:
    """``action()`` every ``interval`` seconds, in a task of its own, until stopped.

    The loop checks a flag before each round besides being cancelled: a round whose
    cancellation was lost is the last one."""

    def __init__(self, interval: float, action: Callable[[], Awaitable[Any]],
                 what: str) -> None:
        self.what = what
        self._running = True
        self.task = asyncio.create_task(self._loop(interval, action))

    async def _loop(self, interval: float, action: Callable[[], Awaitable[Any]]) -> None:
        while self._running:
            await asyncio.sleep(interval)
            if self._running:
                await action()

    def halt(self) -> None:
        """Stop at the next round at the latest (cancelled now; not waited for)."""
        self._running = False
        self.task.cancel()

    async def stop(self, within: float = 5.0) -> bool:
        """Halt and wait until the task ended, at most ``within`` seconds."""
        self.halt()
        return await stop_tasks(self.task, within=within, what=self.what)
