"""Moving-window and sliding-window-counter limits, through the ``limits`` library.

The library's strategies and storages are used as they are (with our key prefix,
timeouts and circuit breaker); they cost a few round trips per limit, where our
fixed-window script costs one in all. On ``memory://`` they use the library's
in-process memory storage. Several limits are checked first and then counted,
which is not atomic across concurrent requests (the fixed window is).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Generator
from typing import Any

from limits import RateLimitItem, parse
from limits import strategies as sync_strategies
from limits.aio import strategies as async_strategies
from limits.storage import storage_from_string
from redis import exceptions as rex

from ..config.rates import Rate
from ..errors import RedisMiddlewareError, RedisUnavailableError
from ..keys import KeySpace
from ..sansio.ratelimit.core import Check, Decision, RateLimitCore, limits_key
from .breaker import Breaker
from .connections import RedisConnections

_STRATEGIES = {
    "moving-window": "MovingWindowRateLimiter",
    "sliding-window-counter": "SlidingWindowCounterRateLimiter",
}
_FAILURES = (rex.RedisError, OSError, TimeoutError)


def _uri(conns: RedisConnections, asyncio_storage: bool) -> str:
    target = conns.target
    if target.kind == "memory":
        return "async+memory://" if asyncio_storage else "memory://"
    url = target.url
    if url.startswith("unix://"):
        url = "redis+unix://" + url[len("unix://"):]
    elif url.startswith("rediss+"):  # limits spells TLS for these with ?ssl=true
        url = "redis+" + url[len("rediss+"):] + ("&" if "?" in url else "?") + "ssl=true"
    return "async+" + url if asyncio_storage else url


async def _close_storage(storage: Any) -> None:
    # limits' asyncio storages have no close(); their redis-py client is the bridge's.
    client = getattr(getattr(storage, "bridge", None), "storage", None)
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()


class LimitsStrategy:
    """Runs checks with a ``limits`` strategy on a storage built from our settings."""

    def __init__(self, core: RateLimitCore, conns: RedisConnections) -> None:
        self.core = core
        self.conns = conns
        self.name = _STRATEGIES[core.settings.ratelimit_strategy]
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._items: dict[Rate, RateLimitItem] = {}

    def _item(self, rate: Rate) -> RateLimitItem:
        """The ``limits`` item of one of the core's rates, parsed once (the configured
        rates are few)."""
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = parse(rate.spec)
        return item

    def _options(self, asyncio_storage: bool) -> dict[str, Any]:
        s = self.core.settings
        if self.conns.target.kind == "memory":
            return {}
        options: dict[str, Any] = {
            "key_prefix": KeySpace(s.key_prefix).limits_prefix(),
            "socket_timeout": s.socket_timeout,
            "socket_connect_timeout": s.connect_timeout,
        }
        if asyncio_storage:
            options["implementation"] = "redispy"
        return options

    def _limiter(self, asyncio_storage: bool) -> Any:
        module: Any = async_strategies if asyncio_storage else sync_strategies
        storage = storage_from_string(
            _uri(self.conns, asyncio_storage), **self._options(asyncio_storage)
        )
        return getattr(module, self.name)(storage)

    @property
    def breaker(self) -> Breaker:
        return self.conns.breaker

    def _steps(self, check: Check) -> Generator[tuple[str, tuple[Any, ...]], Any, Decision]:
        """The check as limiter calls: yields ``(method, args)``, receives each result.

        Test every limit, count them all only if all pass, then read their windows. The
        sync and asyncio limiters have the same methods, so one sequence serves both.
        """
        items = [self._item(rate) for rate in check.rule.items]
        ids = [limits_key(check, i) for i in range(len(items))]
        cost = {"cost": check.rule.cost}
        ok = []
        for item, key in zip(items, ids, strict=True):
            ok.append((yield "test", (item, *key, cost)))
        if all(ok):
            ok = []
            for item, key in zip(items, ids, strict=True):
                ok.append((yield "hit", (item, *key, cost)))
        stats = []
        for item, key in zip(items, ids, strict=True):
            stats.append((yield "get_window_stats", (item, *key, {})))
        now = time.time()
        counts = [item.amount - st.remaining for item, st in zip(items, stats, strict=True)]
        resets = [st.reset_time - now for st in stats]
        breached = next((i for i, good in enumerate(ok) if not good), -1)
        return self.core.decide(check, breached, counts, resets)

    def verdict(self, check: Check) -> Decision | None:
        """:meth:`check`, or the rule's answer when Redis failed (None: fail open)."""
        try:
            return self.check(check)
        except RedisMiddlewareError as exc:
            return self.core.unavailable(check, exc)

    async def averdict(self, check: Check) -> Decision | None:
        """The asyncio twin of :meth:`verdict`."""
        try:
            return await self.acheck(check)
        except RedisMiddlewareError as exc:
            return self.core.unavailable(check, exc)

    def check(self, check: Check) -> Decision:
        self.breaker.check()
        steps = self._steps(check)
        try:
            if self._sync is None:
                self._sync = self._limiter(False)
            method, args = next(steps)
            while True:
                *positional, keywords = args
                method, args = steps.send(getattr(self._sync, method)(*positional, **keywords))
        except StopIteration as done:
            self.breaker.success()
            return done.value  # type: ignore[no-any-return]
        except _FAILURES as exc:
            self.breaker.failure(exc)
            raise RedisUnavailableError(str(exc)) from exc

    async def acheck(self, check: Check) -> Decision:
        if self.conns.target.kind == "memory":
            # One in-process store for every event loop (a process may run requests on
            # several, as Starlette's TestClient does): the sync memory storage is plain
            # dict work under a lock, it never blocks the loop.
            return self.check(check)
        self.breaker.check()
        steps = self._steps(check)
        try:
            loop = asyncio.get_running_loop()
            limiter = self._async.get(loop)
            if limiter is None:
                limiter = self._async[loop] = self._limiter(True)
                self.conns.on_aclose(lambda: _close_storage(limiter.storage))
            method, args = next(steps)
            while True:
                *positional, keywords = args
                result = await getattr(limiter, method)(*positional, **keywords)
                method, args = steps.send(result)
        except StopIteration as done:
            self.breaker.success()
            return done.value  # type: ignore[no-any-return]
        except _FAILURES as exc:
            self.breaker.failure(exc)
            raise RedisUnavailableError(str(exc)) from exc
