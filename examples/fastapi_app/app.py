"""A small shop on FastAPI with sessions, rate limits, a cached page, presence and a
chat room (messages fanned out to every worker, who is here).

Run it with ``python -m examples.fastapi_app`` (``memory://`` unless REDIS_URL is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Form, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from redis_middleware import DataCache, Settings
from redis_middleware.asgi import (
    Broadcast,
    Cache,
    Presence,
    RedisMiddleware,
    SessionStore,
    join_room,
)
from redis_middleware.errors import (
    RedisCommandError,
    RedisUnavailableError,
    SessionUnavailableError,
)

from .._pages import (
    OPTIONS,
    Database,
    chat,
    home,
    online,
    products,
    profile,
    unavailable,
)

settings = Settings.from_env()


class PresenceFeed:
    """Online/offline events for the /online page's sockets: one Redis subscription per
    process, whatever the number of open pages (started with the first page)."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self.queues.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        try:
            yield queue
        finally:
            self.queues.discard(queue)

    async def _run(self) -> None:
        async for event in presence.events():
            for queue in tuple(self.queues):
                if not queue.full():  # a page that stopped reading misses events
                    queue.put_nowait({"user": event.user, "status": event.status,
                                      "reason": event.reason, "seq": event.seq})

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


feed = PresenceFeed()


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await feed.stop()
    await broadcast.aclose()


app = FastAPI(title="redis-middleware demo", lifespan=lifespan)
app.add_middleware(RedisMiddleware, settings=settings, **OPTIONS)
presence = Presence(settings)
# Chat rooms are durable: a browser that reconnects gets what it missed.
broadcast = Broadcast(settings, durable_rooms=["chat:*"])
ROOM_NAME = re.compile(r"^[a-z0-9-]{1,32}$")
sessions = SessionStore(settings)
cache = Cache(settings, routes=OPTIONS["routes"])
data = DataCache(settings)
database = Database()


@data.cached(ttl=300, key="products:list", tags=["products"])
async def load_products() -> dict[str, str]:
    """The product list, from the database once, then from Redis (every worker) until a
    rename invalidates the ``products`` tag."""
    return await database.aselect_products()


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
    return home(current_user(request), chat_room=True)


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
    return products(await load_products(), time.time())  # cached for 30 s by the middleware


@app.post("/products")
async def rename_product(
    product_id: str = Form(..., alias="id"), name: str = Form(...)
) -> RedirectResponse:
    await database.arename(product_id, name)
    await data.ainvalidate(tags=["products"])  # the cached query, in every worker
    # This POST already invalidated GET /products (RFC 9111 4.4); purging the tag also
    # drops any other page that lists products.
    await cache.purge_tag("products")
    return RedirectResponse("/products", status_code=303)


@app.get("/api/products")
async def api_products() -> dict[str, Any]:
    """The product list as JSON (not a cached page: each request reads the data cache),
    and how many queries the database answered so far (every worker's)."""
    return {"products": await load_products(), "database_queries": await database.aqueries()}


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
    """Pushes every online/offline event to the browser (one Redis subscription per
    process for all pages). It also listens: a handler that only sends never hears the
    client leave (or the server shut down), and would keep the server from stopping."""
    await websocket.accept()

    async def forward(queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            await websocket.send_json(await queue.get())

    async with feed.listen() as queue:
        sender = asyncio.create_task(forward(queue))
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # the page sends nothing; anything it sends is ignored
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await sender


@app.get("/chat", response_class=HTMLResponse)
@app.get("/chat/{room}", response_class=HTMLResponse)
async def chat_room(request: Request, room: str = "lobby") -> Any:
    user = current_user(request)
    if user is None or not ROOM_NAME.match(room):
        return RedirectResponse("/", status_code=303)
    recent = await broadcast.history(f"chat:{room}", 30)
    members = await presence.online_users(room=f"chat:{room}", limit=100)
    return chat(room, user, [(m.data.get("user", ""), m.data.get("text", ""), m.ts)
                             for m in recent if "text" in m.data], members)


@app.get("/api/chat/{room}/members")
async def chat_members(room: str) -> dict[str, Any]:
    if not ROOM_NAME.match(room):
        return {"members": []}
    return {"members": await presence.online_users(room=f"chat:{room}", limit=100)}


@app.websocket("/ws/chat/{room}")
async def chat_socket(websocket: WebSocket, room: str) -> None:
    """A chat member's socket: authorised by the session, present in the room while
    open; what it sends is published to the room on every worker."""
    user = websocket.session.get(settings.user_field)
    if user is None or not ROOM_NAME.match(room):
        # Not signed in (or no such room). Accepted first: a close before the handshake
        # ends reaches the browser as an HTTP 403, without the code.
        await websocket.accept()
        await websocket.close(code=4401)
        return
    since = websocket.query_params.get("since") or None
    async with join_room(websocket, broadcast, f"chat:{room}", user=str(user),
                         presence=presence, since=since) as joined:
        async for text in joined:
            if isinstance(text, str) and text.strip():
                await joined.publish({"user": str(user), "text": text.strip()[:500]})
