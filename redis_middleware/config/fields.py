"""Settings declared as fields that know their environment variable.

:func:`setting` declares a field with its variable, the parser of the variable's text,
its help (the configuration reference is generated from them) and, for a default that
depends on another setting, how it is derived. :class:`FieldSettings` gives a frozen
dataclass of such fields what every settings object does with them: read them from the
environment, name a field's variable, derive the defaults left unset, run the checks
(an :class:`Invalid` field becomes a ConfigError naming its variable), copy with changes,
and show itself without its secrets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self, TypeVar

from ..errors import ConfigError
from .parse import parse_env

__all__ = ["FieldSettings", "Invalid", "setting"]

T = TypeVar("T")


class Invalid(ValueError):
    """The setting ``name`` is not valid: ``message`` says what it must be (``show``: the
    error may show the value)."""

    def __init__(self, name: str, message: str, *, show: bool = True) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.show = show


def setting(
    default: Any,
    env: str,
    parser: Callable[[str], Any],
    doc: str,
    *,
    secret: bool = False,
    shown: Callable[[Any], str] = repr,
    derived: tuple[Callable[[Any], Any], str] | None = None,
) -> Any:
    """A field read from ``env`` by ``parser``, described by ``doc``.

    ``secret``: an unparsable value is not echoed in the error; ``shown``: how ``repr``
    shows the value. ``derived``: the default (``None``) is computed from the settings by
    the function; the text is what the reference shows as the default.
    """
    return field(default=default, metadata={
        "env": env, "parser": parser, "doc": doc, "secret": secret, "shown": shown,
        "derived": derived})


@dataclass(frozen=True, kw_only=True, repr=False)
class FieldSettings:
    """The base of a frozen, keyword-only dataclass of :func:`setting` fields."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 defaults: Mapping[str, Any] | None = None) -> Self:
        """Build settings from ``environ`` (default ``os.environ``); a variable that is not
        set means ``defaults[field]`` if given (a framework's own configuration, say), else
        the field's default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for f in fields(cls):
            name = f.metadata["env"]
            if name in env:
                values[f.name] = parse_env(
                    name, env[name], f.metadata["parser"], secret=f.metadata["secret"]
                )
        return cls(**values)

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable of field ``name``."""
        for f in fields(cls):
            if f.name == name:
                return str(f.metadata["env"])
        raise KeyError(name)

    def _derive(self) -> frozenset[str]:
        """Compute the derived defaults left unset (in the fields' order); returns their
        names."""
        found = []
        for f in fields(self):
            rule = f.metadata["derived"]
            if rule is not None and getattr(self, f.name) is None:
                object.__setattr__(self, f.name, rule[0](self))
                found.append(f.name)
        derived = frozenset(found)
        object.__setattr__(self, "_derived", derived)
        return derived

    def _check(self, check: Callable[[dict[str, Any]], T]) -> T:
        """Run ``check`` on the values by field name and keep the normal forms it writes
        back (a tuple for a comma-separated string, say); its :class:`Invalid` becomes a
        ConfigError naming the variable."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        try:
            result = check(values)
        except Invalid as exc:
            shown = f" (got {values[exc.name]!r})" if exc.show else ""
            raise ConfigError(self.env_name(exc.name), exc.message + shown) from None
        for name, value in values.items():
            if value is not getattr(self, name):
                object.__setattr__(self, name, value)
        return result

    @property
    def derived(self) -> frozenset[str]:
        """The settings left unset and derived from others."""
        found: frozenset[str] = getattr(self, "_derived", frozenset())
        return found

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (validated like the constructor)."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise ConfigError(name, "unknown setting")
        # A derived default is derived again from the new values, unless it is changed.
        rederive: dict[str, Any] = {n: None for n in self.derived if n not in changes}
        return dataclasses.replace(self, **rederive, **changes)

    def __repr__(self) -> str:
        parts = (f"{f.name}={f.metadata['shown'](getattr(self, f.name))}" for f in fields(self))
        return f"{type(self).__name__}({', '.join(parts)})"
