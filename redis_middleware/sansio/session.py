"""The session mapping handed to applications (``request.session``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

from ..errors import RedisMiddlewareError, SessionLimitError, SessionUnavailableError
from ..settings import Settings


def encode(value: Any) -> str:
    """The stored form of a value: compact JSON (never pickle)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
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


class Session(MutableMapping[str, Any]):
    """A dict of JSON values stored as one Redis hash, one field per key.

    Only keys whose encoded value changed are written back, so concurrent requests
    that change different keys both keep their change. Call :meth:`regenerate` at
    login (a new id; the old cookie stops working) and :meth:`clear` at logout.
    """

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
    ) -> None:
        self._limits = limits
        self.session_id = session_id
        self._data: dict[str, Any] = data or {}
        self._stored: dict[str, str] = stored or {}  # key -> encoding in Redis
        self.exists = stored is not None  # a live hash backs this session
        self._loader = loader
        self._unavailable = unavailable
        self._readonly_on_error = readonly_on_error
        self._user_field = user_field
        self.degraded = False  # Redis failed and the session carries on empty, read-only
        self.unavailable_raised = False  # the app was told the store is unavailable
        self.accessed = False
        self.cleared = False
        self.regenerated = False
        self._dirty: set[str] = set()  # keys assigned or deleted since load
        self.loaded_user = self.user_id

    # -- loading ------------------------------------------------------------
    def _touch(self, mark: bool = True) -> dict[str, Any]:
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
        return self._data

    def set_loaded(self, loaded: tuple[dict[str, Any], dict[str, str]] | None) -> None:
        if loaded is None:
            self.exists = False
            return
        self._data, self._stored = loaded
        self.exists = True
        self.loaded_user = self.user_id

    def fail(self, exc: RedisMiddlewareError) -> None:
        """Loading failed: become unavailable (503) or degraded (empty, read-only)."""
        self._loader = None
        if self._readonly_on_error:
            self.degraded = True
        else:
            self._unavailable = exc

    @property
    def user_id(self) -> str | None:
        """The logged-in user's id (the ``user_field`` key), as a string, or None."""
        value = self._data.get(self._user_field)
        return None if value is None else str(value)

    def identity(self) -> str | None:
        """The user id for rate limiting and presence: loads the session if needed, but
        neither marks it accessed (no ``Vary: Cookie``) nor raises when Redis failed."""
        try:
            self._touch(mark=False)
        except SessionUnavailableError:
            return None
        return self.user_id

    def peek(self) -> Mapping[str, Any]:
        """The data without marking the session accessed (for the middleware itself)."""
        return MappingProxyType(self._data)

    @property
    def loaded(self) -> bool:
        return self._loader is None and self._unavailable is None

    # -- mapping ------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._touch()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        data = self._touch()
        if not isinstance(key, str):
            raise SessionLimitError("session keys must be strings")
        self._limits.check_value(key, encode(value))
        if key not in data:
            self._limits.check_totals(len(data) + 1, 0)
        data[key] = value
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self._touch()[key]
        self._dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._touch())

    def __len__(self) -> int:
        return len(self._touch())

    def __contains__(self, key: object) -> bool:
        return key in self._touch()

    def __repr__(self) -> str:
        return f"Session({self._data!r})" if self.loaded else "Session(<not loaded>)"

    # -- lifecycle ----------------------------------------------------------
    def clear(self) -> None:
        """Empty the session; at the end of the request its hash is deleted (logout)."""
        self._touch().clear()
        self.cleared = True

    def regenerate(self) -> None:
        """Give the session a new id at the end of the request, keeping its data (login)."""
        self._touch()
        self.regenerated = True

    # Flask's SessionMixin attributes, so ``flask.session`` can be this object.
    @property
    def new(self) -> bool:
        return not self.exists

    @property
    def modified(self) -> bool:
        return self.loaded and bool(self.changes()[0] or self.changes()[1] or self.cleared)

    permanent = True

    # -- changes ------------------------------------------------------------
    def changes(self) -> tuple[dict[str, str], list[str]]:
        """(fields to write with their encodings, fields to delete) since load.

        Assigned keys are re-encoded and compared; so are lists and dicts, which can
        change in place. Other values cannot change without an assignment, so an
        untouched or read-only session costs no encoding at all.
        """
        if not self.loaded or not (self.accessed or self._dirty):
            return {}, []
        written: dict[str, str] = {}
        for key, value in self._data.items():
            if key in self._dirty or isinstance(value, (list, dict)):
                encoded = encode(value)
                self._limits.check_value(key, encoded)
                if self._stored.get(key) != encoded:
                    written[key] = encoded
        if written:  # sizes can only have grown where something was written
            total = sum(len(k.encode("utf-8", "surrogatepass")) + len(
                (written.get(k) or self._stored.get(k) or "").encode("utf-8", "surrogatepass"))
                for k in self._data)
            self._limits.check_totals(len(self._data), total)
        deleted = [key for key in self._stored if key not in self._data]
        return written, deleted
