"""What the Django test modules share: Django configured with the example project's
settings and its database migrated, this test's Redis as ``REDIS_MIDDLEWARE``, a
session store, and the keys in Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_middleware.config.settings import Settings

from .clients import SECRET, raw_client

_DB = Path(os.environ.get("TMPDIR", "/tmp")) / f"redis-middleware-tests-{os.getpid()}.sqlite3"


@pytest.fixture(scope="module", autouse=True)
def django_project() -> Iterator[None]:
    """Django configured with the example project's settings, its database migrated
    (the demo's accounts included)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    os.environ["DJANGO_DB"] = str(_DB)
    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    yield
    connections.close_all()  # the next module migrates a new file, on a new connection
    _DB.unlink(missing_ok=True)


@pytest.fixture
def configured(settings: Settings) -> Iterator[Settings]:
    """This test's Redis and key prefix as the project's ``REDIS_MIDDLEWARE``."""
    from django.test import override_settings

    from examples.django_app.settings import REDIS_MIDDLEWARE

    with override_settings(REDIS_MIDDLEWARE={**REDIS_MIDDLEWARE,
                                             "redis_url": settings.redis_url,
                                             "key_prefix": settings.key_prefix,
                                             "secret_key": (SECRET,)}):
        yield settings


def store(key: str | None = None) -> Any:
    from redis_middleware.django.sessions import SessionStore

    return SessionStore(key)


def redis_keys(settings: Settings, component: str = "session") -> list[bytes]:
    client = raw_client(settings)
    try:
        return sorted(client.scan_iter(match=f"{settings.key_prefix}:{component}:*"))
    finally:
        client.close()
