"""``Settings`` from a Django project's configuration (``REDIS_MIDDLEWARE`` and Django's own)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from django.conf import settings as django_conf
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ..config.settings import Settings
from ..errors import ConfigError
from ..sansio.stack import stack_field

__all__ = ["MIN_SECRET", "SETTING", "django_secrets", "django_settings", "forget_settings",
           "secret_text"]

SETTING = "REDIS_MIDDLEWARE"  # the dict in settings.py: Settings field names -> values
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Django settings whose change (``override_settings`` in tests) changes ours.
_WATCHED = frozenset({SETTING, "SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_COOKIE_AGE",
                      "SESSION_COOKIE_NAME", "SESSION_SERIALIZER"})
_DEFAULT_LIFETIME: int = _FIELDS["session_absolute_lifetime"].default  # type: ignore[assignment]
MIN_SECRET = 32  # characters; the length REDIS_MIDDLEWARE_SECRET_KEY requires
_cached: Settings | None = None


def secret_text(key: Any) -> str:
    """A Django secret as text: ``str`` as it is, ``bytes`` decoded as UTF-8, or, when
    they are not UTF-8 (``os.urandom(32)``), one character per byte (Latin-1), so a
    random key keeps all its bytes and its length counts them."""
    if isinstance(key, bytes):
        try:
            return key.decode()
        except UnicodeDecodeError:
            return key.decode("latin-1")
    return str(key)


def django_secrets() -> tuple[tuple[str, ...], str | None]:
    """The secrets Django's settings give ours, and, when ``SECRET_KEY`` cannot be one,
    why (a sentence naming Django's setting): ``SECRET_KEY`` first, then each of
    ``SECRET_KEY_FALLBACKS`` of 32+ characters (a shorter fallback never signed a
    cookie of ours, so it is skipped). A project without ``SECRET_KEY`` (Django raises
    ``ImproperlyConfigured`` when it is read) gives none: a secret of our own is enough."""
    try:
        given = django_conf.SECRET_KEY
    except ImproperlyConfigured:
        given = None
    key = secret_text(given) if given else ""
    if not key:
        return (), (f"Django's SECRET_KEY is not set; redis-middleware signs its cookies "
                    f"with it when it has {MIN_SECRET} or more characters")
    if len(key) < MIN_SECRET:
        return (), (f"Django's SECRET_KEY was found but has {len(key)} characters; "
                    f"redis-middleware signs its cookies with it only when it has "
                    f"{MIN_SECRET} or more")
    fallbacks = [secret_text(k) for k in getattr(django_conf, "SECRET_KEY_FALLBACKS", ()) if k]
    return (key, *(k for k in fallbacks if len(k) >= MIN_SECRET)), None


def _from_django() -> dict[str, Any]:
    """What Django's own settings say: the secrets (:func:`django_secrets`) and the
    session lifetime (``SESSION_COOKIE_AGE``; Django has no absolute lifetime, so ours
    is at least as long)."""
    out: dict[str, Any] = {}
    keys, _ = django_secrets()
    if keys:
        out["secret_key"] = keys
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
    4. Django's settings: ``SECRET_KEY`` when it has 32+ characters (+ those of
       ``SECRET_KEY_FALLBACKS`` that do), ``SESSION_COOKIE_AGE``, ``SESSION_COOKIE_NAME``;
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
    try:
        base = Settings.from_env(environ, defaults={**_from_django(), **explicit})
    except ConfigError as exc:
        if "secret_key" in explicit or Settings.env_name("secret_key") in environ:
            raise  # the secret given to us is at fault, not Django's
        raise _secret_error(exc) from None
    if not options:
        _cached = base
    return base


def _secret_error(exc: ConfigError) -> ConfigError:
    """``exc``, or, when no secret was given to us and Django's is too short, an error
    that says so (the bare "REDIS_MIDDLEWARE_SECRET_KEY: required" hid why)."""
    _, why = django_secrets()
    if exc.name != Settings.env_name("secret_key") or why is None:
        return exc
    return ConfigError("SECRET_KEY", f"{why}, and needs a secret when REDIS_URL is not "
                       f"memory://. Set a SECRET_KEY of {MIN_SECRET}+ random characters, or "
                       f"a separate secret: {SETTING}['secret_key'] or the {exc.name} "
                       f"environment variable")


def forget_settings(**_: Any) -> None:
    """Drop the computed settings after a change (what was built from them, the session
    engine's core, is rebuilt when it sees new settings)."""
    global _cached
    _cached = None


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in _WATCHED:
        forget_settings()


setting_changed.connect(_on_setting_changed, dispatch_uid="redis_middleware.django.conf")
