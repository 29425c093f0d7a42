"""Sessions under races and edge lifetimes: a save refused by the script leaves nothing
behind (no data, no entry in the user's index), a create never writes into a session in
use, and a lifetime of 0 or less keeps nothing without asking Redis. Each scenario runs
for ASGI and WSGI on fakeredis, a real redis-server and a Redis Cluster."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for
from redis_middleware.sansio.sessions.cookies import new_session_id
from redis_middleware.sansio.sessions.core import SessionCore

from .support import apps
from .support.audit import audit_keyspace
from .support.clients import Clients

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios]


def session_keys(settings: Settings) -> list[str]:
    """Every session key of this test: hashes and users' indexes."""
    return [k for k in audit_keyspace(settings) if ":session:" in k]


def set_cookie(response: Any) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("session="):
            return str(header)
    return None


def test_a_logout_racing_a_slow_request_leaves_no_index_entry(
        make_client: Clients, settings: Settings) -> None:
    """The slow request loaded the session before the logout; its save is refused, and
    the user's index does not get the dead session back."""
    client = make_client()
    client.post("/login?user=erin")
    cookie = {"cookie": f"session={client.cookies['session']}"}
    slow = make_client()
    thread = threading.Thread(target=lambda: slow.post(
        "/set?sleep=0.5", json={"late": True}, headers=cookie))
    thread.start()
    assert apps.sleeping.wait(10)  # the slow request has its session: now the logout
    make_client().post("/clear", headers=cookie)
    thread.join()
    assert session_keys(settings) == []


def test_a_create_never_writes_into_a_session_in_use(settings: Settings) -> None:
    """``create`` of an id that holds a session is refused, in the script: the session
    keeps its data, and the would-be user's index does not list it."""
    core, conns = SessionCore(settings), connections_for(settings)
    sid = new_session_id()
    first = core.store_flow("create", sid, None, {"a": "1"}, [], user="erin", loaded_user=None)
    assert conns.run(first) == 1
    again = core.store_flow("create", sid, None, {"b": "2"}, [], user="mallory",
                            loaded_user=None)
    assert conns.run(again) == 0
    found = conns.run(core.read_flow(sid))
    assert found is not None and found[0] == {"a": 1}
    assert [i.ref for i in conns.run(core.list_flow("erin"))] == [core.ref(sid)]
    assert conns.run(core.list_flow("mallory")) == []
    assert [k for k in session_keys(settings) if ":session:user:" in k] == [
        core.keys.session_index("erin")]


@pytest.mark.parametrize("lifetime", [0, -1])
def test_a_lifetime_of_zero_or_less_expires_the_cookie_without_a_write(
        make_client: Clients, settings: Settings, caplog: pytest.LogCaptureFixture,
        lifetime: int) -> None:
    """Starlette's ``max_age=-1``: nothing can be kept, so nothing is sent to Redis and
    nothing is "refused"; the cookie is expired at once."""
    short = settings.replace(session_absolute_lifetime=lifetime)
    client = make_client(settings=short)
    conns = connections_for(short)
    before = conns.round_trips
    with caplog.at_level(logging.DEBUG, logger="redis_middleware"):
        response = client.post("/set", json={"a": 1})
    assert response.status_code == 200
    header = set_cookie(response)
    assert header is not None and "Max-Age=0" in header
    assert conns.round_trips == before
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
    assert session_keys(settings) == []
