"""The settings an application runs with, found from ``module:attr`` (``--app`` of the CLI).

``attr`` names the app (ASGI or WSGI, wrapped or not), a factory (``create_app`` or
``create_app()``), or a :class:`Settings`; a module alone means its ``app``, or, for a
Django settings module (one with ``REDIS_MIDDLEWARE`` or ``SESSION_ENGINE``), the
project's :func:`~redis_middleware.django.django_settings`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any

from .config.options import resolve_settings
from .config.settings import Settings
from .errors import ConfigError

__all__ = ["Found", "load_app_settings"]

# Our middleware classes by name -> the component their options belong to.
_COMPONENTS = {"SessionMiddleware": "session", "RateLimitMiddleware": "ratelimit",
               "CacheMiddleware": "cache", "PresenceMiddleware": "presence"}


@dataclass(frozen=True)
class Found:
    """The settings of each of our middleware found in the app, outermost first."""

    settings: tuple[Settings, ...]
    where: str

    def best(self, component: str | None = None) -> Settings:
        """The stack's settings, or the first that configures ``component``."""
        if component == "ratelimit":
            for s in self.settings:
                if s.ratelimit_limit or s.ratelimit_rules:
                    return s
        if component == "cache":
            for s in self.settings:
                if s.cache_routes:
                    return s
        return self.settings[0]


def load_app_settings(spec: str) -> Found:
    """Import ``spec`` and find the settings its middleware run with."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigError("--app", f"expected module:attr, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn, gunicorn and flask --app do
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("--app", f"cannot import {module_name!r}: {exc}") from None
    if not attr and _is_django_settings(module):
        return Found((_django(module_name),), f"{module_name} (Django settings)")
    obj: Any = module
    name = attr or "app"
    call = name.endswith("()")
    for part in name.removesuffix("()").split("."):
        if not hasattr(obj, part):
            raise ConfigError("--app", f"{module_name} has no attribute {name!r}")
        obj = getattr(obj, part)
    if call or _is_factory(obj):
        obj = obj()
    found = tuple(_settings_in(obj))
    if not found:
        raise ConfigError("--app", f"{spec} uses no redis-middleware middleware (and is no "
                          "Settings)")
    return Found(found, spec)


def _is_django_settings(module: Any) -> bool:
    return hasattr(module, "REDIS_MIDDLEWARE") or hasattr(module, "SESSION_ENGINE")


def _django(module_name: str) -> Settings:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", module_name)
    import django

    from .django import django_settings

    django.setup()
    return django_settings()


def _is_factory(obj: Any) -> bool:
    """A plain function taking no arguments: an app factory (an ASGI or WSGI callable
    takes two or three)."""
    if not inspect.isfunction(obj):
        return False
    required = [p for p in inspect.signature(obj).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                        p.POSITIONAL_OR_KEYWORD)]
    return not required


def _settings_in(obj: Any, depth: int = 0) -> list[Settings]:
    """Walk an app and the middleware wrapped around or inside it."""
    if depth > 30 or obj is None:
        return []
    if isinstance(obj, Settings):
        return [obj]
    out: list[Settings] = []
    own = getattr(obj, "settings", None)
    if isinstance(own, Settings) and type(obj).__module__.startswith("redis_middleware"):
        out.append(own)
    # Starlette / FastAPI: app.user_middleware = [Middleware(cls, *args, **kwargs)];
    # Litestar: app.middleware = [DefineMiddleware(cls, *args, **kwargs)].
    for entry in [*(getattr(obj, "user_middleware", None) or ()),
                  *_litestar_middleware(obj)]:
        cls = getattr(entry, "cls", None) or getattr(entry, "middleware", None)
        kwargs = dict(getattr(entry, "kwargs", None) or {})
        args = tuple(getattr(entry, "args", None) or ())
        settings = _declared(cls, args, kwargs)
        if settings is not None:
            out.append(settings)
    for inner in ("wsgi_app", "app"):  # Flask's wsgi_app, a wrapped app
        nested = getattr(obj, inner, None)
        if nested is not None and nested is not obj and not inspect.ismodule(nested):
            out += _settings_in(nested, depth + 1)
    return out


def _litestar_middleware(obj: Any) -> list[Any]:
    if type(obj).__module__.split(".")[0] != "litestar":
        return []
    return list(getattr(obj, "middleware", None) or ())


def _declared(cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Settings | None:
    """The settings one of our middleware classes would build from these arguments."""
    if not isinstance(cls, type) or not cls.__module__.startswith("redis_middleware"):
        return None
    settings = kwargs.pop("settings", args[0] if args else None)
    if cls.__name__ == "RedisMiddleware":
        from .sansio.stack import resolve_stack_settings

        return resolve_stack_settings(settings, kwargs)
    component = _COMPONENTS.get(cls.__name__)
    if component is None:
        return None
    return resolve_settings(settings, component, kwargs)
