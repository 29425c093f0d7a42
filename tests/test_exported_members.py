"""The public API: the names SPEC fixes exist, in both interfaces, and nothing leaks."""

from __future__ import annotations

import inspect

import redis_middleware
import redis_middleware.asgi as asgi
import redis_middleware.wsgi as wsgi

SPEC_NAMES = {"SessionMiddleware", "RateLimitMiddleware", "CacheMiddleware",
              "PresenceMiddleware", "RedisMiddleware", "Presence", "Broadcast"}
ASGI_ONLY = {"RoomSocket", "join_room"}  # WebSockets: WSGI has none


def test_top_level_exports() -> None:
    assert {"Settings", "ConfigError"} <= set(redis_middleware.__all__)
    for name in redis_middleware.__all__:
        assert hasattr(redis_middleware, name)
    assert issubclass(redis_middleware.ConfigError, ValueError)


def test_asgi_and_wsgi_export_the_same_names() -> None:
    assert set(asgi.__all__) >= SPEC_NAMES
    assert set(asgi.__all__) - ASGI_ONLY == set(wsgi.__all__) - {"ENVIRON_KEY"}
    for name in set(asgi.__all__) - ASGI_ONLY:
        assert getattr(asgi, name).__name__ == getattr(wsgi, name).__name__ == name


def test_middleware_signature() -> None:
    for module in (asgi, wsgi):
        for name in SPEC_NAMES - {"Presence", "Broadcast"}:
            params = list(inspect.signature(getattr(module, name)).parameters.values())
            assert [p.name for p in params[:2]] == ["app", "settings"]
            assert params[1].default is None
            assert params[-1].kind is inspect.Parameter.VAR_KEYWORD


def test_presence_methods_are_async_in_asgi_and_sync_in_wsgi() -> None:
    for method in ("heartbeat", "is_online", "online_users", "online_count", "last_seen",
                   "remove"):
        assert inspect.iscoroutinefunction(getattr(asgi.Presence, method))
        assert not inspect.iscoroutinefunction(getattr(wsgi.Presence, method))


def test_broadcast_publishes_async_in_asgi_and_sync_in_wsgi() -> None:
    for method in ("publish", "history"):
        assert inspect.iscoroutinefunction(getattr(asgi.Broadcast, method))
        assert not inspect.iscoroutinefunction(getattr(wsgi.Broadcast, method))
    assert not hasattr(wsgi.Broadcast, "subscribe")  # subscribing needs an event loop


def test_data_cache_has_sync_methods_and_async_twins() -> None:
    from redis_middleware import DataCache, LockNotAcquired

    assert redis_middleware.DataCache is DataCache
    assert issubclass(LockNotAcquired, redis_middleware.RedisMiddlewareError)
    for method in ("get", "set", "delete", "get_or_set", "get_many", "set_many",
                   "delete_many", "add", "has", "touch", "ttl", "incr", "decr", "invalidate",
                   "clear"):
        assert not inspect.iscoroutinefunction(getattr(DataCache, method)), method
        assert inspect.iscoroutinefunction(getattr(DataCache, "a" + method)), method
    params = list(inspect.signature(DataCache).parameters.values())
    assert params[0].name == "settings" and params[0].default is None
    assert {"cached", "lock", "alock"} <= set(dir(DataCache))
