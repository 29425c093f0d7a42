"""Django on redis-middleware: a session engine and middleware, configured by Django.

In ``settings.py``::

    SESSION_ENGINE = "redis_middleware.django.sessions"
    INSTALLED_APPS = [..., "redis_middleware.django"]  # optional: its system checks
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "redis_middleware.django.middleware.SessionMiddleware",   # Django's, + 503s
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "redis_middleware.django.middleware.RateLimitMiddleware",  # after auth: request.user
        "redis_middleware.django.middleware.PresenceMiddleware",
        "redis_middleware.django.middleware.CacheMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    REDIS_MIDDLEWARE = {"redis_url": "redis://localhost:6379/0",
                        "ratelimit_limit": "100/minute"}

``request.session``, ``contrib.auth``, ``messages`` and the admin work unchanged on the
same Redis hash per session as the ASGI/WSGI middleware. ``docs/django.md`` has the
whole story; :func:`django_settings` says which setting comes from where.
"""

from __future__ import annotations

from .conf import django_settings

__all__ = ["django_settings"]
