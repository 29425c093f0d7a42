"""The example apps, driven the way a person clicks through them."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from redis_middleware._redis.connections import connections_for

_peers = itertools.count(1)


def peer() -> tuple[str, int]:
    return (f"10.77.0.{next(_peers) % 250 + 1}", 1234)


@pytest.fixture
def fastapi_client() -> Any:
    from starlette.testclient import TestClient

    from examples.fastapi_app.app import app, settings

    with TestClient(app, client=peer()) as client:
        yield client
        client.portal.call(connections_for(settings).aclose)


def test_fastapi_story(fastapi_client: Any) -> None:
    client = fastapi_client
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


def test_flask_story() -> None:
    from examples.flask_app.app import app, cache

    cache.purge_all()  # the examples share this process's memory:// server
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
    client.post("/products", data={"id": "2", "name": "Urn"})
    assert "Urn" in client.get("/products").text
    client.post("/logout")
    assert "Log in" in client.get("/").text
    statuses = [client.post("/login", data={"username": "x"}).status_code for _ in range(6)]
    assert statuses[-1] == 429
