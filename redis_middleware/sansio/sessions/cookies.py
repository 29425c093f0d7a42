"""Session cookies: random ids, itsdangerous signatures with key rotation, Set-Cookie values."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from email.utils import formatdate

from itsdangerous import BadSignature, Signer

from ..._memo import Memo, memoized
from ...config.settings import Settings

# An id is a 4-hex-digit slot tag + 256 random bits. The tag is no secret: it only
# puts an id and the id that regenerate() replaces it with in one Redis Cluster slot.
_ID_RE = re.compile(r"^[0-9a-f]{4}[A-Za-z0-9_-]{43}\Z")
ID_LENGTH = 47
_SALT = b"redis_middleware.session"
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


# Octal escapes and backslash-escaped characters inside a quoted cookie value.
_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))")


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)) if m[1] else m[2], value[1:-1])


@memoized(1024)
def parse_cookies(header: str) -> dict[str, str]:
    """A Cookie header as browsers send it (RFC 6265 5.4, leniently): ``name=value`` pairs
    split on ``;``, blanks trimmed, a quoted value unquoted; a pair without ``=`` is a
    value with an empty name (as browsers store it); the last of a repeated name wins.

    Remembered per header (a client sends the same one request after request); the
    result is shared: read it, never change it.
    """
    out: dict[str, str] = {}
    for chunk in header.split(";"):
        name, eq, value = chunk.partition("=")
        if not eq:
            name, value = "", name
        name, value = name.strip(), value.strip()
        if name or value:
            out[name] = _unquote(value)
    return out


def valid_session_id(value: str) -> bool:
    """Whether ``value`` has the form of an id :func:`new_session_id` makes."""
    return len(value) == ID_LENGTH and _ID_RE.match(value) is not None


def new_session_id(slot_tag: str | None = None) -> str:
    """A fresh id; ``slot_tag`` keeps the Cluster slot of the id it replaces."""
    return (slot_tag or secrets.token_hex(2)) + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class IncomingCookie:
    """What the request's cookie says: a verified id (or None) and whether to re-sign it."""

    session_id: str | None
    resign: bool = False
    present: bool = False


_NO_COOKIE = IncomingCookie(None)  # a request without the cookie (immutable, shared)


class _Signer(Signer):
    """itsdangerous' Signer, deriving each secret's key once instead of per cookie.

    The per-request key derivation (an HMAC of the secret) showed in the benchmark
    profile of every session request; the signature format and checks are unchanged.
    """

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache: dict[object, bytes] = self.__dict__.setdefault("_derived", {})
        key = cache.get(secret_key)
        if key is None:
            key = cache[secret_key] = super().derive_key(secret_key)
        return key


class CookieSigner:
    """Signs ids with the first secret; verifies with every secret (key rotation)."""

    def __init__(self, settings: Settings) -> None:
        signers = [
            _Signer(key, salt=_SALT, digest_method=hashlib.sha256, key_derivation="hmac")
            for key in settings.secret_key
        ]
        self._primary = signers[0]
        self._older = signers[1:]
        self._max_length = ID_LENGTH + 1 + len(self._primary.get_signature(b"x"))
        s = settings
        attrs = [f"Path={s.session_cookie_path}"]
        if s.session_cookie_domain:
            attrs.append(f"Domain={s.session_cookie_domain}")
        if s.session_cookie_httponly:
            attrs.append("HttpOnly")
        attrs.append(f"SameSite={s.session_cookie_samesite.capitalize()}")
        if s.session_cookie_partitioned:
            attrs.append("Partitioned")
        self._attrs = "; ".join(attrs)
        self._name = s.session_cookie_name
        self._lifetime = s.session_absolute_lifetime
        self._persistent = s.session_cookie_persistent
        self._expiry = (0, "")  # (second, Expires text of a cookie set in that second)
        # Browsers drop a SameSite=None or Partitioned cookie without Secure, so those are
        # always Secure (Settings refuses them with secure=false).
        forced = s.session_cookie_samesite == "none" or s.session_cookie_partitioned
        self._secure = True if forced else s.session_cookie_secure
        # Cookies this process verified: the value includes its signature, so a value
        # seen before verifies the same way again (HMAC once per cookie, not per request).
        self._verified: Memo[str, IncomingCookie] = Memo(4096)

    def verify(self, value: str | None) -> IncomingCookie:
        """Check a cookie value; anything but a well-formed, validly signed id is no session."""
        if not value:
            return _NO_COOKIE
        known = self._verified.get(value)
        if known is not None:
            return known
        if len(value) != self._max_length or not value.isascii():
            return IncomingCookie(None, present=True)
        raw = value.encode("ascii")
        resign = False
        try:
            session_id = self._primary.unsign(raw).decode("ascii")
        except BadSignature:
            for signer in self._older:
                try:
                    session_id = signer.unsign(raw).decode("ascii")
                    resign = True
                    break
                except BadSignature:
                    continue
            else:
                return IncomingCookie(None, present=True)
        if not _ID_RE.match(session_id):
            return IncomingCookie(None, present=True)
        return self._verified.put(value, IncomingCookie(session_id, resign=resign, present=True))

    def _secure_attr(self, https: bool) -> str:
        secure = https if self._secure is None else self._secure
        return "; Secure" if secure else ""

    # Set-Cookie is built by hand: the value is URL-safe base64 and the name and
    # attributes were validated at startup, so no quoting is needed, and this runs on
    # every login (http.cookies.SimpleCookie costs several times more).
    def set_cookie(self, session_id: str, https: bool, persistent: bool | None = None) -> str:
        """The cookie for ``session_id``; ``persistent`` None: as the settings say."""
        value = self._primary.sign(session_id.encode("ascii")).decode("ascii")
        keep = self._persistent if persistent is None else persistent
        age = f"; Max-Age={self._lifetime}; Expires={self._expires()}" if keep else ""
        return f"{self._name}={value}{age}; {self._attrs}{self._secure_attr(https)}"

    def _expires(self) -> str:
        """``Expires`` beside ``Max-Age`` (RFC 6265 5.3: Max-Age wins where understood;
        older clients and some test tools read only Expires), formatted once a second."""
        now = int(time.time())
        second, text = self._expiry
        if second != now:
            text = formatdate(now + self._lifetime, usegmt=True)
            self._expiry = (now, text)
        return text

    def expire_cookie(self, https: bool) -> str:
        return (
            f"{self._name}=; Max-Age=0; Expires={_EXPIRED}; {self._attrs}"
            f"{self._secure_attr(https)}"
        )
