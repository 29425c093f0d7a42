"""Strict parsers for settings values read from the environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def parse_optional_bool(raw: str) -> bool | None:
    """``auto`` (or empty) means None: decided per request."""
    if raw.strip().lower() in {"", "auto"}:
        return None
    return parse_bool(raw)


def parse_int(raw: str) -> int:
    text = raw.strip()
    if not text.lstrip("+-").isdigit():
        raise ValueError("expected a whole number")
    return int(text)


def parse_float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def parse_str(raw: str) -> str:
    return raw.strip()


def parse_optional_str(raw: str) -> str | None:
    text = raw.strip()
    return text or None


def parse_csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_int_csv(raw: str) -> tuple[int, ...]:
    return tuple(parse_int(part) for part in parse_csv(raw))


def parse_import(raw: str) -> Any:
    """``package.module:attribute`` -> that object (as uvicorn and gunicorn name apps)."""
    import importlib

    module, sep, attribute = raw.strip().partition(":")
    if not sep or not module or not attribute:
        raise ValueError("expected module:attribute")
    try:
        found = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {raw.strip()!r}: {exc}") from None
    return found


def parse_env(
    name: str, raw: str, parser: Callable[[str], Any], *, secret: bool = False
) -> Any:
    """Run ``parser`` on ``raw``; a failure becomes a ConfigError naming ``name``."""
    try:
        return parser(raw)
    except ValueError as exc:
        shown = "<hidden>" if secret else repr(raw)
        raise ConfigError(name, f"invalid value {shown}: {exc}") from None
