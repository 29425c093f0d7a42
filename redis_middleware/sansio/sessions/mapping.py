"""The session handed to applications (``request.session``): a ``dict``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol

from ...config.settings import Settings
from ...errors import RedisMiddlewareError, SessionLimitError, SessionUnavailableError

__all__ = ["JSON", "Codec", "Limits", "Loader", "Session", "encode", "session_use"]


class Codec(Protocol):
    """How one session value is stored in its hash field (text both ways)."""

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


# Built once: json.dumps given options builds an encoder on every call (measured: a
# short string 0.79 -> 0.13 µs, a small dict 2.6 -> 1.8 µs).
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_DUMPS_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class _JSONCodec:
    """Compact JSON, never pickle: str, int, float, bool, None, list and dict round-trip."""

    def dumps(self, value: Any) -> str:
        text = _DUMPS(value)
        if text.isascii():
            return text
        try:
            text.encode()
        except UnicodeEncodeError:
            # A lone surrogate (json.loads gives one for "\ud800") has no UTF-8 form:
            # such a value is stored ASCII-escaped, as Django's and Flask's sessions do.
            return _DUMPS_ASCII(value)
        return text

    def __init__(self) -> None:
        self.loads: Callable[[str], Any] = json.loads  # no wrapper frame: runs per field


JSON: Codec = _JSONCodec()


def encode(value: Any, codec: Codec = JSON) -> str:
    """The stored form of a value; a value the codec cannot store is a SessionLimitError."""
    try:
        return codec.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SessionLimitError(f"session values must be JSON values: {exc}") from None


class Limits:
    """Size caps of one session, checked on every mutation and again at save."""

    def __init__(self, settings: Settings) -> None:
        self.max_fields = settings.session_max_fields
        self.max_value = settings.session_max_value_bytes
        self.max_total = settings.session_max_bytes

    def check_value(self, key: str, encoded: str) -> int:
        size = len(encoded.encode("utf-8", "surrogatepass"))
        if size > self.max_value:
            raise SessionLimitError(
                f"session value of {key!r} is {size} bytes; the limit is {self.max_value} "
                "(REDIS_MIDDLEWARE_SESSION_MAX_VALUE_BYTES)"
            )
        return size + len(key.encode("utf-8", "surrogatepass"))

    def check_totals(self, fields: int, total: int) -> None:
        if fields > self.max_fields:
            raise SessionLimitError(
                f"session holds {fields} keys; the limit is {self.max_fields} "
                "(REDIS_MIDDLEWARE_SESSION_MAX_FIELDS)"
            )
        if total > self.max_total:
            raise SessionLimitError(
                f"session holds {total} bytes; the limit is {self.max_total} "
                "(REDIS_MIDDLEWARE_SESSION_MAX_BYTES)"
            )


Loader = Callable[[], "tuple[dict[str, Any], dict[str, str]] | None"]
# Types of values that cannot change in place: a read-only session holding only these
# has no changes, found without a loop in Python (the usual signed-in request).
_UNCHANGEABLE = frozenset({str, int, float, bool, type(None)})
_PERMANENT = "_permanent"  # the key Flask's own sessions keep this flag under


class Session(dict[str, Any]):
    """A ``dict`` of the session's values, stored as one Redis hash, one field per key.

    It is a real ``dict`` (``json.dumps``, ``isinstance(..., dict)``, ``dict(...)``,
    ``|``, ``==`` work). Only keys whose stored encoding changed are written back, so
    concurrent requests that change different keys both keep their change. Call
    :meth:`regenerate` at login (a new id; the old cookie stops working) and
    :meth:`clear` at logout. A session may be loaded lazily (WSGI): every method loads
    it first.
    """

    # Flags every session starts with: class attributes, set on an instance only when
    # they change (a session is built for every request; measured, these assignments
    # were a tenth of building one).
    degraded = False  # Redis failed and the session carries on empty, read-only
    _settled = False  # the response is made: a failed store no longer raises
    unavailable_raised = False  # the app was told the store is unavailable
    accessed = False
    cleared = False
    regenerated = False
    _all_dirty = False  # ``modified = True``: compare every key at save
    # Something was assigned (an equal value too), deleted, cleared, or ``modified`` set
    # by hand: Flask's ``modified``. Nothing is written for it; under cookie rules that
    # resend on change the cookie is sent again (CookieRules).
    assigned = False
    # What a session starts as without a cookie (most requests): set on an instance only
    # when given.
    session_id: str | None = None
    exists = False  # a live hash backs this session
    _stored: Mapping[str, str] = MappingProxyType({})  # key -> its encoding in Redis
    _loader: Loader | None = None
    _unavailable: RedisMiddlewareError | None = None
    loaded_user: str | None = None

    def __init__(
        self,
        limits: Limits,
        session_id: str | None = None,
        data: dict[str, Any] | None = None,
        stored: dict[str, str] | None = None,
        *,
        loader: Loader | None = None,
        unavailable: RedisMiddlewareError | None = None,
        readonly_on_error: bool = False,
        user_field: str = "user_id",
        codec: Codec = JSON,
        also_user_fields: tuple[str, ...] = (),
    ) -> None:
        self._limits = limits
        if session_id is not None:
            self.session_id = session_id
        if stored is not None:
            self._stored = stored
            self.exists = True
        if loader is not None:
            self._loader = loader
        if unavailable is not None:
            self._unavailable = unavailable
        self._readonly_on_error = readonly_on_error
        self._user_field = user_field
        self._also_user_fields = also_user_fields  # read when user_field is absent
        self.codec = codec
        self._dirty: set[str] = set()  # keys assigned or deleted since load
        if data:  # (dict.__new__ made it empty: no dict.__init__ to call)
            dict.update(self, data)
            self.loaded_user = self.user_id

    # -- loading ------------------------------------------------------------
    def _touch(self, mark: bool = True) -> None:
        if mark:
            self.accessed = True
        if self._loader is not None:
            loader, self._loader = self._loader, None
            try:
                loaded = loader()
            except RedisMiddlewareError as exc:
                self.fail(exc)
                loaded = None
            self.set_loaded(loaded)
        if self._unavailable is not None:
            self.unavailable_raised = mark or self.unavailable_raised
            raise SessionUnavailableError("the session store is unavailable") from self._unavailable

    @property
    def pending(self) -> bool:
        """Not loaded yet, and loading is still to be tried."""
        return self._loader is not None

    def set_loaded(self, loaded: tuple[dict[str, Any], dict[str, str]] | None) -> None:
        """Take what a load flow read (the lazy loader, if any, is then not needed)."""
        self._loader = None
        if loaded is None:
            self.exists = False
            return
        data, self._stored = loaded
        dict.clear(self)
        dict.update(self, data)
        self.exists = True
        self.loaded_user = self.user_id

    def fail(self, exc: RedisMiddlewareError) -> None:
        """Loading failed: become unavailable (503) or degraded (empty, read-only)."""
        self._loader = None
        if self._readonly_on_error or self._settled:
            self.degraded = True
        else:
            self._unavailable = exc

    def settle(self) -> None:
        """The app's response is made: from here on, a store that failed reads as an
        empty, read-only session instead of raising. An extension's after-request hook
        (Flask-Login's reads the session on every response) then cannot turn a response
        made without the session into an error; whether the app itself was refused the
        session (the 503) is decided already."""
        self._settled = True
        if self._unavailable is not None:
            self._unavailable = None
            self.degraded = True

    @property
    def user_id(self) -> str | None:
        """The logged-in user's id (the ``user_field`` key), as a string, or None."""
        value = dict.get(self, self._user_field)
        for other in self._also_user_fields:
            if value is not None:
                break
            value = dict.get(self, other)
        return None if value is None or isinstance(value, (dict, list)) else str(value)

    def identity(self) -> str | None:
        """The user id for rate limiting and presence: loads the session if needed, but
        neither marks it accessed (no ``Vary: Cookie``) nor raises when Redis failed."""
        if self._loader is not None or self._unavailable is not None:
            self._load_quietly()
        return self.user_id

    def peek(self) -> dict[str, Any]:
        """The data without marking the session accessed (for the middleware itself);
        a copy, so the caller cannot change the session through it."""
        return dict(dict.items(self))

    def is_empty(self) -> bool:
        """No keys (without marking the session accessed)."""
        return not dict.__len__(self)

    def size(self) -> int:
        """How many keys (without marking the session accessed)."""
        return dict.__len__(self)

    @property
    def loaded(self) -> bool:
        return self._loader is None and self._unavailable is None

    # -- reading: every method loads first --------------------------------------
    def __getitem__(self, key: str) -> Any:
        self._touch()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        self._touch()
        return dict.get(self, key, default)

    def __iter__(self) -> Iterator[str]:
        self._touch()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._touch()
        return dict.__len__(self)

    def __contains__(self, key: object) -> bool:
        self._touch()
        return dict.__contains__(self, key)

    def keys(self) -> Any:
        self._touch()
        return dict.keys(self)

    def values(self) -> Any:
        self._touch()
        return dict.values(self)

    def items(self) -> Any:
        self._touch()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the data."""
        self._touch()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self._touch()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.copy() | other  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return dict(other) | self.copy()

    def __repr__(self) -> str:
        return f"Session({dict.__repr__(self)})" if self.loaded else "Session(<not loaded>)"

    def __reduce__(self) -> Any:  # copy.copy / pickle give the plain data
        return (dict, (self.copy(),))

    # -- writing ----------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        self._touch()
        if not isinstance(key, str):
            raise SessionLimitError("session keys must be strings")
        self._limits.check_value(key, encode(value, self.codec))
        if not dict.__contains__(self, key):
            self._limits.check_totals(dict.__len__(self) + 1, 0)
        dict.__setitem__(self, key, value)
        self._dirty.add(key)
        self.assigned = True

    def __delitem__(self, key: str) -> None:
        self._touch()
        dict.__delitem__(self, key)
        self._dirty.add(key)
        self.assigned = True

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        pairs: Iterable[tuple[str, Any]] = (
            other.items() if isinstance(other, Mapping) else other)
        for key, value in [*pairs, *kwargs.items()]:
            self[key] = value
        self.assigned = True  # also an update with nothing, as Flask's session counts it

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    _MISSING = object()

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        self._touch()
        if not dict.__contains__(self, key):
            if default is Session._MISSING:
                raise KeyError(key)
            return default
        self._dirty.add(key)
        self.assigned = True
        return dict.pop(self, key)

    def popitem(self) -> tuple[str, Any]:
        self._touch()
        key, value = dict.popitem(self)
        self._dirty.add(key)
        self.assigned = True
        return key, value

    # -- lifecycle ----------------------------------------------------------
    def clear(self) -> None:
        """Empty the session; at the end of the request its hash is deleted (logout)."""
        self._touch()
        dict.clear(self)
        self.cleared = True
        self.assigned = True

    def regenerate(self) -> None:
        """Give the session a new id at the end of the request, keeping its data (login)."""
        self._touch()
        self.regenerated = True

    # Flask's SessionMixin attributes, with Flask's meanings, so that ``flask.session``
    # can be this object.
    def _load_quietly(self) -> None:
        """Load without marking the session accessed or raising for an outage."""
        try:
            self._touch(mark=False)
        except SessionUnavailableError:
            pass

    @property
    def new(self) -> bool:
        """No stored session stood behind the request's cookie."""
        self._load_quietly()
        return not self.exists

    def _writes(self) -> bool:
        """Something will be written at the end of the request."""
        if not self.loaded:
            return False
        written, deleted = self.changes()
        return bool(written or deleted or self.cleared or self.regenerated)

    def _set_modified(self, value: bool) -> None:
        # Flask apps set this after changing a value in place: compare every key at save.
        # ``False`` takes back only the assignment's mark (what changed is still written).
        if value:
            self._touch()
            self._all_dirty = True
        self.assigned = bool(value)

    @property
    def modified(self) -> bool:
        """Something will be written at the end of the request."""
        return self._writes()

    @modified.setter
    def modified(self, value: bool) -> None:
        self._set_modified(value)

    @property
    def will_write(self) -> bool:
        """Something will be written at the end of the request: the response cache's
        question. ``modified`` answers it for this class and for the outer sessions the
        cache is shown (Django's, which say only ``modified``); a subclass whose
        ``modified`` means more (Flask's: assigned to) answers it apart."""
        return self.modified

    @property
    def permanent(self) -> bool:
        """Flask's flag (kept, as Flask does, under the ``_permanent`` key): a permanent
        session's cookie outlives the browser session."""
        self._load_quietly()  # reading the flag is no use of the session's data
        return bool(dict.get(self, _PERMANENT, False))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) != self.permanent:
            if value:
                self[_PERMANENT] = True
            else:
                self.pop(_PERMANENT, None)
        self.assigned = True  # Flask's setter assigns the flag, an equal one too

    # -- changes ------------------------------------------------------------
    def changes(self) -> tuple[dict[str, str], list[str]]:
        """(fields to write with their encodings, fields to delete) since load.

        Assigned keys are re-encoded and compared; so are lists and dicts, which can
        change in place. Other values cannot change without an assignment, so an
        untouched or read-only session costs no encoding at all.
        """
        if not self.loaded or not (self.accessed or self._dirty):
            return {}, []
        if not (self._dirty or self._all_dirty or self.cleared) and _UNCHANGEABLE.issuperset(
                map(type, dict.values(self))):
            return {}, []  # read only, and no value can have changed in place
        written: dict[str, str] = {}
        stored = self._stored
        for key, value in dict.items(self):
            if self._all_dirty or key in self._dirty or isinstance(value, (list, dict, tuple)):
                encoded = encode(value, self.codec)
                self._limits.check_value(key, encoded)
                if stored.get(key) != encoded:
                    written[key] = encoded
        if written:  # sizes can only have grown where something was written
            total = sum(len(k.encode("utf-8", "surrogatepass")) + len(
                (written.get(k) or stored.get(k) or "").encode("utf-8", "surrogatepass"))
                for k in dict.keys(self))
            self._limits.check_totals(dict.__len__(self), total)
        # Only a key marked dirty (or a clear) can have gone since load.
        deleted = [key for key in stored if not dict.__contains__(self, key)] if (
            self._dirty or self.cleared or self._all_dirty) else []
        return written, deleted


def session_use(session: object) -> Literal["", "read", "written"]:
    """What the request did with the session so far, for the response cache: ``""``
    (nothing, or not our session), ``"read"``, or ``"written"`` (changes to save)."""
    if not isinstance(session, Session) or not session.accessed:
        return ""
    return "written" if session.will_write else "read"
