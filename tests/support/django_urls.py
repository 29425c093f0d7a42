"""Extra Django views for tests/test_django.py (the example's URLs, plus these)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

from examples.django_app.urls import urlpatterns as example_urls

calls: list[dict[str, Any]] = []


def stale_while_revalidate(request: HttpRequest) -> HttpResponse:
    """A shared page that may be served stale while it is computed again."""
    calls.append({"user": hasattr(request, "user"), "session": hasattr(request, "session")})
    response = HttpResponse(f"render {len(calls)}")
    response["Cache-Control"] = "public, max-age=1, stale-while-revalidate=30"
    return response


def streamed(request: HttpRequest) -> StreamingHttpResponse:
    """A body in chunks, as a generator yields it."""
    return StreamingHttpResponse(f"chunk {i};".encode() for i in range(3))


def greeting(request: HttpRequest) -> HttpResponse:
    """A page that names the signed-in user: it depends on the session."""
    return HttpResponse(f"hello {request.user.get_username() or 'visitor'}")


def anonymous_page(request: HttpRequest) -> HttpResponse:
    """A page that reads nothing of the visitor (middleware still may)."""
    return HttpResponse("the same for everyone")


def visits(request: HttpRequest) -> HttpResponse:
    """Counts the visitor's visits in the session: a page that writes the session."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse("visits counted")


def forget(request: HttpRequest) -> HttpResponse:
    """Deletes the session (``?change=1``: then changes it), as a view may by mistake."""
    request.session.delete()
    if request.GET.get("change"):
        request.session["theme"] = "dark"
    return HttpResponse("forgotten")


urlpatterns = [*example_urls, path("forget", forget), path("swr", stale_while_revalidate),
               path("stream", streamed), path("hello", greeting), path("same", anonymous_page),
               path("visits", visits)]
