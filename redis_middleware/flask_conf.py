"""Flask's configuration as our ``Settings``: the session cookie and secret Flask's
``app.config`` states, under what the application gave (``redis_middleware.flask`` and
the Flask-Caching backend read it here)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from flask import Flask

from .config.options import option_field, resolve_settings
from .config.settings import Settings

__all__ = ["base_settings", "flask_settings", "secret_text"]


def _seconds(value: Any) -> int:
    return int(value.total_seconds()) if isinstance(value, timedelta) else int(value)


def secret_text(key: str | bytes) -> str:
    """A Flask secret as our secret (a ``str``): UTF-8 text as it reads, and any other
    bytes (``os.urandom(32)``) one character per byte (Latin-1), which loses nothing and
    keeps the 32-character rule a rule about the key's length in bytes."""
    if not isinstance(key, bytes):
        return str(key)
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key.decode("latin-1")


def _from_config(config: Any) -> dict[str, Any]:
    """The settings Flask's configuration states: keys that differ from Flask's defaults
    (a default says nothing the user chose), plus ``SECRET_KEY`` and its fallbacks and
    ``PERMANENT_SESSION_LIFETIME`` (a permanent session lasts what Flask says it does)."""
    defaults = Flask.default_config
    out: dict[str, Any] = {}

    def chosen(key: str) -> bool:
        return key in config and config[key] != defaults.get(key)

    if config.get("SECRET_KEY"):
        secret = config["SECRET_KEY"]
        keys = [secret, *(config.get("SECRET_KEY_FALLBACKS") or ())]
        out["secret_key"] = tuple(secret_text(k) for k in keys)
    if chosen("SESSION_COOKIE_NAME"):
        out["session_cookie_name"] = config["SESSION_COOKIE_NAME"]
    if config.get("SESSION_COOKIE_DOMAIN"):
        out["session_cookie_domain"] = str(config["SESSION_COOKIE_DOMAIN"]).lstrip(".")
    path = config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT")
    if path and path != "/":
        out["session_cookie_path"] = path
    if chosen("SESSION_COOKIE_SECURE"):
        out["session_cookie_secure"] = bool(config["SESSION_COOKIE_SECURE"])
    if chosen("SESSION_COOKIE_HTTPONLY"):
        out["session_cookie_httponly"] = bool(config["SESSION_COOKIE_HTTPONLY"])
    if chosen("SESSION_COOKIE_SAMESITE"):
        out["session_cookie_samesite"] = str(config["SESSION_COOKIE_SAMESITE"]).lower()
    if chosen("SESSION_COOKIE_PARTITIONED"):
        out["session_cookie_partitioned"] = bool(config["SESSION_COOKIE_PARTITIONED"])
    if config.get("PERMANENT_SESSION_LIFETIME"):  # Flask's 31 days too: Flask's contract
        out["session_absolute_lifetime"] = _seconds(config["PERMANENT_SESSION_LIFETIME"])
    return out


def flask_settings(app: Flask, settings: Settings | None = None, **options: Any) -> Settings:
    """The session settings for ``app``: precedence, highest first:

    1. ``options`` (``init_app(app, cookie_name=...)``);
    2. with ``settings``: its fields that differ from ``Settings``' defaults, and its
       secret unless it was generated for ``memory://``; without: the environment's
       ``REDIS_MIDDLEWARE_*`` variables that are set;
    3. Flask's configuration (``SECRET_KEY``, ``SECRET_KEY_FALLBACKS``,
       ``SESSION_COOKIE_*``, ``APPLICATION_ROOT``, ``PERMANENT_SESSION_LIFETIME``);
    4. the defaults.
    """
    given = {option_field("session", name) for name in options}
    return resolve_settings(base_settings(app.config, settings, given), "session", options)


def base_settings(config: Any, settings: Settings | None, given: Iterable[str] = ()
                  ) -> Settings:
    """Levels 2 to 4 of :func:`flask_settings`. ``given``: the fields the options set,
    so that Flask's values for them are not even checked (a short ``SECRET_KEY`` that a
    ``secret_key`` option replaces is no error)."""
    from_flask = {k: v for k, v in _from_config(config).items() if k not in given}
    if settings is None:
        explicit = {f.name for f in dataclasses.fields(Settings)
                    if Settings.env_name(f.name) in os.environ}
        return Settings.from_env(defaults={k: v for k, v in from_flask.items()
                                           if k not in explicit})
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    kept = {k: v for k, v in from_flask.items() if getattr(settings, k) == defaults[k]
            or k in settings.derived or (k == "secret_key" and settings.secret_generated)}
    return settings.replace(**kept) if kept else settings
