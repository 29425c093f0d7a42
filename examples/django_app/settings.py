"""Django settings of the demo: Django's own session, auth, messages and admin, with
``request.session`` on Redis and the rate limits, cache and presence of the other demos.
Django's default middleware are all here, its ``SessionMiddleware`` replaced by ours."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .._pages import OPTIONS

# A demo's secret (32+ characters, so redis-middleware takes it too); set
# DJANGO_SECRET_KEY in any real deployment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY",
                            "demo-only-secret-change-me-0123456789abcdefghijklmnopqrstuvwxyz")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "examples.django_app.urls"
WSGI_APPLICATION = "examples.django_app.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The admin's CSS and scripts, found by django.contrib.staticfiles and served by its
# view (urls.py), also with DEBUG off: a demo convenience. A deployment runs
# collectstatic and lets its web server (or a CDN) serve STATIC_ROOT.
STATIC_URL = "static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # manage.py check reports a redis-middleware setting that cannot work
    "redis_middleware.django",
    # the demo's accounts (a data migration), so logins need a password
    "examples.django_app",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Django's SessionMiddleware, answering 503 instead of 500 when Redis is down.
    "redis_middleware.django.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: per-user limits and presence see request.user.
    "redis_middleware.django.middleware.RateLimitMiddleware",
    "redis_middleware.django.middleware.PresenceMiddleware",
    "redis_middleware.django.middleware.CacheMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
SESSION_ENGINE = "redis_middleware.django.sessions"
# Django's cache API (cache.get_or_set, cache_page, {% cache %}) on the same Redis: an
# empty LOCATION is REDIS_MIDDLEWARE's redis_url, else REDIS_URL.
CACHES = {"default": {"BACKEND": "redis_middleware.django.cache.RedisCache", "LOCATION": ""}}
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
# The options of the other demos: a site-wide limit per user (or address), a strict login
# limit per address, an API limit and the cached product list; the admin's static files
# are not counted.
REDIS_MIDDLEWARE = {**OPTIONS, "exempt": [*OPTIONS["exempt"], "/static/*"]}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_DB", str(Path(tempfile.gettempdir()) / "redis-middleware-demo.sqlite3")),
    }
}
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
