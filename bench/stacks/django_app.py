"""The Django side of the benchmark: one Django project, three session engines.

``BENCH_STACK`` picks the engine: ``django-db`` (Django's default, on SQLite),
``django-cache`` (Django's cache engine on django-redis, the usual "Redis sessions" for
Django), ``django-ours`` (``redis_middleware.django.sessions``). Views as in the other
sides' apps: ``/hello``, a login writing 3 fields after a key rotation, ``/me`` reading 2.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import django
from django.conf import settings

STACK = os.environ.get("BENCH_STACK", "django-ours")
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGINES = {"django-db": "django.contrib.sessions.backends.db",
           "django-cache": "django.contrib.sessions.backends.cache",
           "django-ours": "redis_middleware.django.sessions"}

settings.configure(
    SECRET_KEY="bench-secret-0123456789abcdefghijklmnopqrstuvwxyz-0123456789",
    ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, USE_TZ=True,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.sessions"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE=ENGINES[STACK],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(
        tempfile.mkdtemp(prefix="bench-django-"), "db.sqlite3")}},
    CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": URL}},
    REDIS_MIDDLEWARE={"redis_url": URL},
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


@csrf_exempt
def login(request: HttpRequest) -> JsonResponse:
    request.session.cycle_key()  # what django.contrib.auth.login() does
    request.session.update({"user_id": "u42", "name": "Ada", "role": "admin"})
    return JsonResponse({"ok": True})


def me(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": request.session.get("user_id"),
                         "name": request.session.get("name")})


urlpatterns = [path("hello", hello), path("login", login), path("me", me)]
app: Any = get_wsgi_application()
