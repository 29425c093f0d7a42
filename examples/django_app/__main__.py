"""``python -m examples.django_app``: create the demo's database and serve the demo."""

from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8002")
    print(f"redis-middleware Django demo: open http://{host}:{port}/", flush=True)
    # Django's development server (threaded); gunicorn or uvicorn serve it in production.
    call_command("runserver", f"{host}:{port}", use_reloader=False, skip_checks=True)


if __name__ == "__main__":
    main()
