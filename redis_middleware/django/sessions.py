"""Django's session engine on redis-middleware sessions: ``SESSION_ENGINE =
"redis_middleware.django.sessions"``.

The same data layout as the ASGI/WSGI middleware's sessions (``docs/sessions.md``): one
Redis hash per session under ``<prefix>:session:``, keyed by a digest of the session key
(the key itself is never stored), one field per session key, only the fields whose
value changed written back, and the per-user index that "log out everywhere" uses
(Django's ``_auth_user_id`` is the user). What differs from Django's ``cache`` engine
(``docs/django.md``):

- a session key is one this engine issued (47 characters); any other cookie value is no
  session, without a round trip to Redis;
- ``save()`` writes only the keys that changed, so two requests that change different
  keys both keep their change, and a session deleted meanwhile (a logout elsewhere), or
  by this request's own ``delete()``, is never written back (``UpdateError``, as
  Django's engines); ``save(must_create=True)`` never writes into a live session
  (``CreateError``);
- ``cycle_key()`` (``login()``) renames the hash in one round trip; a request still
  holding the old key for ``session_regenerate_grace`` seconds writes into the new one;
- expiry is Redis's: ``clear_expired()`` has nothing to do.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from django.conf import settings as django_conf
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .._redis.connections import RedisConnections, connections_for
from ..errors import RedisMiddlewareError, SessionUnavailableError
from ..sansio.flow import Flow
from ..sansio.incidents import log_incident
from ..sansio.sessions.cookies import new_session_id, valid_session_id
from ..sansio.sessions.core import SessionCore
from ..sansio.sessions.mapping import JSON, Codec, Limits, encode
from .conf import django_settings

__all__ = ["AUTH_USER_FIELD", "SessionStore"]


# contrib.auth keeps the logged-in user's id under this key: it names the user for the
# per-user session index when ``user_field`` is absent.
AUTH_USER_FIELD = ("_auth_user_id",)
_DJANGO_JSON = ("django.contrib.sessions.serializers.JSONSerializer",
                "django.core.signing.JSONSerializer")


class _SerializerCodec:
    """A Django session serializer (bytes of a whole dict) used one value at a time."""

    def __init__(self, serializer: Any) -> None:
        self._serializer = serializer

    def dumps(self, value: Any) -> str:
        data: bytes = self._serializer.dumps(value)
        return data.decode("latin-1")  # any bytes round-trip through latin-1

    def loads(self, text: str) -> Any:
        return self._serializer.loads(text.encode("latin-1"))


def _codec() -> Codec:
    """Compact JSON for Django's default serializer, else ``SESSION_SERIALIZER``'s."""
    path = django_conf.SESSION_SERIALIZER
    return JSON if path in _DJANGO_JSON else _SerializerCodec(import_string(path)())


_engine: SessionCore | None = None


def engine() -> tuple[SessionCore, RedisConnections]:
    """The session core (built once per configuration: a change of Django's settings,
    ``SESSION_SERIALIZER`` included, gives new settings and so a new core) and the
    process's connections for its settings (looked up each time: closed connections are
    replaced there)."""
    global _engine
    settings = django_settings()
    if _engine is None or _engine.settings is not settings:
        _engine = SessionCore(settings, _codec(), also_user_fields=AUTH_USER_FIELD)
    return _engine, connections_for(settings)


Loaded = tuple[dict[str, Any], dict[str, str]]


class SessionStore(SessionBase):
    """``request.session`` on a Redis hash; sync and async methods, as Django's engines.

    Subclass it as any Django session engine (``get_session_cookie_age``, say); point
    ``SESSION_ENGINE`` at the module that defines the subclass as ``SessionStore``.
    """

    _session_key: str | None  # SessionBase's validating property

    def __init__(self, session_key: str | None = None) -> None:
        self._core, self._redis = engine()
        self._stored: dict[str, str] = {}  # key -> its encoding in Redis, as loaded/saved
        self._loaded_user: str | None = None  # the user the index has this session under
        self._live = False  # a hash stands behind the key (loaded or saved by us)
        # A key this store issued that nothing was stored under yet: its first save
        # creates the hash. Any other key is only ever updated, so a session deleted
        # meanwhile (or by this request) is refused, never written back.
        self._new_key: str | None = None
        self._degraded = False  # Redis failed, "readonly" policy: empty, nothing saved
        super().__init__(session_key)

    # -- keys ---------------------------------------------------------------------
    def _validate_session_key(self, key: Any) -> bool:
        # Only ids this engine issues: a forged or foreign cookie is no session, and
        # costs no round trip.
        return isinstance(key, str) and valid_session_id(key)

    def _get_new_session_key(self) -> str:
        return new_session_id()  # 256 random bits: no existence check needed

    async def _aget_new_session_key(self) -> str:
        return new_session_id()

    # -- the flows (shared by the sync and async methods) ---------------------------
    def _user_of(self, data: Mapping[str, Any]) -> str | None:
        field = self._core.settings.user_field
        value = data.get(field)
        if value is None:
            value = data.get(AUTH_USER_FIELD[0])
        return None if value is None or isinstance(value, (dict, list)) else str(value)

    def _loaded(self, found: Loaded | None) -> dict[str, Any]:
        if found is None:
            self._session_key = None  # Django: an unknown key is never reused
            self._stored, self._loaded_user, self._live = {}, None, False
            return {}
        data, self._stored = found
        self._loaded_user, self._live = self._user_of(data), True
        return data

    def _changes(self, data: Mapping[str, Any], everything: bool
                 ) -> tuple[dict[str, str], list[str]]:
        """(keys to write with their encodings, keys to delete), sizes checked."""
        limits = Limits(self._core.settings)
        codec = self._core.codec
        written: dict[str, str] = {}
        total = 0
        for key, value in data.items():
            encoded = encode(value, codec)
            total += limits.check_value(key, encoded)
            if everything or self._stored.get(key) != encoded:
                written[key] = encoded
        limits.check_totals(len(data), total)
        deleted = [] if everything else [k for k in self._stored if k not in data]
        return written, deleted

    def _write_flow(self, mode: str, new_key: str, old_key: str | None
                    ) -> Generator[Any, Any, int]:
        """Store the session under ``new_key`` (``mode`` as ``SessionCore.store_flow``:
        a create of a key in use, or an update of a session gone, is refused, and no
        user's index keeps it); an expiry already past deletes it instead (Django: it
        expires at once)."""
        data = self._get_session(no_load=mode == "create")
        user = self._user_of(data)
        lifetime = self.get_expiry_age()
        if lifetime <= 0:
            if mode == "create":  # nothing to delete; a key in use is still refused
                if self._new_key != new_key and (
                        yield from self._core.exists_flow(new_key)):
                    return 0
            else:
                yield from self._core.delete_flow(old_key or new_key, self._loaded_user)
            self._stored, self._loaded_user, self._live = {}, None, False
            return 1
        written, deleted = self._changes(data, everything=mode == "create")
        stored = yield from self._core.store_flow(
            mode, new_key, old_key, written, deleted, user=user,
            loaded_user=self._loaded_user, lifetime=lifetime)
        if stored:
            kept = {k: v for k, v in self._stored.items() if k in data}
            self._stored = {**kept, **written}
            self._loaded_user, self._live, self._new_key = user, True, None
        return stored

    def _save_mode(self, must_create: bool) -> str:
        if must_create or self.session_key == self._new_key:
            return "create"
        return "update"  # refused (UpdateError) when the hash is gone

    def _cycle_plan(self) -> str | None:
        """The key to rotate away from, or None when nothing is stored under it yet."""
        key = self.session_key
        return key if key is not None and self._live else None

    def _failed(self, exc: RedisMiddlewareError) -> dict[str, Any]:
        """Loading failed: raise (``SessionMiddleware`` answers 503), or, with
        ``session_on_redis_error="readonly"``, carry on with an empty session that is
        never saved (the cookie is kept)."""
        if not self._core.readonly_on_error:
            raise SessionUnavailableError("the session store is unavailable") from exc
        log_incident("session-load", "session store unavailable, serving empty read-only "
                     "sessions: %s", exc)
        self._degraded = True
        return {}

    @property
    def read_only(self) -> bool:
        """Redis failed when the session was loaded (``session_on_redis_error=
        "readonly"``): the session is empty, nothing is saved, deleted or re-keyed, and
        ``SessionMiddleware`` leaves the browser's cookie as it is."""
        return self._degraded

    def _skip_save(self) -> bool:
        if self._degraded:
            log_incident("session-drop", "session changes dropped: the session store is "
                         "unavailable")
        return self._degraded

    # -- Django's engine interface (sync) -------------------------------------------
    def _run(self, flow: Flow[Any]) -> Any:
        return self._redis.run(flow)

    def load(self) -> dict[str, Any]:
        key = self.session_key
        if key is None:
            return self._loaded(None)
        try:
            return self._loaded(self._run(self._core.read_flow(key)))
        except RedisMiddlewareError as exc:
            return self._failed(exc)

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key) and self._validate_session_key(session_key) and bool(
            self._run(self._core.exists_flow(session_key)))  # type: ignore[arg-type]

    def create(self) -> None:
        self._session_key = self._new_key = self._issued(self._get_new_session_key())
        self.save(must_create=True)
        self.modified = True

    def _issued(self, key: str) -> str:
        """A new key, as this engine accepts keys: a subclass's own kind of key would be
        refused by the key property (no session), and create() would start over forever."""
        if not self._validate_session_key(key):
            raise ImproperlyConfigured(
                f"{type(self).__name__}._get_new_session_key() gave {key!r:.20}, a key this "
                "engine does not accept: it issues its own (256 random bits); do not "
                "override _get_new_session_key")
        return key

    def save(self, must_create: bool = False) -> None:
        if self._skip_save():
            return None
        if self.session_key is None:
            return self.create()
        if not must_create and not hasattr(self, "_session_cache"):
            self._get_session()  # load first: only what changed is written
            if self.session_key is None:  # nothing stood behind the key
                return self.create()
        if not self._run(self._write_flow(self._save_mode(must_create), self.session_key,
                                          None)):
            raise CreateError if must_create else UpdateError

    def delete(self, session_key: str | None = None) -> None:
        if self._skip_save():
            return
        key, user = self._deleting(session_key)
        if key is not None:
            self._run(self._core.delete_flow(key, user))

    def _deleting(self, session_key: str | None) -> tuple[str | None, str | None]:
        if session_key is None or session_key == self.session_key:
            key, user = self.session_key, self._loaded_user
            # Deleted, not new: a later save() of this key raises UpdateError, as with
            # Django's engines (SessionMiddleware answers 400), instead of writing the
            # session back.
            self._live, self._new_key = False, None
        else:
            key, user = session_key, None
        return (key, user) if key and self._validate_session_key(key) else (None, None)

    def cycle_key(self) -> None:
        """A new key for the same data, the old key dead at once (``login()``)."""
        self._get_session()  # loads: the data moves with the key
        if self._skip_save():
            return  # read-only: a key that was never stored must not replace the cookie
        old = self._cycle_plan()
        new = new_session_id(old[:4] if old else None)  # same Cluster slot as the old
        self._session_key = new
        self.modified = True
        if old is None or not self._run(self._write_flow("move", new, old)):
            # Nothing stored under the old key (never saved, or deleted meanwhile): the
            # data is created under the new key at the next save.
            self._live, self._new_key = False, new

    @classmethod
    def clear_expired(cls) -> None:
        """Redis expires sessions on its own (each hash has its TTL)."""

    # -- the same, async -------------------------------------------------------------
    async def _arun(self, flow: Flow[Any]) -> Any:
        return await self._redis.arun(flow)

    async def aload(self) -> dict[str, Any]:
        key = self.session_key
        if key is None:
            return self._loaded(None)
        try:
            return self._loaded(await self._arun(self._core.read_flow(key)))
        except RedisMiddlewareError as exc:
            return self._failed(exc)

    async def aexists(self, session_key: str | None) -> bool:
        return bool(session_key) and self._validate_session_key(session_key) and bool(
            await self._arun(self._core.exists_flow(session_key)))  # type: ignore[arg-type]

    async def acreate(self) -> None:
        self._session_key = self._new_key = self._issued(await self._aget_new_session_key())
        await self.asave(must_create=True)
        self.modified = True

    async def asave(self, must_create: bool = False) -> None:
        if self._skip_save():
            return None
        if self.session_key is None:
            return await self.acreate()
        if not must_create and not hasattr(self, "_session_cache"):
            await self._aget_session()
            if self.session_key is None:
                return await self.acreate()
        if not await self._arun(self._write_flow(self._save_mode(must_create),
                                                 self.session_key, None)):
            raise CreateError if must_create else UpdateError

    async def adelete(self, session_key: str | None = None) -> None:
        if self._skip_save():
            return
        key, user = self._deleting(session_key)
        if key is not None:
            await self._arun(self._core.delete_flow(key, user))

    async def acycle_key(self) -> None:
        await self._aget_session()
        if self._skip_save():
            return
        old = self._cycle_plan()
        new = new_session_id(old[:4] if old else None)
        self._session_key = new
        self.modified = True
        if old is None or not await self._arun(self._write_flow("move", new, old)):
            self._live, self._new_key = False, new

    @classmethod
    async def aclear_expired(cls) -> None:
        """Redis expires sessions on its own."""
