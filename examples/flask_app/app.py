"""The FastAPI example's shop on Flask, with ``flask.session`` backed by Redis.

Run it with ``python -m examples.flask_app`` (``memory://`` unless REDIS_URL is set).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, redirect, request, session

from redis_middleware import DataCache, Settings
from redis_middleware.errors import (
    RedisCommandError,
    RedisUnavailableError,
    SessionUnavailableError,
)
from redis_middleware.flask import init_stack
from redis_middleware.wsgi import Cache, Presence, SessionStore

from .._pages import OPTIONS, Database, home, online, products, profile, unavailable

settings = Settings.from_env()

app = Flask(__name__)
init_stack(app, settings, **OPTIONS)
presence = Presence(settings)
sessions = SessionStore(settings)
cache = Cache(settings, routes=OPTIONS["routes"])
data = DataCache(settings)
database = Database()


@data.cached(ttl=300, key="products:list", tags=["products"])
def load_products() -> dict[str, str]:
    """The product list, from the database once, then from Redis (every worker) until a
    rename invalidates the ``products`` tag."""
    return database.select_products()


@app.errorhandler(RedisUnavailableError)
@app.errorhandler(RedisCommandError)
@app.errorhandler(SessionUnavailableError)
def redis_unavailable(exc: Exception) -> tuple[str, int, dict[str, str]]:
    """A view that reads presence or sessions while Redis is down: a 503 page, not a 500."""
    return unavailable(), 503, {"Retry-After": "1"}


def current_user() -> str | None:
    value = session.get(settings.user_field)
    return None if value is None else str(value)


@app.get("/")
def index() -> str:
    return home(current_user())


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/login")
def login() -> Any:
    session.regenerate()  # type: ignore[attr-defined]  # new id at login
    session[settings.user_field] = request.form.get("username", "").strip()[:40] or "anonymous"
    return redirect("/profile", code=303)


@app.post("/logout")
def logout() -> Any:
    user = current_user()
    session.clear()
    if user:
        presence.remove(user)
    return redirect("/", code=303)


@app.post("/logout-everywhere")
def logout_everywhere() -> Any:
    user = current_user()
    if user:
        sessions.revoke_all(user)
        presence.remove(user)
    session.clear()
    return redirect("/", code=303)


@app.get("/profile")
def show_profile() -> Any:
    user = current_user()
    if user is None:
        return redirect("/", code=303)
    session["visits"] = session.get("visits", 0) + 1
    live = [(s.ref, s.created, s.last_seen) for s in sessions.list(user)]
    return profile(user, session["visits"], live)


@app.get("/products")
def list_products() -> str:
    return products(load_products(), time.time())  # cached for 30 s by the middleware


@app.post("/products")
def rename_product() -> Any:
    database.rename(request.form.get("id", ""), request.form.get("name", ""))
    data.invalidate(tags=["products"])  # the cached query, in every worker
    cache.purge_tag("products")  # the cached pages
    return redirect("/products", code=303)


@app.get("/api/products")
def api_products() -> dict[str, Any]:
    """The product list as JSON (not a cached page: each request reads the data cache),
    and how many queries the database answered so far (every worker's)."""
    return {"products": load_products(), "database_queries": database.queries}


@app.get("/online")
def who_is_online() -> str:
    return online(presence.online_users(limit=100), presence.online_count(), current_user(),
                  live=False)


@app.get("/api/online")
def api_online() -> dict[str, Any]:
    return {"count": presence.online_count(), "users": presence.online_users(limit=100)}


@app.get("/api/ping")
def api_ping() -> dict[str, Any]:
    return {"pong": True, "user": current_user()}
