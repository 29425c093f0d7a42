"""The shop of the FastAPI and Flask examples on Django (``python -m examples.django_app``)."""
