"""Every failure is answered with a clear status and logged once per incident, for every
component, standalone and in the stack, on ASGI and WSGI.

Two failure classes, each against a server of the test's own:

- a **refused command** (writes refused with OOM under ``noeviction``): the component
  that sent it logs one line naming what it did about it;
- a **timeout** (the server stopped with SIGSTOP): the circuit breaker logs one line for
  the incident, whichever component met it first, and every later request fails fast.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_middleware.sansio import incidents

from .support.clients import Clients, make_settings
from .support.servers import start_redis_server, stop_redis_server

pytestmark = pytest.mark.real_redis

# component -> (standalone middleware, its options, the request, what a refused write logs,
#              the status a refusal answers)
COMPONENTS: dict[str, tuple[str, dict[str, Any], str, str, int]] = {
    "session": ("SessionMiddleware", {}, "/set", "session changes not saved", 503),
    "ratelimit": ("RateLimitMiddleware", {"limit": "100/minute"}, "/noop",
                  "rate limit not counted", 200),
    # the lookup takes the stampede guard (a write): refused, the request bypasses
    "cache": ("CacheMiddleware", {"routes": {"/c/*": 60}}, "/c/page", "cache bypassed", 200),
    "presence": ("PresenceMiddleware", {}, "/noop", "presence skipped", 200),
}
STACK_OPTIONS = {"limit": "100/minute", "routes": {"/c/*": 60}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    started = start_redis_server(tmp_path)
    yield started
    if started.proc.poll() is None:
        os.kill(started.proc.pid, signal.SIGCONT)
        stop_redis_server(started)


def _client(clients: Clients, component: str, path: str) -> Any:
    standalone, options, *_ = COMPONENTS[component]
    if path == "stack":
        return clients("RedisMiddleware", **STACK_OPTIONS)
    if component == "presence":  # presence needs the user: a session outside it
        return clients(standalone, outer=(("SessionMiddleware", {}),), **options)
    return clients(standalone, **options)


def _request(client: Any, component: str) -> Any:
    target = COMPONENTS[component][2]
    if target == "/set":
        return client.post("/set", json={"a": 2, "b": "x" * 100})
    return client.get(target)


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("path", ["standalone", "stack"])
@pytest.mark.parametrize("component", list(COMPONENTS))
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_refused_command_is_answered_and_logged_once(
        interface: str, component: str, path: str, server: Any,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(server.url, presence_heartbeat_interval=0.001)
    clients = Clients(interface, settings)
    monkeypatch.setattr(incidents, "_last_logged", {})  # a fresh incident
    try:
        client = _client(clients, component, path)
        client.post("/login?user=ann")  # a session with a user (presence needs one)
        with server.client() as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")  # every write is now refused with OOM
            try:
                with caplog.at_level(logging.WARNING, logger="redis_middleware"):
                    statuses = [_request(client, component).status_code for _ in range(3)]
            finally:
                admin.config_set("maxmemory", "0")
        expected = COMPONENTS[component][4]
        assert statuses == [expected] * 3, statuses
        lines = _lines(caplog, COMPONENTS[component][3])
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]
        assert "maxmemory" in lines[0].getMessage()
        assert not [r for r in caplog.records if r.exc_info]  # no traceback
    finally:
        clients.close()


@pytest.mark.parametrize("path", ["standalone", "stack"])
@pytest.mark.parametrize("component", list(COMPONENTS))
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_timeout_opens_the_breaker_with_one_line(
        interface: str, component: str, path: str, server: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(server.url, socket_timeout=0.2, connect_timeout=0.2,
                             breaker_cooldown=5, presence_heartbeat_interval=0.001)
    clients = Clients(interface, settings)
    try:
        client = _client(clients, component, path)
        client.post("/login?user=ann")
        os.kill(server.proc.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            with caplog.at_level(logging.WARNING, logger="redis_middleware"):
                statuses = [_request(client, component).status_code for _ in range(3)]
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        expected = 503 if component == "session" else 200
        assert statuses == [expected] * 3, statuses
        assert len(_lines(caplog, "is unavailable (")) == 1, [
            r.getMessage() for r in caplog.records]
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        clients.close()
