"""Response caching for WSGI apps: a shared, HTTP-correct cache in Redis."""

from __future__ import annotations

from typing import Any

from .._redis.connections import connections_for
from ..config.options import resolve_settings
from ..config.settings import Settings
from ..sansio.cache import CacheCore
from .stack import Stack

__all__ = ["Cache", "CacheMiddleware"]


class Cache:
    """Purge stored responses (sync): one URL, a tag, or everything."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self.settings = resolve_settings(settings, "cache", options)
        self.core = CacheCore(self.settings)
        self.redis = connections_for(self.settings)

    def purge_url(self, path: str, query: str = "") -> int:
        return self.redis.run(self.core.purge_url_flow(path, query))

    def purge_tag(self, tag: str) -> int:
        return self.redis.run(self.core.purge_tag_flow(tag))

    def purge_all(self) -> int:
        return self.redis.run(self.core.purge_all_flow())


class CacheMiddleware(Stack):
    """Caches GET responses of the configured routes in Redis (see the ASGI twin).

    Example::

        app.wsgi_app = CacheMiddleware(app.wsgi_app, settings, routes={"/items/{id}": 60})
    """

    parts = ("cache",)
