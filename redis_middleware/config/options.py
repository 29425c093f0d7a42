"""Middleware options: ``Cls(app, settings=None, **options)`` resolved against Settings."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..errors import ConfigError
from .settings import Settings

_FIELDS = frozenset(f.name for f in fields(Settings))


def resolve_settings(
    settings: Settings | None, component: str, options: dict[str, Any]
) -> Settings:
    """Apply ``options`` to ``settings`` (default: from the environment).

    An option is a Settings field, with or without the component's prefix:
    ``SessionMiddleware(app, cookie_name="sid")`` sets ``session_cookie_name``.
    """
    base = Settings.from_env() if settings is None else settings
    if not isinstance(base, Settings):
        raise ConfigError("settings", f"expected a Settings instance, got {type(base).__name__}")
    changes = {option_field(component, name): value for name, value in options.items()}
    return base.replace(**changes) if changes else base


def option_field(component: str, name: str) -> str:
    """The Settings field an option of ``component`` names: with the component's prefix
    (``cookie_name`` -> ``session_cookie_name``), else the name itself."""
    full = f"{component}_{name}"
    if full in _FIELDS:
        return full
    if name in _FIELDS:
        return name
    raise ConfigError(name, f"unknown option for the {component} middleware")
