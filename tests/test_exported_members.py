"""The public API: the names SPEC fixes exist, in both interfaces, and nothing leaks;
every import path the docs show keeps working."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

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


# Every module path and name that the docs and the README show, in code samples and in
# inline code: a module that moves keeps these working (re-exports), or this fails.
PUBLISHED: dict[str, set[str]] = {
    "redis_middleware": {"ConfigError", "DataCache", "LockNotAcquired", "RedisMiddlewareError",
                         "Settings"},
    "redis_middleware.datacache": {"DataCache", "LockNotAcquired"},  # the class's module
    "redis_middleware.asgi": {"Broadcast", "Cache", "CacheMiddleware", "Presence",
                              "PresenceMiddleware", "RateLimitMiddleware", "RateLimiter",
                              "RedisMiddleware", "SessionMiddleware", "SessionStore",
                              "join_room"},
    "redis_middleware.wsgi": {"Presence", "RedisMiddleware", "SessionStore"},
    "redis_middleware.flask": {"FlaskCache", "flask_settings", "init_app", "init_stack"},
    "redis_middleware.django.cache": {"RedisCache"},
    "redis_middleware.django": {"django_settings"},  # also an INSTALLED_APPS entry
    "redis_middleware.django.middleware": {"CacheMiddleware", "PresenceMiddleware",
                                           "RateLimitMiddleware", "SessionMiddleware"},
    "redis_middleware.django.sessions": {"SessionStore"},  # SESSION_ENGINE: Django's name
    "redis_middleware.prometheus": {"enable"},
    "redis_middleware.sansio.request": {"RequestInfo"},  # a refusal handler's types
    "redis_middleware.sansio.responses": {"Refusal", "Response"},
}
# Dotted names in the docs that are no import path.
NOT_PATHS = {
    "redis_middleware.session",  # the WSGI environ key of the session
    "redis_middleware.sessions",  # a logger
    "redis_middleware.E001", "redis_middleware.W001",  # Django system check ids
}
ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
DOTTED = re.compile(r"\bredis_middleware(?:\.[A-Za-z_]\w*)+")


def _shown_in_docs() -> set[str]:
    """``module`` or ``module.name`` for every import of the package the docs show."""
    shown: set[str] = set()
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        text = page.read_text()
        shown |= set(DOTTED.findall(text))  # inline code, settings strings, prose
        for language, code in FENCE.findall(text):
            if language != "python":
                continue
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and node.module:
                    shown |= {f"{node.module}.{alias.name}" for alias in node.names}
                elif isinstance(node, ast.Import):
                    shown |= {alias.name for alias in node.names}
    return {name for name in shown if name.split(".")[0] == "redis_middleware"} - NOT_PATHS


@pytest.mark.parametrize("module", sorted(PUBLISHED))
def test_the_import_paths_the_docs_show_work(module: str) -> None:
    imported = importlib.import_module(module)
    missing = sorted(name for name in PUBLISHED[module] if not hasattr(imported, name))
    assert not missing, f"{module} no longer has {missing}"


def test_every_path_the_docs_show_is_guarded() -> None:
    """A sample that shows a new path adds it to PUBLISHED, so that it stays working."""
    guarded = {*PUBLISHED, *(f"{m}.{n}" for m, names in PUBLISHED.items() for n in names)}
    assert _shown_in_docs() - guarded == set()


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
