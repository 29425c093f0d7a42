"""Settings of a test's own, the ASGI and WSGI test clients of the matrix, plain Redis
clients on a backend's data for assertions, and a scenario step two suites share."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for, memory_server

from .wsgi_transport import WSGITransport

SECRET = "test-secret-" + "x" * 40


def make_settings(url: str, **overrides: Any) -> Settings:
    prefix = "t-" + uuid.uuid4().hex[:12]
    return Settings(redis_url=url, key_prefix=prefix, secret_key=(SECRET,), **overrides)


def raw_client(settings: Settings) -> Any:
    """A plain sync client on the same data, for assertions."""
    target = settings.target
    if target.kind == "memory":
        import fakeredis

        return fakeredis.FakeRedis(server=memory_server())
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.hosts])
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        # The master as Sentinel names it now; the sentinels' own connections closed at
        # once (left to the collector, they were reported unclosed by a later test).
        sentinel = Sentinel(list(target.hosts), socket_timeout=5)
        try:
            host, port = sentinel.discover_master(target.service_name)
        finally:
            for client in sentinel.sentinels:
                client.close()
        return redis.Redis(host=host, port=port, db=target.db)
    return redis.Redis.from_url(settings.redis_url)


class Clients:
    """Builds test clients for one interface (ASGI or WSGI) and closes them afterwards."""

    def __init__(self, interface: str, settings: Settings) -> None:
        self.interface = interface
        self.settings = settings
        self._open: list[Any] = []
        self._sweeping: list[Any] = []  # WSGI presence layers: their threads stop at close

    def __call__(
        self, middleware: str = "SessionMiddleware", *, https: bool = False,
        settings: Settings | None = None, app: Any = None, peer: str = "127.0.0.1",
        outer: tuple[tuple[str, dict[str, Any]], ...] = (), **options: Any,
    ) -> Any:
        """A client for the test app wrapped in ``middleware`` (with ``options``), itself
        wrapped in the ``outer`` layers (innermost first); requests come from ``peer``."""
        import httpx

        from . import apps

        settings = settings or self.settings
        base = "https://testserver" if https else "http://testserver"
        if self.interface == "asgi":
            from starlette.testclient import TestClient

            import redis_middleware.asgi as module
        else:
            import redis_middleware.wsgi as module  # type: ignore[no-redef]
        inner = app or (apps.asgi_app() if self.interface == "asgi" else apps.wsgi_app)
        wrapped = getattr(module, middleware)(inner, settings, **options)
        if self.interface == "wsgi" and middleware == "PresenceMiddleware":
            self._sweeping.append(wrapped)
        for name, layer_options in outer:
            wrapped = getattr(module, name)(wrapped, settings, **layer_options)
        if self.interface == "asgi":
            client = TestClient(wrapped, base_url=base, client=(peer, 50000))
            client.__enter__()
        else:
            client = httpx.Client(transport=WSGITransport(wrapped, peer), base_url=base)
        self._open.append((client, settings))
        return client

    def close(self) -> None:
        for client, settings in self._open:
            if self.interface == "asgi":
                # Close this loop's asyncio Redis client before the portal's loop ends.
                client.portal.call(connections_for(settings).aclose)
                client.__exit__(None, None, None)
            else:
                client.close()
        for layer in self._sweeping:  # no sweep of a finished test's app after this
            layer.close()


def close_sync_clients() -> None:
    """Close the clients the package keeps per settings, so no socket outlives its test
    (ResourceWarning)."""
    from redis_middleware._redis import connections

    for conns in list(connections._registry.values()):
        conns.close()
    connections._registry.clear()


def stale_if_error_is_served(client: Any, monkeypatch: pytest.MonkeyPatch, failure: str) -> str:
    """Store a response that allows stale-if-error, let it expire, make the app fail:
    the stored copy must answer. Returns the URL used."""
    from . import apps

    url = "/c/item?cc=max-age%3D1%2C%20stale-if-error%3D30"
    original = client.get(url)
    time.sleep(1.2)
    monkeypatch.setattr(apps, "failing", failure)
    served = client.get(url)
    assert (served.status_code, served.content) == (200, original.content)
    assert served.headers["x-cache"] == "STALE"
    assert served.headers["cache-status"].endswith('detail="stale-if-error"')
    return url
