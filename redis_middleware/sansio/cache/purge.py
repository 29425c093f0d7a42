"""Invalidating and purging stored responses: after an unsafe request (RFC 9111 4.4),
and by URL, tag or everything (``Cache.purge_*``, the CLI). Proportional to what is
purged: the URL registry and tag sets are read, never SCAN."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ...config.rules import CacheRouteSpec
from ...keys import KeySpace
from ..flow import Call, Flow
from .entry import CachePlan
from .scripts import INVALIDATE

__all__ = ["Purging"]


class Purging:
    """The invalidation and purge flows of :class:`~.core.CacheCore` (which provides the
    keys, the routes and how a batch of writes is sent)."""

    keys: KeySpace

    def route(self, path: str) -> CacheRouteSpec | None:
        raise NotImplementedError

    def url_digest(self, path: str, query: str) -> str:
        raise NotImplementedError

    def _writing(self, keys: Sequence[str], batch: tuple[Call, ...]) -> Flow[list[Any]]:
        raise NotImplementedError

    def invalidate_flow(self, url: str, *more: str) -> Flow[int]:
        """Drop every stored variant of the URLs (digests)."""
        urls = (url, *more)
        answers = yield from self._writing([self.keys.cache_vary(u) for u in urls], tuple(
            INVALIDATE([self.keys.cache_variants(u), self.keys.cache_vary(u)], [])
            for u in urls))
        return sum(int(n) for n in answers)

    def invalidated_urls(self, plan: CachePlan, headers: Sequence[tuple[str, str]]
                         ) -> list[str]:
        """4.4: the URL itself, and the same-origin URLs in Location and Content-Location
        that a route caches."""
        urls = [plan.url]
        for name in ("location", "content-location"):
            for value in (v for k, v in headers if k.lower() == name):
                parts = urlsplit(value.strip())
                if parts.netloc and parts.netloc.lower() != plan.host:
                    continue  # another origin: never ours to invalidate (4.4)
                path = parts.path if parts.path.startswith("/") else None
                if path is None or self.route(path) is None:
                    continue
                url = self.url_digest(path, parts.query)
                if url not in urls:
                    urls.append(url)
        return urls

    def purge_url_flow(self, path: str, query: str = "") -> Flow[int]:
        """Drop every stored variant of one URL."""
        return (yield from self.invalidate_flow(self.url_digest(path, query)))

    def _purge_set_flow(self, set_key: str) -> Flow[int]:
        urls = yield from self.stored_urls_flow(set_key)
        return (yield from self.purge_urls_flow(urls, set_key))

    def stored_urls_flow(self, set_key: str | None = None) -> Flow[list[str]]:
        """The URL digests a registry (default: every stored URL) holds."""
        key = set_key or self.keys.cache_registry()
        (members,) = yield (Call.of("ZRANGE", key, 0, -1),)
        return sorted(m.decode() for m in members)

    def purge_urls_flow(self, urls: list[str], set_key: str | None = None) -> Flow[int]:
        """Drop the responses of ``urls`` (digests from :meth:`stored_urls_flow`) in one
        round trip and take them out of the registry; returns how many were stored.
        Callers with many URLs purge them in batches (the CLI shows the progress)."""
        key = set_key or self.keys.cache_registry()
        # One script per URL: each URL's keys live in their own Cluster slot.
        ops = tuple(INVALIDATE([self.keys.cache_variants(u), self.keys.cache_vary(u)], [])
                    for u in urls)
        answers = yield from self._writing([self.keys.cache_vary(u) for u in urls], (
            *ops, Call.of("ZREM", key, *urls) if urls else Call.of("EXISTS", key)))
        return sum(int(a) for a in answers[:-1])

    def purge_tag_flow(self, tag: str) -> Flow[int]:
        """Drop every stored response of the routes carrying ``tag``."""
        return (yield from self._purge_set_flow(self.keys.cache_tag(tag)))

    def purge_all_flow(self) -> Flow[int]:
        """Drop every stored response (proportional to what is stored; no SCAN)."""
        return (yield from self._purge_set_flow(self.keys.cache_registry()))
