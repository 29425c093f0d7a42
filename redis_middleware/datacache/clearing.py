"""``clear`` on a Redis Cluster: every primary scanned by redis-py's cluster client (its
``scan_iter`` visits each), the keys unlinked in batches. One server: the core's
``clear_flow`` (SCAN and UNLINK as a flow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._redis.connections import RedisConnections
from ..errors import RedisUnavailableError
from ..sansio.cache.data import DataCore
from ..sansio.flow import Delegate

__all__ = ["per_primary"]

_BATCH = 500


def per_primary(conns: RedisConnections, core: DataCore) -> Delegate | None:
    """What ``Calls.clear`` delegates on a Cluster (None elsewhere)."""
    if not core.cluster:
        return None
    patterns = core.keys.data_patterns(core.namespace)
    return Delegate(lambda: _clear(conns.sync_client(), patterns),
                    lambda: _aclear(conns.async_client(), patterns))


def _clear(client: Any, patterns: Sequence[str]) -> int:
    removed = 0
    try:
        for pattern in patterns:
            batch: list[Any] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= _BATCH:
                    removed += client.unlink(*batch)
                    batch = []
            if batch:
                removed += client.unlink(*batch)
    except Exception as exc:  # any client failure is an outage here, as in the drivers
        raise RedisUnavailableError(f"clearing the data cache failed: {exc}") from exc
    return removed


async def _aclear(client: Any, patterns: Sequence[str]) -> int:
    removed = 0
    try:
        for pattern in patterns:
            batch: list[Any] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= _BATCH:
                    removed += await client.unlink(*batch)
                    batch = []
            if batch:
                removed += await client.unlink(*batch)
    except Exception as exc:
        raise RedisUnavailableError(f"clearing the data cache failed: {exc}") from exc
    return removed
