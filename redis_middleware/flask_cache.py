"""A Flask-Caching backend on redis-middleware's data cache (``redis_middleware.flask``
re-exports it).

Example::

    from flask_caching import Cache

    app.config.update(CACHE_TYPE="redis_middleware.flask.FlaskCache",
                      CACHE_REDIS_URL="redis://localhost:6379/0",   # or REDIS_URL
                      CACHE_DEFAULT_TIMEOUT=300)
    cache = Cache(app)

    @cache.memoize(60)
    def product(pid: int) -> dict: ...

``@cache.memoize``, ``@cache.cached`` and ``{% cache %}`` work unchanged, with the
cachelib return values; values are pickled and signed with the secret key (integers
stay digits, so ``inc`` is atomic); ``clear()`` removes this backend's keys only; a
missing value is computed by one request at a time (a lease taken by the ``get`` that
missed, renewed while it is held, released by the ``set`` that follows, or at the end
of the app context); when Redis is down, reads miss and writes return False, with one
WARNING per incident.
``docs/flask.md`` has the whole story and the caveats.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from flask import Flask, appcontext_tearing_down, g, has_app_context
from flask_caching.backends.base import BaseCache

from . import DataCache
from .config.settings import Settings
from .datacache.leases import Held, renewer
from .errors import ConfigError, RedisMiddlewareError
from .flask_conf import flask_settings
from .sansio import metrics
from .sansio.cache.data import MAX_TTL, MISS, DataCore
from .sansio.cache.serializers import SignedPickleSerializer, signed
from .sansio.flow import Call, Flow
from .sansio.incidents import log_failure

__all__ = ["FlaskCache"]

_MISSING: Any = object()
_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))
_OWN = frozenset({"default_timeout", "ignore_delete_many_errors", "namespace", "single_flight",
                  "lock_wait"})
_HOST_KEYS = ("CACHE_REDIS_HOST", "CACHE_REDIS_PORT", "CACHE_REDIS_PASSWORD", "CACHE_REDIS_DB")
# memoize's version keys (Flask-Caching names them "<function>_memver"): read before every
# memoized call, changed only by delete_memoized. Served from the process for this long
# after Redis last confirmed them; the get that follows confirms them again in its round
# trip, and misses when one changed (the call is computed again: never a stale value).
_MEMVER = "_memver"
_MEMO_SECONDS = 1.0
_MEMO_SIZE = 4096


# One DataCache per (settings, namespace, serializer): the backends of several apps (or a
# serializer assigned after construction) share the process's connections.
_shared: dict[tuple[Any, ...], DataCache] = {}
_shared_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at the fork: the child has no such
    # thread to release it.
    global _shared_lock
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _data_cache(settings: Settings, namespace: str, serializer: Any) -> DataCache:
    memo = (settings, namespace, id(serializer))
    found = _shared.get(memo)
    if found is None:
        with _shared_lock:
            found = _shared.get(memo)
            if found is None:
                if len(_shared) > 64:
                    _shared.clear()
                try:
                    found = _shared[memo] = DataCache(
                        settings, namespace=namespace, raw=True,
                        serializer=signed(serializer, settings.secret_key))
                except ValueError as exc:
                    raise ConfigError("CACHE_OPTIONS['namespace']", str(exc)) from None
    return found


class FlaskCache(BaseCache):
    """Flask-Caching's backend API (cachelib's return values) on the data cache.

    ``CACHE_TYPE = "redis_middleware.flask.FlaskCache"``. Keys are
    ``<prefix>:data:flask:{<CACHE_KEY_PREFIX><key>}``; ``CACHE_DEFAULT_TIMEOUT`` is in
    seconds, ``0`` meaning "forever" (kept ``data_max_ttl``, 30 days by default, so every
    key carries a TTL), and a negative timeout stores nothing. ``CACHE_OPTIONS``:
    ``single_flight`` (default True), ``lock_wait`` (seconds a request waits for another
    one computing the same value; default ``data_lock_wait``), ``namespace`` (default
    ``"flask"``) and any redis-middleware setting by its field name.
    """

    def __init__(self, settings: Settings | None = None, *, default_timeout: Any = 300,
                 ignore_delete_many_errors: bool = False, key_prefix: str = "",
                 namespace: str = "flask", single_flight: bool = True,
                 lock_wait: float | None = None) -> None:
        super().__init__(default_timeout=default_timeout,
                         ignore_delete_many_errors=ignore_delete_many_errors)
        self.settings = settings if settings is not None else Settings.from_env()
        self.key_prefix = key_prefix or ""
        self.namespace = namespace
        self.single_flight = single_flight
        self.lock_wait = self.settings.data_lock_wait if lock_wait is None else lock_wait
        self._max_ttl = self.settings.data_max_ttl
        self._leases = f"_redis_middleware_leases_{id(self)}"  # in flask.g
        # memver name -> (value, stored bytes, when Redis last confirmed them)
        self._versions: dict[str, tuple[Any, bytes, float]] = {}
        # .pending: versions the next get confirms; .stale: the name that get found keyed
        # by a version that is gone, which the has() memoize may ask next does not have
        self._checks = threading.local()
        self._serializer: Any = SignedPickleSerializer(self.settings.secret_key)
        self._data = _data_cache(self.settings, namespace, self._serializer)

    @classmethod
    def factory(cls, app: Flask, config: dict[str, Any], args: list[Any],
                kwargs: dict[str, Any]) -> FlaskCache:
        """What Flask-Caching calls: ``kwargs`` are ``default_timeout``,
        ``ignore_delete_many_errors`` and ``CACHE_OPTIONS`` (each checked here)."""
        if args:
            raise ConfigError("CACHE_ARGS", "FlaskCache takes no positional arguments "
                              "(use CACHE_OPTIONS)")
        for name in _HOST_KEYS:
            if config.get(name) is not None:
                raise ConfigError(name, "FlaskCache takes the Redis URL alone: set "
                                  "CACHE_REDIS_URL (or REDIS_URL)")
        own: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in _OWN:
                own[name] = value
            elif name in _FIELDS and name != "redis_url":
                fields[name] = value
            else:
                raise ConfigError(f"CACHE_OPTIONS[{name!r}]", "not an option of FlaskCache: "
                                  f"{', '.join(sorted(_OWN))} or a redis-middleware setting "
                                  "(docs/configuration.md)")
        if config.get("CACHE_REDIS_URL"):
            fields["redis_url"] = config["CACHE_REDIS_URL"]
        settings = flask_settings(app, **fields)
        if settings.secret_generated and settings.target.kind != "memory":
            raise ConfigError("SECRET_KEY", "FlaskCache signs what it stores: set a SECRET_KEY "
                              "of 32+ characters (or REDIS_MIDDLEWARE_SECRET_KEY)")
        backend = cls(settings, key_prefix=config.get("CACHE_KEY_PREFIX") or "", **own)
        # The signal rather than app.teardown_appcontext, which Flask refuses once the app
        # has handled a request: Cache(app) may come late, as with its own backends.
        # (Held weakly: a backend replaced by another init_app goes.)
        appcontext_tearing_down.connect(backend._release_leases, app)
        return backend

    # -- the serializer Flask-Caching assigns (CACHE_SERIALIZER) ------------------------------
    @property
    def serializer(self) -> Any:
        return self._serializer

    @serializer.setter
    def serializer(self, value: Any) -> None:
        if not (callable(getattr(value, "dumps", None)) and callable(getattr(value, "loads",
                                                                             None))):
            raise ConfigError("CACHE_SERIALIZER", "a serializer has dumps() and loads()")
        self._serializer = value
        self._data = _data_cache(self.settings, self.namespace, value)

    # -- keys and timeouts --------------------------------------------------------------------
    def _name(self, key: str) -> str:
        name = self.key_prefix + key
        if not name or name[0] == "}" or name[0] == "~":
            return "~" + name  # a name may not start with "}"; "~" keeps the mapping 1:1
        return name

    def _ttl(self, timeout: Any) -> float | None:
        """Seconds to keep a value; None: not at all (a negative timeout). A timeout over
        the longest TTL the data cache takes (a century) is that century: Redis would
        take it, and cachelib's backends never refuse a timeout."""
        seconds = self._normalize_timeout(timeout)
        if seconds == 0:
            return self._max_ttl
        return float(min(seconds, MAX_TTL)) if seconds > 0 else None

    # -- reads ---------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The value, or None. A miss inside an app context takes the key's lease (the
        ``set`` that follows stores the value and frees it): another request missing the
        same key meanwhile waits for that value instead of computing it too."""
        name = self._name(key)
        checks = self._checks
        checks.stale = None
        check: dict[str, bytes] | None = getattr(checks, "pending", None)
        if check is not None:
            checks.pending = None
            return self._confirmed_get(name, check)
        data = self._data
        try:  # DataCache.get, on its hot path (one GET, the value decoded as it is)
            raw = data.redis.call(data.core.read_command(name))
        except RedisMiddlewareError as exc:
            return _bypassed(exc)
        return self._found(name, raw)

    def _found(self, name: str, raw: bytes | None) -> Any:
        """The value read, or (a miss) the lease or another request's value."""
        value = MISS if raw is None else self._data.core.hot(raw)
        if value is MISS and raw is not None:
            self._data.core.decode(raw)  # says why it cannot be read (once per incident)
        if metrics.hook is not None:
            metrics.hook.data("miss" if value is MISS else "hit", "get")
        if value is not MISS:
            return value
        if not self.single_flight or not has_app_context():
            return None
        return self._lease_or_wait(name)

    def _confirmed_get(self, name: str, check: dict[str, bytes]) -> Any:
        """The memoized value, and the version keys it was found with read again, in one
        round trip: a version changed since (another process's ``delete_memoized``) makes
        it a miss."""
        core = self._data.core
        try:
            raw, versions = self._data.redis.run(_confirm_flow(core, name, list(check)))
        except RedisMiddlewareError as exc:
            return _bypassed(exc)
        now, same = time.monotonic(), True
        for (version, expected), found in zip(check.items(), versions, strict=True):
            if found == expected:
                memo = self._versions.get(version)
                if memo is not None:
                    self._versions[version] = (memo[0], memo[1], now)
            else:
                same = False
                self._remember(version, found, now)
        if not same:
            # Keyed by a version that is gone: computed again. The entry is still there,
            # so memoize(cache_none=True)'s has() must not find it (it would take None
            # for the value).
            self._checks.stale = name
            return None
        return self._found(name, raw)

    def _remember(self, name: str, raw: bytes | None, now: float) -> Any:
        """Keep a version key as Redis has it (or forget it); its value."""
        entry = None if raw is None else self._data.core.decode(raw)
        if entry is None:
            self._versions.pop(name, None)
            return None
        if len(self._versions) >= _MEMO_SIZE:
            self._versions.clear()
        self._versions[name] = (entry.value, cast(bytes, raw), now)
        return entry.value

    def _read_versions(self, names: list[str]) -> list[Any]:
        """memoize's version keys from Redis, kept in the process."""
        try:
            raws = self._data.redis.run(self._data.core.get_many_flow(names))
        except RedisMiddlewareError as exc:
            log_failure("data", "data cache bypassed: %s", exc)
            return [None] * len(names)
        now = time.monotonic()
        return [self._remember(name, raw, now) for name, raw in zip(names, raws, strict=True)]

    def _memoized_versions(self, names: Sequence[str]) -> list[Any] | None:
        """The version keys as kept, when Redis confirmed each of them lately; the next
        ``get`` confirms them again (``pending``)."""
        now, values, pending = time.monotonic(), [], {}
        for name in names:
            found = self._versions.get(name)
            if found is None or now - found[2] > _MEMO_SECONDS:
                return None
            values.append(found[0])
            pending[name] = found[1]
        self._checks.pending = pending
        return values

    def _forget(self, names: Sequence[str]) -> None:
        self._checks.pending = self._checks.stale = None
        for name in names:
            if name.endswith(_MEMVER):
                self._versions.pop(name, None)

    def _lease_or_wait(self, name: str) -> Any:
        leases: dict[str, Held] | None = g.get(self._leases)
        if leases is None:
            leases = {}
            setattr(g, self._leases, leases)
        if name in leases:
            return None  # this context holds the lease already: it computes the value
        data = self._data
        token = data.core.token()
        try:
            raw, ours = data.redis.run(data.core.claim_flow(name, token))
            if raw is None and not ours:  # another request is computing it
                raw, ours = data.redis.run(data.core.wait_flow(name, token, self.lock_wait))
        except RedisMiddlewareError as exc:
            log_failure("data", "data cache bypassed: %s", exc)
            return None
        if ours:  # renewed while the view computes the value, until set() or teardown
            leases[name] = renewer(data.redis, data.core).hold(
                data.core.fill_key(name), token, data.core.lease_ms)
        if raw is None:
            return None
        entry = data.core.decode(raw)
        return None if entry is None else entry.value

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a value; False for the key the last ``get`` of this
        thread found under a memoize version another process had changed (that ``get``
        was a miss, and memoize asks ``has`` to tell a miss from a stored None)."""
        name = self._name(key)
        stale = getattr(self._checks, "stale", None)
        if stale is not None:
            self._checks.stale = None
            if stale == name:
                return False
        return self._data.has(name)

    def get_many(self, *keys: str) -> list[Any]:
        names = [self._name(k) for k in keys]
        if names and all(n.endswith(_MEMVER) for n in names):  # memoize's first read
            served = self._memoized_versions(names)
            return served if served is not None else self._read_versions(names)
        found = self._data.get_many(names)
        return [found.get(name) for name in names]

    # -- writes -----------------------------------------------------------------------------
    def set(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Store ``value``; False when Redis failed (or it is over the size cap). Frees
        the key's lease when this context's ``get`` took it."""
        name, ttl = self._name(key), self._ttl(timeout)
        self._checks.stale = None
        if name.endswith(_MEMVER):
            self._forget((name,))
        token = self._lease_of(name)
        if token is not None:
            return self._store_leased(name, value, ttl, token)
        if ttl is None:
            self._data.delete(name)
            return True
        return self._data.set(name, value, ttl)

    def _lease_of(self, name: str) -> str | None:
        if not self.single_flight or not has_app_context():
            return None
        leases: dict[str, Held] | None = g.get(self._leases)
        held = None if not leases else leases.pop(name, None)
        if held is None:
            return None
        held.held = False
        return held.token

    def _store_leased(self, name: str, value: Any, ttl: float | None, token: str) -> bool:
        """One round trip: the value, and the lease freed (both in the key's slot)."""
        core, redis = self._data.core, self._data.redis
        try:
            if ttl is None:
                redis.run(core.release_flow(core.fill_key(name), token))
                self._data.delete(name)
                return True
            px = max(1, round(ttl * 1000))
            data = core.encode(value, px)
            if core.too_large(data, name):
                redis.run(core.refuse_flow([name], token))
                return False
            return bool(redis.run(core.store_flow(name, data, px, token)))
        except RedisMiddlewareError as exc:
            log_failure("data", "data cache bypassed: %s", exc)
            return False

    def add(self, key: str, value: Any, timeout: Any = None) -> bool:
        name, ttl = self._name(key), self._ttl(timeout)
        self._forget((name,))
        if ttl is None:
            return not self._data.has(name)
        return self._data.add(name, value, ttl)

    def set_many(self, mapping: Mapping[str, Any], timeout: Any = None) -> list[Any]:
        """The keys stored (all of them, or none when Redis failed)."""
        ttl = self._ttl(timeout)
        names = {self._name(k): k for k in mapping}
        self._forget(list(names))
        if ttl is None:
            self._data.delete_many(list(names))
            return list(mapping)
        refused = set(self._data.set_many({n: mapping[k] for n, k in names.items()}, ttl))
        return [k for n, k in names.items() if n not in refused]

    def delete(self, key: str) -> bool:
        name = self._name(key)
        self._forget((name,))
        return self._data.delete(name)

    def delete_many(self, *keys: str) -> list[Any]:
        """The keys deleted (a key that was not there counts, as in cachelib); none when
        Redis failed (logged, not raised, whatever ``ignore_delete_many_errors``)."""
        if keys:
            names = [self._name(k) for k in keys]
            self._forget(names)
            try:
                self._data.delete_many(names, strict=True)
            except RedisMiddlewareError:
                return []
        return list(keys)

    def unlink(self, *keys: str) -> list[Any]:
        return self.delete_many(*keys)

    def clear(self) -> bool:
        """Remove this backend's keys (SCAN of its namespace on each primary, never
        FLUSHDB, whatever CACHE_KEY_PREFIX is): every app's and alias's under this
        namespace, sessions and other components untouched. False when Redis failed."""
        self._checks.pending = self._checks.stale = None
        self._versions.clear()
        try:
            self._data.clear(strict=True)
        except RedisMiddlewareError:
            return False
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add ``delta`` atomically; a missing key starts at ``delta`` (with the default
        timeout). None when Redis failed."""
        name = self._name(key)
        for _ in range(2):
            try:
                return self._data.incr(name, delta)
            except ValueError:
                if self._data.add(name, delta, self._ttl(None)):
                    return delta
            except OverflowError:
                return self._big_inc(name, delta)
        return None

    def dec(self, key: str, delta: int = 1) -> int | None:
        return self.inc(key, -delta)

    def _big_inc(self, name: str, delta: int) -> int | None:
        value = self._data.get(name, _MISSING)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        result = value + delta
        self._data.set(name, result, self._data.ttl(name) or self._max_ttl)
        return result

    # -- leases left at the end of an app context ---------------------------------------------
    def _release_leases(self, app: Any = None, **_: Any) -> None:
        """At the end of an app context (``appcontext_tearing_down``): free the leases
        this context took and never stored (the function raised, a response filter
        refused the value, a ``get`` had no ``set``)."""
        leases: dict[str, Held] | None = g.pop(self._leases, None)
        if not leases:
            return
        core, redis = self._data.core, self._data.redis
        for name, held in leases.items():
            held.held = False
            try:
                redis.run(core.release_flow(core.fill_key(name), held.token))
            except RedisMiddlewareError as exc_:
                log_failure("data", "data cache: a lease was not freed: %s", exc_)


def _bypassed(exc: RedisMiddlewareError) -> None:
    log_failure("data", "data cache bypassed: %s", exc)
    if metrics.hook is not None:
        metrics.hook.data("bypass", "get")


def _confirm_flow(core: DataCore, name: str, versions: list[str]
                  ) -> Flow[tuple[bytes | None, list[bytes | None]]]:
    """One round trip: the value of ``name`` and the version keys it was found with (a
    GET each on a Cluster, where they live in other slots)."""
    keys = [core.key(v) for v in versions]
    if core.cluster:
        replies = yield (Call(("GET", core.key(name))), *(Call(("GET", k)) for k in keys))
        return replies[0], list(replies[1:])
    raw, found = yield (Call(("GET", core.key(name))), Call(("MGET", *keys)))
    return raw, list(found)
