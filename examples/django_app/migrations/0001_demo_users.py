"""The demo's two accounts (``examples.django_app.accounts``), with hashed passwords."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations

from ..accounts import DEMO_USERS


def create_users(apps: Any, schema_editor: Any) -> None:
    app, model = settings.AUTH_USER_MODEL.split(".")
    users = apps.get_model(app, model)
    for name, password in DEMO_USERS.items():
        users.objects.get_or_create(username=name,
                                    defaults={"password": make_password(password)})


class Migration(migrations.Migration):
    dependencies: ClassVar = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]
    operations: ClassVar = [migrations.RunPython(create_users, migrations.RunPython.noop)]
