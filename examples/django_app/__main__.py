"""``python -m examples.django_app``: create (or update) the demo's database and serve
the demo with Django's development server. With arguments, a management command on the
demo's settings and database, e.g. ``python -m examples.django_app createsuperuser``."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    import django
    from django.core.management import call_command, execute_from_command_line

    args = sys.argv[1:] if argv is None else argv
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)  # the demo's accounts too
    if not args:
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8002")
        print(f"redis-middleware Django demo: open http://{host}:{port}/", flush=True)
        # Django's development server (threaded); gunicorn or uvicorn serve it in
        # production. Its system checks run first (redis-middleware's among them).
        args = ["runserver", f"{host}:{port}", "--noreload"]
    execute_from_command_line(["python -m examples.django_app", *args])


if __name__ == "__main__":
    main()
