"""Whom a rate limit counts: the identity kinds, declared once.

A kind is what ``ratelimit_key``, a rule's ``key`` or ``presence_key`` names (``ip``,
``user``, ``header:X-Api-Key``...). Each is declared here, with no request handling:
whether resolving it needs the signed-in user, whether it is a request credential, the
identities it makes as the CLI's ``--key`` takes them, and its help. Settings validate
against this table and show its help in the configuration reference, the CLI checks
``--key`` with it, and the core resolves a request by the kind's name
(:mod:`redis_middleware.sansio.ratelimit.identity`, one resolver per kind).

A new kind is a row here, its resolver in the core and a line in docs/ratelimit.md;
``tests/test_identity_kinds.py`` fails until all three are there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CHOICES", "KINDS", "PRESENCE_CHOICES", "Kind", "check_identity", "counts_presence",
           "help_text", "kind_of", "settable"]


def _address(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex)
    return lambda value: compiled.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Kind:
    """One identity kind.

    ``argument`` names the parameter of a kind written ``<name>:<Argument>`` and
    ``argument_re`` what it may be. ``identity`` is the form of the identities the kind
    makes of its own (``bearer:DIGEST``; empty: it makes those of other kinds), and
    ``identity_value`` checks the part after ``<name>:``. ``settable``: named by a string
    in the settings (not: by a callable in code).
    """

    name: str
    help: str
    needs_user: bool = False  # the session (or the framework's user) must be loaded first
    credential: bool = False  # a value the request carries, hashed; presence may count by it
    argument: str = ""
    argument_re: str = ""
    identity: str = ""
    identity_value: Callable[[str], bool] | None = None
    settable: bool = True

    @property
    def spelling(self) -> str:
        """How a user writes it: ``ip``, ``header:<Name>``."""
        return f"{self.name}:<{self.argument}>" if self.argument else self.name


KINDS: tuple[Kind, ...] = (
    Kind("ip", "the client's address", identity="ip:ADDRESS", identity_value=_address),
    Kind("user", "the signed-in user's id; a request without one is not counted",
         needs_user=True, identity="user:ID", identity_value=_pattern(".+")),
    Kind("user_or_ip", "the signed-in user, else the address", needs_user=True),
    Kind("bearer", "the token of `Authorization: Bearer`, hashed", credential=True,
         identity="bearer:DIGEST", identity_value=_pattern("[0-9a-f]{32}")),
    Kind("header", "that header's value, hashed: an API key", credential=True,
         argument="Name", argument_re="[A-Za-z0-9-]{1,64}", identity="header:NAME:DIGEST",
         identity_value=_pattern("[a-z0-9-]+:[0-9a-f]{32}")),
    Kind("custom", "a callable taking the request and returning a string (None: not "
         "limited)", settable=False, identity="custom:VALUE", identity_value=_pattern(".+")),
)
_BY_NAME = {kind.name: kind for kind in KINDS}
_ARGUMENTS = {kind.name: re.compile(kind.argument_re) for kind in KINDS if kind.argument}


def kind_of(text: object) -> Kind | None:
    """The kind ``text`` names (``header:X-Api-Key`` names ``header``), or None."""
    if not isinstance(text, str):
        return None
    name, colon, argument = text.partition(":")
    kind = _BY_NAME.get(name)
    if kind is None or bool(colon) != bool(kind.argument):
        return None
    if colon and _ARGUMENTS[name].fullmatch(argument) is None:
        return None
    return kind


def settable(text: object) -> bool:
    """A kind the settings may name: ``ratelimit_key`` (besides a callable), a rule's
    ``key``."""
    kind = kind_of(text)
    return kind is not None and kind.settable


def _counts_presence(kind: Kind | None) -> bool:
    return kind is not None and kind.settable and (kind.name == "user" or kind.credential)


def counts_presence(text: object) -> bool:
    """A kind ``presence_key`` may name: the user, or a credential (else the user)."""
    return _counts_presence(kind_of(text))


# What the messages and the help list, in the table's order.
CHOICES = tuple(kind.spelling for kind in KINDS if kind.settable)
PRESENCE_CHOICES = tuple(kind.spelling for kind in KINDS if _counts_presence(kind))
IDENTITIES = tuple(kind.identity for kind in KINDS if kind.identity)


def check_identity(text: str) -> str:
    """``text`` if it is an identity some kind makes (what the CLI's ``--key`` takes),
    else ValueError naming the forms."""
    name, _, value = text.partition(":")
    kind = _BY_NAME.get(name)
    if kind is None or kind.identity_value is None or not kind.identity_value(value):
        if name == "ip":
            raise ValueError(f"not an IP address: {value!r}")
        raise ValueError("expected " + ", ".join(IDENTITIES[:-1]) + " or " + IDENTITIES[-1])
    return text


def help_text() -> str:
    """The kinds with their help, for ``ratelimit_key``'s entry in the reference."""
    settable_kinds = [f"`{k.spelling}` ({k.help})" for k in KINDS if k.settable]
    in_code = [k.help for k in KINDS if not k.settable]
    return ", ".join(settable_kinds) + ", or, in code, " + " or ".join(in_code) + ". " + (
        " and ".join(f"`{k.name}{':' if k.argument else ''}`" for k in KINDS if k.credential)
        + " count a request without one by IP.")
