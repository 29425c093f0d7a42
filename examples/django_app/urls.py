"""The demo's views: Django's auth logs users in with their password (``login()``
rotates the session key), ``messages`` flashes through the Redis session, presence and
the caches as in the other demos (the product query through ``DataCache.cached``, user
names through Django's cache API on our backend); the admin and its static files."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable
from html import escape
from typing import Any, NamedTuple

from django.conf import settings as project_settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.staticfiles.views import serve as serve_static
from django.core.cache import cache as django_cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from redis_middleware import DataCache
from redis_middleware.config.settings import Settings
from redis_middleware.django import django_settings
from redis_middleware.errors import RedisMiddlewareError
from redis_middleware.wsgi import Cache, Presence, SessionStore

from .._pages import Database, home, online, page, products, profile, unavailable
from .accounts import DEMO_USERS

# The products table lives in the project's own SQLite file, which every worker opens
# (an in-memory database is no such file: then $DEMO_DB's).
_DB_NAME = str(project_settings.DATABASES["default"]["NAME"])
database = Database(None if _DB_NAME == ":memory:" or _DB_NAME.startswith("file:") else _DB_NAME)


class Tools(NamedTuple):
    presence: Presence
    sessions: SessionStore
    cache: Cache
    data: DataCache
    load_products: Callable[[], dict[str, str]]


@functools.lru_cache(maxsize=4)
def _tools(settings: Settings) -> Tools:
    data = DataCache(settings)

    @data.cached(ttl=300, key="products:list", tags=["products"])
    def load_products() -> dict[str, str]:
        """The product list, from the database once, then from Redis (every worker)
        until a rename invalidates the ``products`` tag."""
        return database.select_products()

    return Tools(Presence(settings), SessionStore(settings), Cache(settings), data,
                 load_products)


def redis() -> Tools:
    """Presence, the session store and the cache for the project's settings, built when
    a view first needs them: not at import, so that ``manage.py check`` reports a setting
    that cannot work (``redis_middleware.E001``) instead of failing on this module."""
    return _tools(django_settings())


def redis_or_503(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A view that reads presence or sessions while Redis is down: a 503 page, not a 500."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except RedisMiddlewareError:
            return HttpResponse(unavailable(), status=503, headers={"Retry-After": "1"})

    return wrapped


def username(request: HttpRequest) -> str | None:
    user = request.user
    return str(user.get_username()) if user.is_authenticated else None


def with_csrf(request: HttpRequest, html: str) -> str:
    """Django's CSRF token in each form of a page rendered for this user."""
    token = f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
    return re.sub(r'(<form method="post" action="/log[^"]*">)', lambda m: m[1] + token, html)


def with_messages(request: HttpRequest, html: str) -> str:
    flashed = "".join(f'<p class="box">{m}</p>' for m in messages.get_messages(request))
    return html.replace("</h1>", "</h1>" + flashed, 1)


def login_page(request: HttpRequest, form: AuthenticationForm) -> str:
    """The home page of a visitor: Django's login form (username and password)."""
    accounts = ", ".join(f"<code>{escape(name)}</code> / <code>{escape(password)}</code>"
                         for name, password in DEMO_USERS.items())
    body = f"""<div class="box"><form method="post" action="/login">
<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">
{form.as_div()}<button>Log in</button></form>
<p class="muted">Demo accounts: {accounts}. Login is limited to 5 attempts a minute per
address (fail-closed: 503 if Redis is down). Try a wrong password six times.</p></div>
<p>Every request passes through the session engine and the middleware: a session in a
Redis hash, rate limits (see the <code>X-RateLimit-*</code> headers), a cached product
list (<code>X-Cache: HIT</code>), and presence. The admin is at <a href="/admin/">/admin/</a>
(create its account with <code>python -m examples.django_app createsuperuser</code>).</p>"""
    return page("redis-middleware demo", body)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    name = username(request)
    if name is None:
        html = login_page(request, AuthenticationForm(request))
    else:
        html = with_csrf(request, home(name))
    return HttpResponse(with_messages(request, html))


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_POST
def log_in(request: HttpRequest) -> HttpResponse:
    """Django's authentication: the user's password, checked by ``authenticate()``
    (``AuthenticationForm``); a wrong one shows the form again with its error, as
    Django's ``LoginView`` does, and nobody is signed in."""
    form = AuthenticationForm(request, data=request.POST)
    if not form.is_valid():
        return HttpResponse(login_page(request, form))
    user = form.get_user()
    login(request, user)  # a new session key (cycle_key), the user in the session
    messages.success(request, f"Signed in as {user.get_username()}.")
    return redirect("/profile", permanent=False)


@require_POST
@redis_or_503
def log_out(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        redis().presence.remove(str(request.user.pk))
    logout(request)  # flushes the session: its Redis hash is deleted
    return redirect("/")


@require_POST
@redis_or_503
def log_out_everywhere(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        user_id = str(request.user.pk)
        redis().sessions.revoke_all(user_id)  # every session of this user, on every device
        redis().presence.remove(user_id)
    logout(request)
    return redirect("/")


@require_GET
@redis_or_503
def show_profile(request: HttpRequest) -> HttpResponse:
    name = username(request)
    if name is None:
        return redirect("/")
    request.session["visits"] = request.session.get("visits", 0) + 1
    live = [(s.ref, s.created, s.last_seen) for s in redis().sessions.list(str(request.user.pk))]
    return HttpResponse(with_messages(request, profile(name, request.session["visits"], live)))


# The product page is cached and the same for everyone, so its rename forms carry no
# per-user CSRF token; a real shop renders such forms outside the cached page.
@csrf_exempt
def product_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        database.rename(request.POST.get("id", ""), str(request.POST.get("name", "")))
        redis().data.invalidate(tags=["products"])  # the cached query, in every worker
        redis().cache.purge_tag("products")  # the cached pages
        return redirect("/products")
    return HttpResponse(products(redis().load_products(), time.time()))  # cached for 30 s


@require_GET
def api_products(request: HttpRequest) -> JsonResponse:
    """The product list as JSON (not a cached page: each request reads the data cache),
    and how many queries the database answered so far (every worker's)."""
    return JsonResponse({"products": redis().load_products(),
                         "database_queries": database.queries})


def _names(ids: Iterable[str]) -> list[str]:
    """Presence knows users by id; the pages show their names, kept a minute in Django's
    cache (``CACHES`` is redis-middleware's backend: the same Redis)."""
    ids = list(ids)
    by_id = {key.removeprefix("username:"): name for key, name in django_cache.get_many(
        [f"username:{i}" for i in ids]).items()}
    missing = [i for i in ids if i not in by_id and i.isdigit()]
    if missing:
        found = {str(u.pk): u.get_username()
                 for u in get_user_model().objects.filter(pk__in=missing)}
        django_cache.set_many({f"username:{i}": name for i, name in found.items()}, 60)
        by_id.update(found)
    return [by_id.get(i, i) for i in ids]


@require_GET
@redis_or_503
def who_is_online(request: HttpRequest) -> HttpResponse:
    presence = redis().presence
    users = _names(presence.online_users(limit=100))
    return HttpResponse(online(users, presence.online_count(), username(request), live=False))


@require_GET
@redis_or_503
def api_online(request: HttpRequest) -> JsonResponse:
    presence = redis().presence
    return JsonResponse({"count": presence.online_count(),
                         "users": _names(presence.online_users(limit=100))})


@require_GET
def api_ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pong": True, "user": username(request)})


urlpatterns = [
    path("", index),
    path("health", health),
    path("login", log_in),
    path("logout", log_out),
    path("logout-everywhere", log_out_everywhere),
    path("profile", show_profile),
    path("products", product_list),
    path("online", who_is_online),
    path("api/online", api_online),
    path("api/products", api_products),
    path("api/ping", api_ping),
    path("admin/", admin.site.urls),
    # The admin's CSS and scripts, with DEBUG off too (staticfiles' view, insecure=True):
    # fine for a demo; a deployment serves collectstatic's STATIC_ROOT from its web server.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
