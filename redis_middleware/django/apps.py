"""The app config of ``"redis_middleware.django"`` in ``INSTALLED_APPS`` (optional): it
registers the system checks, so ``manage.py check`` reports a configuration error."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["RedisMiddlewareConfig"]


class RedisMiddlewareConfig(AppConfig):
    name = "redis_middleware.django"
    label = "redis_middleware"
    verbose_name = "redis-middleware"

    def ready(self) -> None:
        from .checks import check_settings

        checks.register(check_settings, "redis_middleware")
