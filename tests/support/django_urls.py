"""Extra Django views for tests/test_django*.py (the example's URLs, plus these): the
response cache's cases, and Django's own caching on the cache backend (``cache_page``,
``{% cache %}``, ``get_or_set`` in sync and async views)."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template import Context, Template
from django.urls import path
from django.views.decorators.cache import cache_page

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


renders: list[str] = []  # what Django's caching computed (the test reads it)
FRAGMENT = Template("{% load cache %}<p>{% cache 60 greeting name %}hello {{ name }} "
                    "#{{ n }}{% endcache %}</p>{% cache None forever %}{{ n }}{% endcache %}")


@cache_page(60)
def cached_page(request: HttpRequest) -> HttpResponse:
    """``cache_page``: a response (with a cookie of its own) stored by Django's cache."""
    renders.append("page")
    response = HttpResponse(f"page #{len(renders)}")
    response.set_cookie("theme", "dark")  # stored with the response, as Django does
    return response


def fragment(request: HttpRequest) -> HttpResponse:
    """A template fragment cached with ``{% cache %}``."""
    renders.append("fragment")
    context = Context({"name": request.GET.get("name", "world"), "n": len(renders)})
    return HttpResponse(FRAGMENT.render(context))


def expensive() -> str:
    renders.append("query")
    return f"report #{len(renders)}"


def report(request: HttpRequest) -> HttpResponse:
    """``cache.get_or_set`` in a view: the report is computed once."""
    return HttpResponse(cache.get_or_set("report", expensive, 60))


async def async_report(request: HttpRequest) -> HttpResponse:
    """The same, in an async view (``aget_or_set`` on the asyncio client)."""
    async def compute() -> str:
        renders.append("async query")
        return f"async report #{len(renders)}"

    return HttpResponse(await cache.aget_or_set("async-report", compute, 60))


urlpatterns = [*example_urls, path("forget", forget), path("swr", stale_while_revalidate),
               path("stream", streamed), path("hello", greeting), path("same", anonymous_page),
               path("visits", visits), path("cached-page", cached_page),
               path("fragment", fragment), path("report", report),
               path("async-report", async_report)]
