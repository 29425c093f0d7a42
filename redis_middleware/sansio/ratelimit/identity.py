"""Whose bucket a request is counted in: the request turned into an identity, by kind.

The kinds are declared in :mod:`redis_middleware.config.identity`; here each has its
resolver (:data:`RESOLVERS`, by the kind's name). An identity is namespaced by the
kind that made it (``ip:``, ``user:``, ``bearer:``, ``header:<name>:``, ``custom:``), so
a user id can never collide with an address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..request import RequestInfo
from .client_ip import ProxyTrust

__all__ = ["RESOLVERS", "IdentityResolver", "credential_of", "identity_kind"]

User = Callable[[], str | None]  # the signed-in user's id, looked up only when needed
_MAX_CREDENTIAL = 4096  # longer values are no credential (and cost no hashing)
_NONE: list[str] = []  # no header lines (read only)


class IdentityResolver:
    """Turns a request into its identity for a kind: ``ip:...``, ``user:...``, ... (None:
    not limited)."""

    def __init__(self, trust: ProxyTrust,
                 key_func: Callable[[RequestInfo], Any] | None = None) -> None:
        self.trust = trust
        self.key_func = key_func  # the callable of the ``custom`` kind

    def resolve(self, kind: str, request: RequestInfo, user: User) -> str | None:
        return RESOLVERS[kind.partition(":")[0]](self, kind, request, user)


def _ip(r: IdentityResolver, kind: str, request: RequestInfo, user: User) -> str:
    trust = r.trust
    if not trust.anyone:  # the peer alone decides: its headers need no collecting
        return "ip:" + trust.client(request.peer, _NONE, _NONE)
    return "ip:" + trust.client(
        request.peer, request.header_list("x-forwarded-for"), request.header_list("forwarded"))


def _user(r: IdentityResolver, kind: str, request: RequestInfo, user: User) -> str | None:
    uid = user()
    return None if uid is None else "user:" + uid  # anonymous: not counted


def _user_or_ip(r: IdentityResolver, kind: str, request: RequestInfo, user: User) -> str:
    return _user(r, kind, request, user) or _ip(r, kind, request, user)


def _credential(r: IdentityResolver, kind: str, request: RequestInfo, user: User) -> str:
    # No credential: counted by address, like any anonymous client.
    return credential_of(request, kind) or _ip(r, kind, request, user)


def _custom(r: IdentityResolver, kind: str, request: RequestInfo, user: User) -> str | None:
    value = None if r.key_func is None else r.key_func(request)
    return None if value is None else "custom:" + str(value)


Resolver = Callable[[IdentityResolver, str, RequestInfo, User], str | None]
RESOLVERS: dict[str, Resolver] = {
    "ip": _ip,
    "user": _user,
    "user_or_ip": _user_or_ip,
    "bearer": _credential,
    "header": _credential,
    "custom": _custom,
}


def credential_of(request: RequestInfo, kind: str) -> str | None:
    """``bearer:<digest>`` or ``header:<name>:<digest>`` for a request that carries one.

    The value is hashed (SHA-256, 128 bits kept) before it becomes part of a key: a
    token is never stored in clear, and any byte it holds stays out of the key's
    syntax."""
    if kind == "bearer":
        value = request.header("authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        value, label = token.strip(), "bearer"
    else:
        name = kind.partition(":")[2].lower()
        value, label = (request.header(name) or "").strip(), f"header:{name}"
    if not value or len(value) > _MAX_CREDENTIAL:
        return None
    return f"{label}:{hashlib.sha256(value.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}"


def identity_kind(identity: str) -> str:
    """``ip``, ``user``, ``custom``, ``bearer`` or ``header``: a metric label that never
    holds who it is."""
    return identity.partition(":")[0]
