"""Parsing the fields that carry caching policy: ``Cache-Control`` (RFC 9111 5.2), the
targeted fields such as ``CDN-Cache-Control`` (RFC 9213, Structured Field Dictionaries
of RFC 8941), delta-seconds and ``Age``.

All pure, all on text. A directive that appears twice counts once, the first time
(RFC 9111 4.2.1); a quoted argument may contain commas and equals signs.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DELTA", "Directives", "age_value", "delta_seconds", "parse_cache_control",
           "parse_targeted", "split_tokens"]

Directives = dict[str, str | None]

MAX_DELTA = 2**31  # RFC 9111 1.2.2: larger delta-seconds count as this

# One directive: a token name, then optionally "=" and a token or a quoted string.
_DIRECTIVE = re.compile(
    r'\s*([^\s,=";]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*))?\s*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")


def parse_cache_control(value: str | None) -> Directives:
    """Directive names in lower case, their arguments unquoted (None: no argument)."""
    out: Directives = {}
    if not value:
        return out
    pos, end = 0, len(value)
    while pos < end:
        m = _DIRECTIVE.match(value, pos)
        if m is None or m.end() == pos:
            # Unparseable text up to the next comma outside quotes: skip it.
            nxt = _next_comma(value, pos)
            pos = nxt + 1
            continue
        name, arg = m.group(1).lower(), m.group(2)
        if arg is not None and arg.startswith('"'):
            arg = _ESCAPE.sub(r"\1", arg[1:-1])
        out.setdefault(name, arg)
        pos = m.end()
    return out


def _next_comma(value: str, pos: int) -> int:
    quoted = False
    for i in range(pos, len(value)):
        c = value[i]
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            return i
    return len(value)


def delta_seconds(arg: str | None) -> int | None:
    """An argument of digits (leading zeros allowed), capped at 2^31; None if invalid."""
    if arg is None or not arg.isascii() or not arg.isdigit():
        return None
    return min(int(arg), MAX_DELTA)


def age_value(lines: list[str]) -> int | None:
    """The ``Age`` of a response: the first value of the first line, if it is digits
    (RFC 9111 5.1); anything else (negative, fractional, text) is ignored."""
    if not lines:
        return None
    first = lines[0].split(",", 1)[0].strip()
    return delta_seconds(first)


# RFC 8941 Dictionary members: key[=bare-item][;params], separated by commas. Written
# here rather than taken from a Structured Fields library (http-sfv): a targeted field
# needs only this validity check and the bare items of a few directives, and a new
# runtime dependency for one regex was not worth it.
_SF_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_ITEM = r'(?:-?\d{1,15}(?:\.\d{1,3})?|"(?:[^"\\]|\\["\\])*"|[A-Za-z*][\w:/!#$%&\'*+\-.^`|~]*|' \
    r":[A-Za-z0-9+/=]*:|\?[01])"
_SF_MEMBER = re.compile(
    rf"({_SF_KEY})(?:=({_SF_ITEM}))?((?:;\s*{_SF_KEY}(?:={_SF_ITEM})?)*)")


def parse_targeted(value: str | None) -> Directives | None:
    """A targeted cache-control field (RFC 9213 2.1): a Structured Field Dictionary.

    None when the value is empty or not a valid Dictionary, or when a directive the
    cache acts on has the wrong type (``max-age="10"``): the cache then ignores the
    field and falls back to ``Cache-Control``. Integers come back as text, booleans as
    no argument (as ``Cache-Control`` directives look).
    """
    if value is None or not value.strip():
        return None
    out: Directives = {}
    for raw in value.split(","):
        member = raw.strip(" \t")
        m = _SF_MEMBER.fullmatch(member)
        if m is None:
            return None
        name, item = m.group(1), m.group(2)
        if item is None or item == "?1":
            arg = None
        elif item == "?0":
            continue  # a false boolean is as if absent
        else:
            arg = item
        if name in ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error") and (
                arg is None or not arg.isdigit()):
            return None  # RFC 9213 2.1: an invalid value for a known directive
        out.setdefault(name, arg)
    return out


def split_tokens(lines: list[str]) -> list[str]:
    """The comma-separated tokens of every line of a list field, stripped, non-empty."""
    return [t.strip() for line in lines for t in line.split(",") if t.strip()]
