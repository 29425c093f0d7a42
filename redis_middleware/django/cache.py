"""A Django cache backend on redis-middleware's data cache.

In ``settings.py``::

    CACHES = {
        "default": {
            "BACKEND": "redis_middleware.django.cache.RedisCache",
            "LOCATION": "redis://localhost:6379/0",     # empty: REDIS_MIDDLEWARE / REDIS_URL
            "TIMEOUT": 300,
            "OPTIONS": {"SERIALIZER": "pickle"},        # "json", or a dotted path
        }
    }

Every method of Django's ``BaseCache`` works, and its sixteen ``a*`` methods run on the
asyncio Redis client (no thread hops; a value whose pickling queries the database, a lazy
``QuerySet``, is stored from Django's thread, as Django's own backends do). Values are
pickled and signed with the secret key (integers stay plain digits, so ``incr`` is one
atomic command); ``clear()`` removes this backend's keys only (``<prefix>:data:django:``),
never the sessions or anything else in the database; ``get_or_set`` computes a missing
value once across threads and processes; when Redis is down, reads miss and writes do
nothing, with one WARNING per incident.
``docs/django.md`` has the whole story.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func
from django.core.exceptions import SynchronousOnlyOperation

from ..config.settings import Settings
from ..datacache.decorator import no_tags
from ..errors import RedisMiddlewareError
from ..sansio import metrics
from ..sansio.cache.data import MAX_TTL, MISS
from ..sansio.incidents import log_failure
from .cache_store import PickleSerializer, location_of, shared_cache, split_options

if TYPE_CHECKING:
    from ..datacache import ALock, Lock
    from ..sansio.cache.datafill import Policy

__all__ = ["PickleSerializer", "RedisCache"]

T = TypeVar("T")
_MISSING: Any = object()
_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))
_OWN_OPTIONS = ("SERIALIZER", "NAMESPACE")
# What Django's memcache_key_warnings looks for; checked first, so that a plain key
# costs a regular expression, not a generator (this runs on every call).
_MEMCACHED_BAD = re.compile(r"[\x00-\x20\x7f]")
_MEMCACHED_MAX = 250
_LOCK_TIMEOUT = 30.0  # lock(timeout=None): renewed while held, so this bounds a crash


class RedisCache(BaseCache):
    """Django's cache API on the data cache of redis-middleware (sync and native async).

    ``LOCATION``: a Redis URL (empty: ``REDIS_MIDDLEWARE["redis_url"]`` or ``REDIS_URL``);
    every other setting (the key prefix, the secret, timeouts) comes from
    ``REDIS_MIDDLEWARE`` and the environment, as for the rest of the package.
    ``OPTIONS``: ``SERIALIZER`` (``"pickle"``: signed, the default; ``"json"``;
    ``"msgpack"``; a dotted path or an object with ``dumps``/``loads``), ``NAMESPACE``
    (default ``"django"``: the keys are ``<prefix>:data:django:{<Django's key>}``), and
    any redis-middleware setting by its field name (``"data_max_ttl"``). Anything else
    is a ``ConfigError`` naming it.

    ``TIMEOUT=None`` (or ``timeout=None``) keeps a value for ``data_max_ttl`` (30 days by
    default), so that every key still carries a TTL; a timeout of 0 or less stores
    nothing (and ``set`` deletes the old value), as in Django.
    """

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        super().__init__({**params, "OPTIONS": {}})
        split_options(options)  # an unknown option fails here, naming itself
        self._location = location_of(server)
        self._options = options
        self._policies: dict[Any, Policy] = {}  # by the timeout given
        # Django's own make_key and key function: _name makes the key inline, a Python
        # call less on every use (each costs about three times as much right after a
        # round trip as in a loop).
        self._plain_keys = (type(self).make_key is BaseCache.make_key
                            and self.key_func is default_key_func)

    def __getattr__(self, name: str) -> Any:
        # The store is found on first use, not in __init__: Django builds a backend per
        # thread and task, and its system checks build every alias (a setting that
        # cannot work is then reported by the check, not by a crash of manage.py).
        if name not in ("_data", "_max_ttl", "_namespace"):
            raise AttributeError(name)
        self._data, self._max_ttl = shared_cache(self._location, self._options)
        self._namespace = self._data.core.namespace
        return getattr(self, name)

    # -- keys and timeouts ----------------------------------------------------------------
    def validate_key(self, key: str) -> None:
        if len(key) > _MEMCACHED_MAX or _MEMCACHED_BAD.search(key):
            super().validate_key(key)  # Django's warnings, word for word

    def _name(self, key: Any, version: int | None) -> str:
        """Django's made key (validated), as the data cache's key name."""
        if self._plain_keys:  # make_key and default_key_func, inline (their % format:
            # str() of the key, where an f-string would call format())
            made = "%s:%s:%s" % (  # noqa: UP031
                self.key_prefix, self.version if version is None else version, key)
        else:
            made = self.make_key(key, version)
        if len(made) > _MEMCACHED_MAX or _MEMCACHED_BAD.search(made):
            super().validate_key(made)
        if not made or made[0] == "}" or made[0] == "~":
            return "~" + made  # a name may not start with "}"; "~" keeps the mapping 1:1
        return made

    def _ttl(self, timeout: Any) -> float | None:
        """Seconds to keep a value, or None: do not keep it (a timeout of 0 or less). Over
        a century (the data cache's bound), a century: Django takes any timeout."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return self._max_ttl
        return min(float(timeout), MAX_TTL) if timeout > 0 else None

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> float | None:
        """Django's Redis contract: seconds (0: not stored), or None for "forever" (kept
        ``data_max_ttl`` seconds here)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else max(0, timeout)

    # -- sync ------------------------------------------------------------------------------
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        # DataCache.get, on the hot path of its own get_or_set: one GET, and the value
        # decoded without an envelope or an entry (the hit is most of what a cache does).
        name, data = self._name(key, version), self._data
        try:
            raw = data.redis.call(data.core.read_command(name))
        except RedisMiddlewareError as exc:
            return _bypassed(exc, default)
        return self._found(raw, default)

    def _found(self, raw: bytes | None, default: Any) -> Any:
        value = MISS if raw is None else self._data.core.hot(raw)
        if value is MISS and raw is not None:
            self._data.core.decode(raw)  # says why it cannot be read (once per incident)
        if metrics.hook is not None:
            metrics.hook.data("miss" if value is MISS else "hit", "get")
        return default if value is MISS else value

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: int | None = None) -> None:
        name, ttl = self._name(key, version), self._ttl(timeout)
        if ttl is None:
            self._data.delete(name)
        else:
            self._data.set(name, value, ttl)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: int | None = None) -> bool:
        name, ttl = self._name(key, version), self._ttl(timeout)
        if ttl is None:  # Django: True when the key was free, though nothing is kept
            return not self._data.has(name)
        return self._data.add(name, value, ttl)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
              version: int | None = None) -> bool:
        name, ttl = self._name(key, version), self._ttl(timeout)
        if ttl is None:
            return self._data.delete(name)
        return self._data.touch(name, ttl)

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._data.delete(self._name(key, version))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._data.has(self._name(key, version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        names = {self._name(key, version): key for key in keys}
        found = self._data.get_many(list(names))
        return {names[name]: value for name, value in found.items()}

    def set_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[Any]:
        names = {self._name(key, version): key for key in data}
        ttl = self._ttl(timeout)
        if ttl is None:
            self._data.delete_many(list(names))
            return []
        values = {name: data[key] for name, key in names.items()}
        return [names[name] for name in self._data.set_many(values, ttl)]

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        names = [self._name(key, version) for key in keys]
        if names:
            self._data.delete_many(names)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` atomically (one command; the TTL is kept). ``ValueError`` when
        the key is missing (or Redis is down), ``TypeError`` when its value is no
        integer."""
        name = self._name(key, version)
        try:
            return self._data.incr(name, delta)
        except ValueError:
            raise ValueError(f"Key {key!r} not found.") from None
        except (OverflowError, TypeError):
            return self._big_incr(name, key, delta)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version)

    def _big_incr(self, name: str, key: Any, delta: int) -> int:
        """Past 64 bits, integers are pickled: read, add, write back with the TTL left
        (not atomic, like django-redis's fallback)."""
        value = self._data.get(name, _MISSING)
        if value is _MISSING:
            raise ValueError(f"Key {key!r} not found.")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"the value of {key!r} is a {type(value).__name__}, not an int")
        result = value + delta
        self._data.set(name, result, self._data.ttl(name) or self._max_ttl)
        return result

    def get_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: int | None = None) -> Any:
        """The stored value; on a miss, ``default`` (called if callable) is stored and
        returned. Concurrent misses of one key, in any thread or process, call it once."""
        name = self._name(key, version)
        # DataCache.get_or_set without its options (none here): this instance keeps the
        # policy of each timeout it was given, so that a hit costs what a get does.
        given = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        policy = self._policies.get(given)
        if policy is None:
            ttl = self._ttl(given)
            if ttl is None:  # not to be stored
                found = self._data.get(name, _MISSING)
                if found is not _MISSING:
                    return found
                return default() if callable(default) else default
            policy = self._policy(given, ttl)
        loader = default if callable(default) else (lambda: default)
        return self._data._fetch(name, policy, loader, no_tags)

    def _policy(self, given: Any, ttl: float) -> Policy:
        if len(self._policies) >= 64:  # timeouts computed per call: stay bounded
            self._policies.clear()
        policy = self._policies[given] = self._data._policy(ttl, 0, 0, "get_or_set")
        return policy

    def clear(self) -> None:
        """Remove this backend's keys (its namespace, by SCAN on each primary): never
        ``FLUSHDB``, so sessions and everything else in the database stay."""
        self._data.clear()

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move the value to ``version + delta``, keeping its TTL; the new version."""
        if version is None:
            version = self.version
        old, new = self._name(key, version), self._name(key, version + delta)
        value = self._data.get(old, _MISSING)
        if value is _MISSING:
            raise ValueError(f"Key {key!r} not found.")
        self._data.set(new, value, self._data.ttl(old) or self._max_ttl)
        self._data.delete(old)
        return version + delta

    def decr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr_version(key, -delta, version)

    def close(self, **kwargs: Any) -> None:
        """Nothing to close: the connections are the process's, shared by every instance
        (Django calls this after each request, from any thread)."""

    # -- async: the asyncio client ------------------------------------------------------------
    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        name, data = self._name(key, version), self._data
        try:
            raw = await data.redis.acall(data.core.read_command(name))
        except RedisMiddlewareError as exc:
            return _bypassed(exc, default)
        return self._found(raw, default)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: int | None = None) -> None:
        name, ttl = self._name(key, version), self._ttl(timeout)
        if ttl is None:
            await self._data.adelete(name)
        else:
            data = self._data
            await _storing(data.aset(name, value, ttl), lambda: data.set(name, value, ttl))

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: int | None = None) -> bool:
        name, ttl = self._name(key, version), self._ttl(timeout)
        if ttl is None:
            return not await self._data.ahas(name)
        data = self._data
        return await _storing(data.aadd(name, value, ttl), lambda: data.add(name, value, ttl))

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
                     version: int | None = None) -> bool:
        name, ttl = self._name(key, version), self._ttl(timeout)
        if ttl is None:
            return await self._data.adelete(name)
        return await self._data.atouch(name, ttl)

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self._data.adelete(self._name(key, version))

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self._data.ahas(self._name(key, version))

    async def aget_many(self, keys: Iterable[Any], version: int | None = None
                        ) -> dict[Any, Any]:
        names = {self._name(key, version): key for key in keys}
        found = await self._data.aget_many(list(names))
        return {names[name]: value for name, value in found.items()}

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                        version: int | None = None) -> list[Any]:
        names = {self._name(key, version): key for key in data}
        ttl = self._ttl(timeout)
        if ttl is None:
            await self._data.adelete_many(list(names))
            return []
        values = {name: data[key] for name, key in names.items()}
        store = self._data
        refused = await _storing(store.aset_many(values, ttl),
                                 lambda: store.set_many(values, ttl))
        return [names[name] for name in refused]

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        names = [self._name(key, version) for key in keys]
        if names:
            await self._data.adelete_many(names)

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        name = self._name(key, version)
        try:
            return await self._data.aincr(name, delta)
        except ValueError:
            raise ValueError(f"Key {key!r} not found.") from None
        except (OverflowError, TypeError):
            return await self._abig_incr(name, key, delta)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self.aincr(key, -delta, version)

    async def _abig_incr(self, name: str, key: Any, delta: int) -> int:
        value = await self._data.aget(name, _MISSING)
        if value is _MISSING:
            raise ValueError(f"Key {key!r} not found.")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"the value of {key!r} is a {type(value).__name__}, not an int")
        result = value + delta
        await self._data.aset(name, result, await self._data.attl(name) or self._max_ttl)
        return result

    async def aget_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                          version: int | None = None) -> Any:
        """:meth:`get_or_set` for asyncio: an async ``default`` is awaited, a sync one runs
        through ``sync_to_async`` (Django's thread for the ORM), on a miss only."""
        name, ttl, data = self._name(key, version), self._ttl(timeout), self._data
        loader = _async_loader(default)
        if ttl is None:
            found = await data.aget(name, _MISSING)
            return found if found is not _MISSING else await loader()
        loaded: list[Any] = []  # [] before the load, [_MISSING] during it, then [value]

        async def load() -> Any:
            loaded[:] = [_MISSING]
            loaded[:] = [await loader()]
            return loaded[0]

        try:
            return await data.aget_or_set(name, load, ttl)
        except SynchronousOnlyOperation:
            if loaded and loaded[0] is _MISSING:
                raise  # the default's own error
            # Pickling the value queried the database (or did so in another task loading
            # this key): the value is stored from Django's thread.
            value = loaded[0] if loaded else await loader()
            return await sync_to_async(data.get_or_set, thread_sensitive=True)(
                name, lambda: value, ttl)

    async def aclear(self) -> None:
        await self._data.aclear()

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None
                            ) -> int:
        if version is None:
            version = self.version
        old, new = self._name(key, version), self._name(key, version + delta)
        data = self._data
        value = await data.aget(old, _MISSING)
        if value is _MISSING:
            raise ValueError(f"Key {key!r} not found.")
        ttl = await data.attl(old) or self._max_ttl
        await _storing(data.aset(new, value, ttl), lambda: data.set(new, value, ttl))
        await data.adelete(old)
        return version + delta

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None
                            ) -> int:
        return await self.aincr_version(key, -delta, version)

    async def aclose(self, **kwargs: Any) -> None:
        """Nothing to close (see :meth:`close`)."""

    # -- locks --------------------------------------------------------------------------------
    def lock(self, key: Any, version: int | None = None, timeout: float | None = None,
             sleep: float = 0.1, blocking: bool = True, blocking_timeout: float | None = None,
             thread_local: bool = True) -> Lock:
        """A lock shared by every process on this Redis, as django-redis's ``lock()``:
        ``with cache.lock("rebuild", timeout=60):``. It is renewed while its holder lives
        (``timeout=None``: 30 s, renewed), and released only by its holder. Its key is
        the package's, not a cache entry (``has_key`` does not see it). ``sleep`` and
        ``thread_local`` are accepted for django-redis's signature: waiting polls by
        itself, and the lock object is the owner."""
        return self._data.lock(self._lock_name(key, version), _lock_timeout(timeout),
                               blocking=blocking, wait=blocking_timeout)

    def alock(self, key: Any, version: int | None = None, timeout: float | None = None,
              blocking: bool = True, blocking_timeout: float | None = None) -> ALock:
        """:meth:`lock` for asyncio: ``async with cache.alock("rebuild"):``."""
        return self._data.alock(self._lock_name(key, version), _lock_timeout(timeout),
                                blocking=blocking, wait=blocking_timeout)

    def _lock_name(self, key: Any, version: int | None) -> str:
        return f"{self._namespace}:{self._name(key, version)}"


def _bypassed(exc: RedisMiddlewareError, default: Any) -> Any:
    log_failure("data", "data cache bypassed: Redis refused a command (%s)", exc)
    if metrics.hook is not None:
        metrics.hook.data("bypass", "get")
    return default


async def _storing(native: Awaitable[T], in_thread: Callable[[], T]) -> T:
    """A write, on the asyncio client; when pickling a value needs the database (a lazy
    ``QuerySet`` runs its query), the same write from Django's thread, as Django's
    backends make every write. Values are encoded before anything is sent."""
    try:
        return await native
    except SynchronousOnlyOperation:
        return await sync_to_async(in_thread, thread_sensitive=True)()


def _lock_timeout(timeout: float | None) -> float:
    return _LOCK_TIMEOUT if timeout is None else timeout


def _async_loader(default: Any) -> Callable[[], Awaitable[Any]]:
    if not callable(default):
        async def value() -> Any:
            return default

        return value
    if iscoroutinefunction(default):
        return cast("Callable[[], Awaitable[Any]]", default)

    async def load() -> Any:
        result = await sync_to_async(default)()
        if inspect.isawaitable(result):  # a sync callable returning a coroutine
            result = await result
        return result

    return load
