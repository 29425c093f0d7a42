"""Response caching for ASGI apps: a shared, HTTP-correct cache in Redis."""

from __future__ import annotations

from typing import Any

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..sansio.cache import CacheCore, SessionUse
from ..sansio.sessions.mapping import session_use
from .stack import Stack

__all__ = ["Cache", "CacheMiddleware"]


def session_touched(scope: Any) -> SessionUse:
    return session_use(scope.get("session"))


class Cache:
    """Purge stored responses (async): one URL, a tag, or everything."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "cache", options)
        self.core = CacheCore(self.settings)
        self.redis = connections_for(self.settings)

    async def purge_url(self, path: str, query: str = "") -> int:
        return await self.redis.arun(self.core.purge_url_flow(path, query))

    async def purge_tag(self, tag: str) -> int:
        return await self.redis.arun(self.core.purge_tag_flow(tag))

    async def purge_all(self) -> int:
        return await self.redis.arun(self.core.purge_all_flow())


class CacheMiddleware(Stack):
    """Caches GET responses of the configured routes in Redis, by HTTP's rules.

    Example::

        app = CacheMiddleware(app, settings, routes={"/items/{id}": 60,
                                                     "/products": {"ttl": 30, "tags": ["p"]}})

    A hit costs one round trip and never calls the app; concurrent misses compute
    once (stampede guard). Responses with Set-Cookie, ``private``/``no-store``, or
    that changed the session are never stored. Redis down: the cache is bypassed.
    """

    parts = ("cache",)
