"""A small shop on FastAPI with sessions, rate limits, a cached page and presence.

Run it with ``python -m examples.fastapi_app`` (``memory://`` unless REDIS_URL is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import FastAPI, Form, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from redis_middleware import Settings
from redis_middleware.asgi import Cache, Presence, RedisMiddleware, SessionStore
from redis_middleware.errors import (
    RedisCommandError,
    RedisUnavailableError,
    SessionUnavailableError,
)

from .._pages import OPTIONS, PRODUCTS, home, online, products, profile, unavailable

settings = Settings.from_env()

app = FastAPI(title="redis-middleware demo")
app.add_middleware(RedisMiddleware, settings=settings, **OPTIONS)
presence = Presence(settings)
sessions = SessionStore(settings)
cache = Cache(settings, routes=OPTIONS["routes"])
catalogue = dict(PRODUCTS)


@app.exception_handler(RedisUnavailableError)
@app.exception_handler(RedisCommandError)
@app.exception_handler(SessionUnavailableError)
async def redis_unavailable(request: Request, exc: Exception) -> HTMLResponse:
    """A view that reads presence or sessions while Redis is down: a 503 page, not a 500."""
    return HTMLResponse(unavailable(), status_code=503, headers={"Retry-After": "1"})


def current_user(request: Request) -> str | None:
    value = request.session.get(settings.user_field)
    return None if value is None else str(value)


@app.get("/", response_class=HTMLResponse)
async def index(request: Request) -> str:
    return home(current_user(request))


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/login")
async def login(request: Request, username: str = Form(...)) -> RedirectResponse:
    request.session.regenerate()  # a new session id at login (session fixation)
    request.session[settings.user_field] = username.strip()[:40] or "anonymous"
    return RedirectResponse("/profile", status_code=303)


@app.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    user = current_user(request)
    request.session.clear()
    if user:
        await presence.remove(user)
    return RedirectResponse("/", status_code=303)


@app.post("/logout-everywhere")
async def logout_everywhere(request: Request) -> RedirectResponse:
    user = current_user(request)
    if user:
        await sessions.revoke_all(user)
        await presence.remove(user)
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@app.get("/profile", response_class=HTMLResponse)
async def show_profile(request: Request) -> Any:
    user = current_user(request)
    if user is None:
        return RedirectResponse("/", status_code=303)
    request.session["visits"] = request.session.get("visits", 0) + 1
    live = [(s.ref, s.created, s.last_seen) for s in await sessions.list(user)]
    return profile(user, request.session["visits"], live)


@app.get("/products", response_class=HTMLResponse)
async def list_products() -> str:
    return products(catalogue, time.time())  # cached for 30 s by the middleware


@app.post("/products")
async def rename_product(
    product_id: str = Form(..., alias="id"), name: str = Form(...)
) -> RedirectResponse:
    if product_id in catalogue:
        catalogue[product_id] = name.strip()[:40] or catalogue[product_id]
    # This POST already invalidated GET /products (RFC 9111 4.4); purging the tag also
    # drops any other page that lists products.
    await cache.purge_tag("products")
    return RedirectResponse("/products", status_code=303)


@app.get("/online", response_class=HTMLResponse)
async def who_is_online(request: Request) -> str:
    return online(await presence.online_users(limit=100), await presence.online_count(),
                  current_user(request))


@app.get("/api/online")
async def api_online() -> dict[str, Any]:
    return {"count": await presence.online_count(),
            "users": await presence.online_users(limit=100)}


@app.get("/api/ping")
async def api_ping(request: Request) -> JSONResponse:
    return JSONResponse({"pong": True, "user": current_user(request)})


@app.websocket("/ws/presence")
async def presence_feed(websocket: WebSocket) -> None:
    """Pushes every online/offline event from Redis Pub/Sub to the browser.

    The handler also listens: a handler that only sends never hears the client leave
    (or the server shut down), and would keep the server from stopping.
    """
    await websocket.accept()

    async def forward() -> None:
        async for event in presence.events():
            await websocket.send_json({"user": event.user, "status": event.status,
                                       "reason": event.reason, "seq": event.seq})

    sender = asyncio.create_task(forward())
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the page sends nothing; anything it sends is ignored
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await sender
