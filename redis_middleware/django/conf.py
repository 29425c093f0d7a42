"""``Settings`` from a Django project's configuration (``REDIS_MIDDLEWARE`` and Django's own)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from django.conf import settings as django_conf
from django.core.signals import setting_changed

from ..errors import ConfigError
from ..sansio.stack import stack_field
from ..settings import Settings

__all__ = ["SETTING", "django_settings", "forget_settings"]

SETTING = "REDIS_MIDDLEWARE"  # the dict in settings.py: Settings field names -> values
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Django settings whose change (``override_settings`` in tests) changes ours.
_WATCHED = frozenset({SETTING, "SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_COOKIE_AGE",
                      "SESSION_COOKIE_NAME", "SESSION_SERIALIZER"})
_DEFAULT_LIFETIME: int = _FIELDS["session_absolute_lifetime"].default  # type: ignore[assignment]
_cached: Settings | None = None


def _from_django() -> dict[str, Any]:
    """What Django's own settings say: the secret (when long enough for ours) and the
    session lifetime (``SESSION_COOKIE_AGE``; Django has no absolute lifetime, so ours is
    at least as long)."""
    out: dict[str, Any] = {}
    keys = [django_conf.SECRET_KEY, *getattr(django_conf, "SECRET_KEY_FALLBACKS", ())]
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in keys if k]
    if keys and all(len(k) >= 32 for k in keys):
        out["secret_key"] = tuple(keys)
    age = int(django_conf.SESSION_COOKIE_AGE)
    out["session_idle_timeout"] = age
    out["session_absolute_lifetime"] = max(age, _DEFAULT_LIFETIME)
    out["session_cookie_name"] = django_conf.SESSION_COOKIE_NAME
    return out


def _explicit() -> dict[str, Any]:
    given = getattr(django_conf, SETTING, None) or {}
    if not isinstance(given, dict):
        raise ConfigError(SETTING, "must be a dict of Settings field names to values")
    out = {}
    for name, value in given.items():
        field = stack_field(str(name).lower())  # "limit" as the one-line stack takes it
        if field not in _FIELDS:
            raise ConfigError(f"{SETTING}[{name!r}]", "not a redis-middleware setting "
                              "(docs/configuration.md lists them)")
        out[field] = value
    return out


def django_settings(**options: Any) -> Settings:
    """The settings of this Django project; precedence, highest first:

    1. ``options`` (a middleware's keyword arguments, in code);
    2. ``settings.REDIS_MIDDLEWARE`` (field names of :class:`Settings`, any case);
    3. the ``REDIS_MIDDLEWARE_*`` / ``REDIS_URL`` environment variables that are set;
    4. Django's settings: ``SECRET_KEY`` (+ ``SECRET_KEY_FALLBACKS``) when each is 32+
       characters, ``SESSION_COOKIE_AGE``, ``SESSION_COOKIE_NAME``;
    5. the defaults.

    Without ``options`` the result is computed once per configuration (Django's
    ``setting_changed`` signal, sent by ``override_settings``, recomputes it).
    """
    global _cached
    if not options and _cached is not None:
        return _cached
    options = {stack_field(name): value for name, value in options.items()}
    unknown = set(options) - set(_FIELDS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], "not a redis-middleware setting")
    explicit = {**_explicit(), **options}
    # The environment fills what the code did not set; Django's settings what neither did.
    hidden = {Settings.env_name(name) for name in explicit}
    environ = {k: v for k, v in os.environ.items() if k not in hidden}
    base = Settings.from_env(environ, defaults={**_from_django(), **explicit})
    if not options:
        _cached = base
    return base


def forget_settings(**_: Any) -> None:
    """Drop the computed settings (and what was built from them) after a change."""
    global _cached
    _cached = None
    from . import sessions  # the engine keeps its core per settings

    sessions.forget_engine()


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in _WATCHED:
        forget_settings()


setting_changed.connect(_on_setting_changed, dispatch_uid="redis_middleware.django.conf")
