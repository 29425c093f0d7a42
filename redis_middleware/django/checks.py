"""Django system checks: ``manage.py check`` (and ``runserver``, ``migrate``) report a
redis-middleware configuration that cannot start, before the first request does.

Registered by the app config (``"redis_middleware.django"`` in ``INSTALLED_APPS``).
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..errors import ConfigError
from .conf import SETTING, django_secrets, django_settings

__all__ = ["check_settings"]


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The settings :func:`~redis_middleware.django.django_settings` builds: an error when
    they cannot be built, a warning when Django's ``SECRET_KEY`` is too short to sign
    our cookies and a random per-process secret stands in for it (``memory://``)."""
    try:
        settings = django_settings()
    except ConfigError as exc:
        return [checks.Error(str(exc), hint=f"docs/django.md: where the settings come from "
                      f"({SETTING}, the environment, Django's settings).",
                      id="redis_middleware.E001")]
    _, why = django_secrets()
    if settings.secret_generated and why is not None:
        return [checks.Warning(f"{why}: a random secret is used in its place, and sessions end "
                        f"when the process restarts.",
                        hint="Set a SECRET_KEY of 32+ random characters, or "
                        f"{SETTING}['secret_key'].", id="redis_middleware.W001")]
    return []
