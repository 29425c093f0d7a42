"""``DataCache``: cache-aside for function results, sync and async, on the shared Redis.

Example::

    from redis_middleware import DataCache

    cache = DataCache(settings)

    @cache.cached(ttl=3600, key="user:{user_id}:profile", tags=["user:{user_id}"])
    def load_profile(user_id: int) -> dict: ...

    cache.invalidate(tags=["user:42"])

The decisions (keys, the value envelope, the scripts, ``get_or_set`` as one flow) are in
``sansio/cache/data*.py``. Here: ``cache`` (the class: each method runs one flow, with
the sync or the asyncio driver), ``decorator`` (``cached``), ``flight`` (callers of one
process sharing a load), ``refresh`` (background refreshes), ``leases`` and ``locks``
(leases renewed while held; ``DataCache.lock``), ``clearing`` (``clear`` on a Cluster).
"""

from ..errors import LockNotAcquired
from .cache import DataCache
from .locks import ALock, Lock

__all__ = ["ALock", "DataCache", "Lock", "LockNotAcquired"]
