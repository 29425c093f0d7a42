"""A normalised, I/O-free view of one request, built from an ASGI scope or a WSGI environ."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .._memo import Memo
from .sessions.cookies import parse_cookies

__all__ = ["RequestInfo", "from_environ", "from_scope"]

NO_COOKIES: Mapping[str, str] = MappingProxyType({})


def cookies_of(lines: list[str]) -> Mapping[str, str]:
    """The cookies of a request's Cookie lines; several lines (HTTP/2) are joined, as
    RFC 9113 8.2.3 says."""
    if not lines:
        return NO_COOKIES
    return parse_cookies(lines[0] if len(lines) == 1 else "; ".join(lines))


class RequestInfo:
    """What the cores decide from. ``headers`` are lower-cased names, in order.

    Built from a scope or an environ, the headers are decoded on first use: most
    requests (no cached route, no forwarded address, no credential to key on) read
    only their cookies, which are parsed up front. A per-request value: a plain class
    with slots, not a frozen dataclass (measured: a frozen one costs about 0.1 µs a
    field to build).
    """

    __slots__ = ("_headers", "_source", "cookies", "method", "path", "peer", "query_string",
                 "scheme", "user")

    def __init__(self, method: str, path: str, query_string: bytes,
                 headers: tuple[tuple[str, str], ...] | None, peer: str | None, scheme: str,
                 user: str | None = None, cookies: Mapping[str, str] = NO_COOKIES,
                 source: Callable[[], tuple[tuple[str, str], ...]] | None = None) -> None:
        """``headers``, or None with ``source``: what decodes them when first read."""
        self.method, self.path, self.query_string = method, path, query_string
        self.peer, self.scheme, self.user, self.cookies = peer, scheme, user, cookies
        self._headers, self._source = headers, source

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        headers = self._headers
        if headers is None:
            source, self._source = self._source, None
            headers = self._headers = source() if source is not None else ()
        return headers

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def __repr__(self) -> str:
        return (f"RequestInfo({self.method!r}, {self.path!r}, peer={self.peer!r}, "
                f"scheme={self.scheme!r}, user={self.user!r})")


def _session_user(session: Any, user_field: str) -> str | None:
    if session is None:  # most requests: no session yet (an ABC isinstance costs a call)
        return None
    identity = getattr(session, "identity", None)
    if callable(identity) and getattr(session, "_user_field", None) == user_field:
        user: str | None = identity()  # our Session: no Vary mark, no 503 on failure
        return user
    if isinstance(session, Mapping):
        value = session.get(user_field)
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    return None


def scope_user(scope: Mapping[str, Any], user_field: str) -> str | None:
    """The server-verified user of an ASGI request: our session, else ``scope["user"]``."""
    user = _session_user(scope.get("session"), user_field)
    if user is None:
        user = _authenticated(scope.get("user"))
    return user


def _authenticated(auth: Any) -> str | None:
    """The id of Starlette's ``scope["user"]`` (set by its ``AuthenticationMiddleware``):
    ``identity``, else ``display_name``; None for an anonymous user. ``BaseUser``'s
    properties raise NotImplementedError where a subclass does not define them."""
    if auth is None:
        return None
    try:
        if not auth.is_authenticated:
            return None
    except (AttributeError, NotImplementedError):
        return None
    for name in ("identity", "display_name"):
        try:
            value = getattr(auth, name)
        except (AttributeError, NotImplementedError):
            continue
        if value:
            return str(value)
    return None


def from_scope(scope: Mapping[str, Any], user_field: str | None) -> RequestInfo:
    """The request of an ASGI scope; its user is looked up unless ``user_field`` is None."""
    client = scope.get("client")
    raw = tuple(scope.get("headers", ()))  # as they are now, whenever they are decoded
    cookie_lines = []
    for k, v in raw:  # ASGI names are lower-case; a server that sent others is allowed
        if k == b"cookie" or (len(k) == 6 and k.lower() == b"cookie"):
            cookie_lines.append(v.decode("latin-1"))
    return RequestInfo(
        scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET",
        scope.get("path", "/"),
        scope.get("query_string", b""),
        None,
        client[0] if client else None,
        scope.get("scheme", "http"),
        # No outer session or user in the scope (most requests): nobody to look up.
        scope_user(scope, user_field) if user_field is not None and (
            scope.get("session") is not None or scope.get("user") is not None) else None,
        cookies_of(cookie_lines),
        lambda: _scope_headers(raw),
    )


def _scope_headers(raw: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)


def environ_user(environ: Mapping[str, Any], user_field: str) -> str | None:
    """The server-verified user of a WSGI request: our session, else ``REMOTE_USER``."""
    user = _session_user(environ.get("redis_middleware.session"), user_field)
    return user if user is not None else environ.get("REMOTE_USER") or None


# environ key -> header name, or "" for keys that are not headers. Bounded: clients choose
# header names. Saves rebuilding ~20 names per request (a measured part of a cache hit).
_HEADER_NAMES: Memo[str, str] = Memo(4096)


def _header_name(key: str) -> str:
    if key.startswith("HTTP_"):
        name = key[5:].replace("_", "-").lower()
    elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        name = key.replace("_", "-").lower()
    else:
        name = ""
    return _HEADER_NAMES.put(key, name)


def from_environ(environ: Mapping[str, Any]) -> RequestInfo:
    """The request of a WSGI environ (its user is resolved lazily: see environ_user)."""
    query = environ.get("QUERY_STRING", "")
    try:  # inline: every WSGI request runs this
        query_bytes = query.encode("latin-1")  # PEP 3333
    except UnicodeEncodeError:  # a server that put other characters there
        query_bytes = query.encode("utf-8", "surrogatepass")
    return RequestInfo(
        environ.get("REQUEST_METHOD", "GET"),
        (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/",
        query_bytes,
        None,
        environ.get("REMOTE_ADDR") or None,
        environ.get("wsgi.url_scheme", "http"),
        None,  # resolved lazily: reading it may load the session
        cookies_of([cookie]) if (cookie := environ.get("HTTP_COOKIE")) else NO_COOKIES,
        lambda: _environ_headers(environ),
    )


# An environ's keys, in order -> (key, header name) for each key that is a header. Most
# requests come with one of a few key sets (one per kind of client and server): their
# names are picked out once per set, not per request. Bounded: clients choose header names.
_ENVIRON_FIELDS: Memo[tuple[str, ...], tuple[tuple[str, str], ...]] = Memo(512)


def _environ_fields(keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    names = _HEADER_NAMES
    fields = []
    for key in keys:
        name = names.get(key)
        if name is None:
            name = _header_name(key)
        if name:
            fields.append((key, name))
    return _ENVIRON_FIELDS.put(keys, tuple(fields))


def _environ_headers(environ: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    keys = tuple(environ)
    fields = _ENVIRON_FIELDS.get(keys)
    if fields is None:
        fields = _environ_fields(keys)
    headers = []
    for key, name in fields:
        value = environ[key]
        if value or key[0] == "H":  # empty CONTENT_* means "absent"
            headers.append((name, value))
    return tuple(headers)
