"""Where a Django ``CACHES`` alias keeps its values: one shared ``DataCache`` per
location and options in the process, and the values' serializer.

Django builds a backend instance per thread and per asyncio task, so the instances are
cheap and share what this module builds once (the settings, the serializer, the Redis
connections behind ``DataCache``); a change of Django's settings (``setting_changed``,
in tests) forgets what was built.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .. import DataCache
from ..config.settings import Settings
from ..errors import ConfigError
from ..sansio.cache.serializers import SignedPickleSerializer
from .conf import django_settings

__all__ = ["PickleSerializer", "location_of", "shared_cache", "split_options"]

_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))
_OWN_OPTIONS = ("SERIALIZER", "NAMESPACE")


class PickleSerializer(SignedPickleSerializer):
    """The default: signed pickle, keyed by the settings' secret. Integers are stored as
    plain decimal digits whatever the serializer (the backend's raw mode), so that Redis
    can ``INCRBY`` them, as Django's own Redis backend stores them; ``bool`` is pickled:
    ``True`` stays ``True``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(tuple(secrets))


# -- one DataCache per configuration, shared by the instances Django makes -------------------
# Django builds a backend per thread and per asyncio task (its CacheHandler is
# context-local), so __init__ must not parse settings or open connections: the instances
# of one configuration share one DataCache (and through it the process's connections).
_shared: dict[tuple[Any, ...], tuple[DataCache, float]] = {}
_shared_lock = threading.Lock()
_WATCHED = frozenset({"REDIS_MIDDLEWARE", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "CACHES"})


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at the fork: the child has no such
    # thread to release it.
    global _shared_lock
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget(*, setting: str, **_: Any) -> None:
    if setting in _WATCHED:
        with _shared_lock:
            _shared.clear()


setting_changed.connect(_forget, dispatch_uid="redis_middleware.django.cache")


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def location_of(server: Any) -> str:
    if isinstance(server, list | tuple):
        servers = [str(s) for s in server if s]
    else:
        servers = [str(server)] if server else []
    if len(servers) > 1 or any(s.count("://") > 1 for s in servers):
        raise ConfigError("LOCATION", "one Redis URL (redis://, rediss://, unix://, "
                          "redis+sentinel://, redis+cluster://): a list of servers is "
                          "Django's primary/replica form, which this backend does not take")
    return servers[0].strip() if servers else ""


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """OPTIONS as the backend's own (``SERIALIZER``, ``NAMESPACE``) and Settings fields;
    anything else is a ConfigError naming it."""
    own: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for name, value in options.items():
        upper, lower = str(name).upper(), str(name).lower()
        if upper in _OWN_OPTIONS:
            own[upper] = value
        elif lower in _FIELDS and lower != "redis_url":
            fields[lower] = value
        else:
            raise ConfigError(f"OPTIONS[{name!r}]", "not an option of redis_middleware."
                              "django.cache.RedisCache: SERIALIZER, NAMESPACE, or a "
                              "redis-middleware setting (docs/configuration.md); the Redis "
                              "URL is LOCATION" + (" (culling is for local caches; Redis "
                              "expires keys by their TTL)" if upper in (
                                  "MAX_ENTRIES", "CULL_FREQUENCY") else ""))
    return own, fields


def shared_cache(location: str, options: Mapping[str, Any]) -> tuple[DataCache, float]:
    memo = (location, tuple(sorted((str(k), _hashable(v)) for k, v in options.items())))
    found = _shared.get(memo)
    if found is None:
        with _shared_lock:
            found = _shared.get(memo)
            if found is None:
                if len(_shared) >= 64:  # options holding new objects each time: stay bounded
                    _shared.clear()
                found = _shared[memo] = _build(location, options)
    return found


def _build(location: str, options: Mapping[str, Any]) -> tuple[DataCache, float]:
    own, fields = split_options(options)
    if location:
        fields["redis_url"] = location
    settings = django_settings(**fields) if fields else django_settings()
    serializer = _serializer(own.get("SERIALIZER", "pickle"), settings)
    namespace = own.get("NAMESPACE", "django")
    try:
        data = DataCache(settings, namespace=namespace, serializer=serializer, raw=True)
    except ValueError as exc:
        raise ConfigError("OPTIONS['NAMESPACE']", str(exc)) from None
    return data, settings.data_max_ttl


def _serializer(spec: Any, settings: Settings) -> Any:
    if spec is None or spec == "pickle":
        return PickleSerializer(settings.secret_key)
    if spec in ("json", "msgpack"):
        return spec
    if isinstance(spec, str):
        if "." not in spec:
            raise ConfigError("OPTIONS['SERIALIZER']", f"{spec!r}: 'pickle' (signed, the "
                              "default), 'json', 'msgpack' or a dotted path to a serializer")
        spec = import_string(spec)
    if inspect.isclass(spec):
        spec = spec()
    if not (callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None))):
        raise ConfigError("OPTIONS['SERIALIZER']", "a serializer has dumps(value) -> bytes "
                          "and loads(data) methods")
    return spec
