"""The example apps, driven the way a person clicks through them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from redis_middleware._redis.connections import connections_for

from .support.servers import Served

_peers = itertools.count(1)


def peer() -> tuple[str, int]:
    return (f"10.77.0.{next(_peers) % 250 + 1}", 1234)


@pytest.fixture(autouse=True)
def _demo_products() -> Iterator[None]:
    """Every test starts from the demos' three products: the in-process demos of this
    test process share one product table (``$DEMO_DB``), and a test renames them."""
    import os
    import sqlite3
    from contextlib import closing

    from examples._pages import PRODUCTS

    yield
    if os.path.exists(os.environ["DEMO_DB"]):
        with closing(sqlite3.connect(os.environ["DEMO_DB"], isolation_level=None)) as db:
            db.executemany("UPDATE demo_products SET name = ? WHERE id = ?",
                           [(name, pid) for pid, name in PRODUCTS.items()])


@pytest.fixture
def fastapi_client() -> Any:
    from starlette.testclient import TestClient

    from examples.fastapi_app.app import app, settings

    with TestClient(app, client=peer()) as client:
        yield client
        client.portal.call(connections_for(settings).aclose)


def test_fastapi_story(fastapi_client: Any) -> None:
    from examples.fastapi_app.app import data

    client = fastapi_client
    client.portal.call(data.aclear)  # the examples share this process's memory:// server
    assert "Log in" in client.get("/").text
    response = client.post("/login", data={"username": "alice"}, follow_redirects=False)
    assert response.status_code == 303 and "session=" in response.headers["set-cookie"]
    page = client.get("/profile")
    assert "alice" in page.text and "Visits to this page in this session: <b>1</b>" in page.text
    assert "Visits to this page in this session: <b>2</b>" in client.get("/profile").text
    assert "alice" in client.get("/online").text
    assert "alice" in client.get("/api/online").json()["users"]
    first = client.get("/products")
    assert first.headers["x-cache"] == "MISS"
    # The cached page is the same for everyone: it claims nobody signed out, and its
    # time is readable.
    assert "not signed in" not in first.text and " UTC" in first.text
    assert " UTC" in page.text  # the profile's session times
    second = client.get("/products")
    assert second.headers["x-cache"] == "HIT" and second.text == first.text
    renamed = client.post("/products", data={"id": "1", "name": "Samovar"})  # then redirected
    assert renamed.headers["x-cache"] == "MISS" and "Samovar" in renamed.text
    assert client.get("/products").headers["x-cache"] == "HIT"
    ping = client.get("/api/ping")
    assert ping.json() == {"pong": True, "user": "alice"}
    assert ping.headers["x-ratelimit-limit"] == "30"
    client.post("/logout-everywhere")
    assert "Log in" in client.get("/").text


def test_fastapi_product_query_is_cached_until_a_rename(fastapi_client: Any) -> None:
    """The simulated database query runs once for two requests that miss the page cache
    (the JSON API, then the page), and again after a rename invalidates its tag."""
    from examples.fastapi_app.app import data, database

    client = fastapi_client
    client.portal.call(data.aclear)
    before = database.queries
    listed = client.get("/api/products").json()
    assert listed["database_queries"] == before + 1
    assert client.get("/api/products").json() == listed  # a data cache hit
    assert client.get("/products", headers={"cache-control": "no-cache"}).status_code == 200
    assert database.queries == before + 1
    client.post("/products", data={"id": "2", "name": "Samovar"})
    renamed = client.get("/api/products").json()
    assert renamed["products"]["2"] == "Samovar"
    assert renamed["database_queries"] == before + 2
    client.post("/products", data={"id": "2", "name": "Kettle"})


def test_fastapi_login_is_strictly_limited(fastapi_client: Any) -> None:
    statuses = [fastapi_client.post("/login", data={"username": f"u{i}"},
                                    follow_redirects=False).status_code for i in range(6)]
    assert statuses == [303] * 5 + [429]


def test_fastapi_presence_feed_pushes_events(fastapi_client: Any) -> None:
    from examples.fastapi_app.app import settings
    from redis_middleware.wsgi import Presence

    with fastapi_client.websocket_connect("/ws/presence") as socket:
        import time

        time.sleep(0.3)
        Presence(settings).heartbeat("feed-watcher")
        event = socket.receive_json()
        assert (event["user"], event["status"]) == ("feed-watcher", "online")
    Presence(settings).remove("feed-watcher")


def test_fastapi_chat_room(fastapi_client: Any) -> None:
    """Two members: each sees the other arrive, a message reaches both, the page shows
    the room's history and who is here; a socket without a session is refused."""
    from starlette.websockets import WebSocketDisconnect

    def envelopes(socket: Any, check: Any) -> dict[str, Any]:
        for _ in range(20):
            envelope = json.loads(socket.receive_text())
            if check(envelope["data"]):
                return envelope
        raise AssertionError("never arrived")

    client = fastapi_client  # one app, one event loop: two members by their cookies
    client.post("/login", data={"username": "bob"})
    bob = client.cookies["session"]
    client.cookies.clear()
    client.post("/login", data={"username": "ann"})
    ann_cookie = client.cookies["session"]
    ann = client
    with ann.websocket_connect("/ws/chat/tea") as ann_socket:
        client.cookies.clear()
        with client.websocket_connect("/ws/chat/tea",
                                      headers={"cookie": f"session={bob}"}) as bob_socket:
            client.cookies["session"] = ann_cookie
            assert envelopes(ann_socket, lambda d: d.get("user") == "bob")["data"][
                "presence"] == "online"
            bob_socket.send_text("  Is the kettle on?  ")
            for socket in (ann_socket, bob_socket):
                said = envelopes(socket, lambda d: "text" in d)
                assert said["data"] == {"user": "bob", "text": "Is the kettle on?"}
                assert said["id"]  # a durable room: the page can resume from it
            page = ann.get("/chat/tea").text
            assert "Is the kettle on?" in page and "<li>bob</li>" in page
            assert ann.get("/api/chat/tea/members").json()["members"] == ["ann", "bob"]
    client.cookies.clear()
    with pytest.raises(WebSocketDisconnect) as refused, \
            client.websocket_connect("/ws/chat/tea") as anonymous:
        anonymous.receive_text()
    assert refused.value.code == 4401
    client.cookies["session"] = ann_cookie
    assert ann.get("/chat/Not A Room", follow_redirects=False).status_code == 303


def test_flask_story() -> None:
    from examples.flask_app.app import app, cache, data, database

    cache.purge_all()  # the examples share this process's memory:// server
    data.clear()
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = peer()[0]
    assert "Log in" in client.get("/").text
    response = client.post("/login", data={"username": "bob"})
    assert response.status_code == 303
    page = client.get("/profile")
    assert "bob" in page.text and "<b>1</b>" in page.text
    assert "bob" in client.get("/online").text
    # buffered: read each body fully, as a server does, so the entry is committed
    assert client.get("/products", buffered=True).headers["X-Cache"] == "MISS"
    assert client.get("/products", buffered=True).headers["X-Cache"] == "HIT"
    queries = database.queries  # the page's query ran once: the API reads the cache
    assert client.get("/api/products").json["database_queries"] == queries
    client.post("/products", data={"id": "2", "name": "Urn"})
    assert "Urn" in client.get("/products").text
    assert client.get("/api/products").json == {
        "products": {"1": "Teapot", "2": "Urn", "3": "Mug"}, "database_queries": queries + 1}
    client.post("/products", data={"id": "2", "name": "Kettle"})
    client.post("/logout")
    assert "Log in" in client.get("/").text
    statuses = [client.post("/login", data={"username": "x"}).status_code for _ in range(6)]
    assert statuses[-1] == 429
    page = client.post("/login", data={"username": "x"}, headers={"Accept": "text/html"})
    assert page.status_code == 429 and page.mimetype == "text/html"  # a page, for a form


def test_the_fastapi_demo_under_uvicorn_with_a_real_websocket(tmp_path: Any) -> None:
    """The README's first command, as a user runs it: uvicorn serves the demo on
    memory://, a real WebSocket gets the online event of a login, and the first SIGTERM
    stops the server even with the socket open (the handler listens for the close)."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx
    import websockets

    from .support.servers import free_port

    port = free_port()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PORT": str(port), "REDIS_URL": "memory://", "PYTHONPATH": str(root)}
    with (tmp_path / "demo.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "examples.fastapi_app"], cwd=root,
                                env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            try:
                httpx.get(base + "/health")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.1)

        async def watch() -> dict[str, Any]:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/presence") as socket:
                await asyncio.sleep(0.3)
                async with httpx.AsyncClient(base_url=base, follow_redirects=True) as http:
                    await http.post("/login", data={"username": "alice"})  # then /profile
                event: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
                proc.send_signal(signal.SIGTERM)  # with the socket still open
                return event

        event = asyncio.run(watch())
        assert (event["user"], event["status"]) == ("alice", "online")
        # A graceful stop: uvicorn finishes, then re-raises the signal it caught.
        assert proc.wait(10) in (0, -signal.SIGTERM)
        assert "Finished server process" in (tmp_path / "demo.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_fastapi_demo_answers_503_pages_when_redis_is_down(tmp_path: Any) -> None:
    """Redis unreachable: the presence pages answer a 503 page with Retry-After, not a
    500 with a traceback."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from .support.clients import SECRET
    from .support.servers import free_port

    port, dead = free_port(), free_port()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{dead}/0",
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET, "PYTHONPATH": str(root)}
    with (tmp_path / "demo.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "examples.fastapi_app"], cwd=root,
                                env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.1)
        for path in ("/online", "/api/online"):
            response = httpx.get(f"http://127.0.0.1:{port}{path}")
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "1"
            assert "Traceback" not in response.text
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def _csrf(html: str) -> str:
    import re

    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found[1]


def _drive_the_django_shop(base: str) -> None:
    """The cached product page, a refused login (wrong password), a login through the
    real form (CSRF included), the profile and the flashed message, who is online, the
    admin's CSS, and the login limit."""
    import httpx

    from examples.django_app.accounts import DEMO_USERS

    with httpx.Client(base_url=base, follow_redirects=True) as http:
        assert http.get("/products").headers["x-cache"] == "MISS"
        assert http.get("/products").headers["x-cache"] == "HIT"
        listed = http.get("/api/products").json()["products"]
        assert listed == {"1": "Teapot", "2": "Kettle", "3": "Mug"}
        token = _csrf(http.get("/").text)
        wrong = http.post("/login", data={"username": "alice", "password": "wrong",
                                          "csrfmiddlewaretoken": token})
        assert wrong.status_code == 200 and "Please enter a correct username" in wrong.text
        assert http.get("/api/ping").json() == {"pong": True, "user": None}
        page = http.post("/login", data={"username": "alice", "password": DEMO_USERS["alice"],
                                         "csrfmiddlewaretoken": token})
        assert page.status_code == 200 and "alice" in page.text
        assert "Signed in as alice." in page.text  # contrib.messages, in the Redis session
        assert "<b>1</b>" in page.text
        assert "<b>2</b>" in http.get("/profile").text  # the session keeps its count
        assert "alice" in http.get("/online").text
        assert http.get("/api/ping").json() == {"pong": True, "user": "alice"}
        css = http.get("/static/admin/css/base.css")  # the admin is styled
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        token = _csrf(http.get("/").text)
        http.post("/logout", data={"csrfmiddlewaretoken": token})
        assert "Log in" in http.get("/").text
    with httpx.Client(base_url=base) as http:
        statuses = []
        for i in range(6):  # a fresh form each time
            token = _csrf(http.get("/").text)
            statuses.append(http.post("/login", headers={"Accept": "text/html"}, data={
                "username": f"x{i}", "password": "guess", "csrfmiddlewaretoken": token
            }).status_code)
        # 5 logins a minute per address, alice's two included, on whichever worker
        assert statuses == [200] * 3 + [429] * 3
        token = _csrf(http.get("/").text)
        refused = http.post("/login", data={"username": "y", "csrfmiddlewaretoken": token},
                            headers={"Accept": "text/html"})
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert refused.headers["content-type"].startswith("text/html")  # a page, for a form


def _migrated(tmp_path: Any) -> dict[str, str]:
    """The environment of a Django example with its database created."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {"DJANGO_SETTINGS_MODULE": "examples.django_app.settings",
           "DJANGO_DB": str(tmp_path / "demo.sqlite3")}
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=root, check=True,
                   env={**os.environ, "PYTHONPATH": str(root), **env})
    return env


@pytest.mark.real_redis
def test_the_django_demo_under_gunicorn_with_two_workers(tmp_path: Any, redis_server: Any
                                                         ) -> None:
    """WSGI Django, two worker processes on one redis-server: the session, the limit and
    the cache are shared by both workers."""
    from .support.clients import SECRET, make_settings

    settings = make_settings(redis_server.url)
    env = {**_migrated(tmp_path), "REDIS_URL": settings.redis_url,
           "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}
    with Served(["gunicorn", "-w", "2", "-b", "127.0.0.1:{port}",
                 "examples.django_app.wsgi:application"], env, tmp_path / "gunicorn.log") as srv:
        _drive_the_django_shop(srv.base)
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


def test_the_django_demo_under_uvicorn(tmp_path: Any) -> None:
    """ASGI Django on memory://: the middleware and the session engine on their async
    paths (request.auser(), aload), the cache in Django's worker thread."""
    import httpx

    env = {**_migrated(tmp_path), "REDIS_URL": "memory://"}
    with Served(["uvicorn", "--port", "{port}", "examples.django_app.asgi:application"], env,
                tmp_path / "uvicorn.log") as srv:
        _drive_the_django_shop(srv.base)
        # One process (its database is the demo's only one): the product query ran once
        # for the page and the API, and runs again after a rename.
        with httpx.Client(base_url=srv.base, follow_redirects=True) as http:
            assert http.get("/api/products").json()["database_queries"] == 1
            assert "Samovar" in http.post("/products", data={"id": "1", "name": "Samovar"}).text
            assert http.get("/api/products").json() == {
                "products": {"1": "Samovar", "2": "Kettle", "3": "Mug"}, "database_queries": 2}
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()


@pytest.mark.real_redis
def test_the_flask_demo_under_gunicorn(tmp_path: Any, redis_server: Any) -> None:
    """The Flask example as it is deployed: gunicorn, two workers, one redis-server."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from .support.clients import SECRET, make_settings

    settings = make_settings(redis_server.url)
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}
    with Served(["gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "examples.flask_app.app:app"],
                env, tmp_path / "gunicorn.log") as srv, httpx.Client(
                    base_url=srv.base, follow_redirects=True) as http:
        page = http.post("/login", data={"username": "fay"})
        assert "fay" in page.text and "<b>1</b>" in page.text
        assert "<b>2</b>" in http.get("/profile").text
        assert http.get("/products").headers["x-cache"] == "MISS"
        assert http.get("/products").headers["x-cache"] == "HIT"
        assert "fay" in http.get("/online").text
        # A rename made by one worker is read by both: the next load of the list, on
        # whichever worker, reads the shared database. Two reads at once keep both
        # workers busy, so either may run the load (with a database per worker, this
        # check failed 5 runs out of 5). Twenty reads: under the 30/minute API limit.
        with ThreadPoolExecutor(2) as pool:
            for name in ("Beaker", "Cup", "Jug", "Tumbler", "Flute", "Goblet", "Stein",
                         "Tankard", "Chalice", "Mug"):
                http.post("/products", data={"id": "3", "name": name},
                          follow_redirects=False)
                reads = pool.map(lambda _: httpx.get(srv.base + "/api/products").json(),
                                 range(2))
                assert [read["products"]["3"] for read in reads] == [name, name]
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


@pytest.mark.real_redis
def test_the_chat_room_across_two_uvicorn_workers(tmp_path: Any, redis_server: Any) -> None:
    """The FastAPI demo as deployed: uvicorn with two worker processes, one redis-server,
    real browsers' WebSockets. A message reaches every member whichever worker holds
    their socket, and each worker holds one subscription for the room, not one per
    socket; a member who reconnects with the last id it saw misses nothing."""
    import asyncio

    import httpx
    import redis
    import websockets

    from redis_middleware.asgi import Broadcast

    from .support.clients import SECRET, make_settings

    settings = make_settings(redis_server.url)
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET}
    channel = Broadcast(settings).core.channel("chat:lobby")

    async def members(base: str, count: int) -> None:
        cookies = []
        for i in range(count):
            async with httpx.AsyncClient(base_url=base) as http:
                await http.post("/login", data={"username": f"m{i}"})
                cookies.append(http.cookies["session"])
        url = base.replace("http", "ws") + "/ws/chat/lobby"
        sockets = [await websockets.connect(url, additional_headers={
            "cookie": f"session={c}"}) for c in cookies]
        try:
            with redis.Redis.from_url(settings.redis_url) as admin:
                numsub = int(admin.pubsub_numsub(channel)[0][1])
            assert 1 <= numsub <= 2  # one per worker that has members, for 5 sockets
            await sockets[0].send("hello, everyone")
            last_id = ""
            for socket in sockets:
                while True:
                    envelope = json.loads(await asyncio.wait_for(socket.recv(), 10))
                    if envelope["data"].get("text") == "hello, everyone":
                        last_id = envelope["id"]
                        break
            await sockets[-1].close()  # a member drops out; the room goes on
            await sockets[0].send("while you were away")
            await asyncio.sleep(0.3)
            back = await websockets.connect(f"{url}?since={last_id}", additional_headers={
                "cookie": f"session={cookies[-1]}"})
            sockets[-1] = back
            while True:
                envelope = json.loads(await asyncio.wait_for(back.recv(), 10))
                if "text" in envelope["data"]:
                    assert envelope["data"]["text"] == "while you were away"  # replayed
                    break
        finally:
            for socket in sockets:
                await socket.close()

    with Served(["uvicorn", "--workers", "2", "--port", "{port}",
                 "examples.fastapi_app.app:app"], env, tmp_path / "uvicorn.log") as srv:
        asyncio.run(members(srv.base, 5))  # the login limit: 5 a minute per address
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()
