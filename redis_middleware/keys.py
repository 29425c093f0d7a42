"""The key policy: the one place where Redis key strings are built.

Every key is ``<prefix>:<component>:<rest>``. Untrusted text (paths, user ids,
header values, session ids) never appears raw: :func:`escape` maps it
injectively onto a small safe alphabet (long values are hashed), so it cannot
add a ``:`` separator, open a ``{hash tag}`` or reach another component. Keys
that one script touches together carry the same ``{hash tag}``, so they live in
one Redis Cluster slot.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

__all__ = ["COMPONENTS", "KeySpace", "digest", "escape"]

COMPONENTS = ("session", "ratelimit", "cache", "presence", "realtime", "data")

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@")
_MAX_ESCAPED = 96


def digest(data: str | bytes, size: int = 16) -> str:
    """A one-way, fixed-length, key-safe digest (SHA-256, base64url, ``size`` bytes)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:size]).rstrip(b"=").decode()


def escape(value: str) -> str:
    """Injective, key-safe form of untrusted text.

    Characters outside ``[A-Za-z0-9._-@]`` are percent-encoded (UTF-8); results longer
    than 96 characters become ``~`` + a SHA-256 digest. ``~`` and ``%`` never appear
    unencoded, so the two forms cannot collide, and no output holds ``:``, ``{`` or ``}``.
    """
    out: list[str] = []
    for ch in value:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    escaped = "".join(out)
    if len(escaped) > _MAX_ESCAPED:
        return "~" + digest(value, 24)
    return escaped


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds the keys of every component under one validated prefix."""

    prefix: str

    def _key(self, component: str, *parts: str) -> str:
        return ":".join((self.prefix, component, *parts))

    # -- sessions -----------------------------------------------------------
    def session(self, slot_tag: str, session_digest: str) -> str:
        """The HASH of one session; ``session_digest`` is a one-way hash of the id."""
        return self._key("session", "{" + slot_tag + "}", session_digest)

    def session_index(self, user_id: str) -> str:
        """The ZSET of one user's sessions (for "log out everywhere")."""
        return self._key("session", "user", "{" + digest(user_id) + "}")

    # -- rate limiting ------------------------------------------------------
    def ratelimit(self, identity: str, rule: str, window: str) -> str:
        """One counter; the counters of one identity share a hash tag."""
        return self._key("ratelimit", "{" + escape(identity) + "}", escape(rule), window)

    # -- cache --------------------------------------------------------------
    def cache_entry(self, url_digest: str, variant_digest: str) -> str:
        return self._key("cache", "{" + url_digest + "}", "e", variant_digest)

    def cache_vary(self, url_digest: str) -> str:
        return self._key("cache", "{" + url_digest + "}", "vary")

    def cache_lock(self, url_digest: str, variant_digest: str) -> str:
        return self._key("cache", "{" + url_digest + "}", "lock", variant_digest)

    def cache_variants(self, url_digest: str) -> str:
        """The ZSET of a URL's stored variants (for invalidating the URL)."""
        return self._key("cache", "{" + url_digest + "}", "variants")

    def cache_registry(self) -> str:
        """The ZSET of every URL with a stored response (for purging everything)."""
        return self._key("cache", "{urls}")

    def cache_tag(self, tag: str) -> str:
        return self._key("cache", "tag", "{" + escape(tag) + "}")

    # -- presence -----------------------------------------------------------
    def presence(self, name: str, room: str = "") -> str:
        """Presence structures; all in one slot per room so scripts stay single-slot."""
        return self._key("presence", "{" + escape(room or "_") + "}", name)

    def presence_channel(self) -> str:
        return self._key("presence", "events")

    # -- real-time fan-out --------------------------------------------------
    def realtime(self, room: str, name: str = "") -> str:
        """A room's channel (``name`` empty) or structure (``seq``, ``stream``); all of one
        room share its hash tag, so a publish script and a sharded channel stay in one slot."""
        tag = "{" + escape(room) + "}"
        return self._key("realtime", tag, name) if name else self._key("realtime", tag)

    # -- data cache -----------------------------------------------------------
    # A value is ``<prefix>:data:[<namespace>:]{<name>}``: the braces make its Cluster slot
    # depend on ``name`` alone (a hash tag inside ``name`` decides it the same way for
    # each of its keys), so its fill lease shares its slot. Bookkeeping follows ``data:``
    # with a word (``fill:``, ``lock:``, ``tag:``), never with ``{``, and namespaces are
    # such words too (``DataCore`` refuses the bookkeeping ones): no name lands there.
    def data(self, name: str, namespace: str = "") -> str:
        """A cached value; ``name`` is the rendered key (its arguments escaped already).
        Always what comes before ``name``, then ``name``, then ``}`` (``DataCore`` joins
        the hot reads' keys so)."""
        if namespace:
            return f"{self.prefix}:data:{namespace}:{{{name}}}"
        return f"{self.prefix}:data:{{{name}}}"

    def data_fill(self, name: str, namespace: str = "") -> str:
        """The single-flight lease of a cached value (same slot as the value)."""
        if namespace:
            return self._key("data", "fill", namespace, "{" + name + "}")
        return self._key("data", "fill", "{" + name + "}")

    def data_lock(self, name: str) -> str:
        """A lock taken with ``DataCache.lock``."""
        return self._key("data", "lock", "{" + escape(name) + "}")

    def data_tag(self, tag: str, namespace: str = "") -> str:
        """The ZSET of the values stored with ``tag`` (scored by their expiry)."""
        if namespace:
            return self._key("data", "tag", namespace, "{" + escape(tag) + "}")
        return self._key("data", "tag", "{" + escape(tag) + "}")

    def data_patterns(self, namespace: str = "") -> tuple[str, ...]:
        """SCAN patterns of a namespace's values, leases and tags (for clearing it)."""
        ns = namespace + ":" if namespace else ""
        base = self._key("data", "")
        return (f"{base}{ns}{{*", f"{base}fill:{ns}{{*", f"{base}tag:{ns}{{*")

    def limits_prefix(self) -> str:
        """The prefix the ``limits`` library's storages put before our escaped identifiers."""
        return self._key("ratelimit")
