"""Background tasks stop when they are told to, also when a cancellation is lost.

On Python 3.11, ``asyncio.wait_for`` (redis-py writes every command through it) drops a
cancellation that arrives just as the awaited call finishes (CPython gh-86296). The
sweeps and heartbeats here lose their first cancellation the same way, on purpose: the
app's lifespan shutdown and a WebSocket's teardown must still end, and a task that
never ends must not hold them up past their bound."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware.asgi import PresenceMiddleware

from .support.clients import make_settings
from .support.driven_socket import websocket_scope


class SlowCall:
    """A Redis call that takes long. Cancelled, it returns as if it had finished the
    first ``lose`` times (as wait_for does on 3.11); with ``hold``, it goes on waiting
    until :meth:`release` (a cleanup that hangs). ``log`` says what happened."""

    def __init__(self, lose: int = 0, hold: bool = False) -> None:
        self.lose, self.hold = lose, hold
        self.log: list[str] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> int:
        self.log.append("call")
        while True:
            try:
                await asyncio.sleep(30)
                return 0
            except asyncio.CancelledError:
                if self.hold:
                    self.log.append("held")
                    continue
                if self.log.count("lost") < self.lose:
                    self.log.append("lost")
                    return 0
                self.log.append("cancelled")
                raise

    def release(self) -> None:
        self.hold = False


async def lifespan(app: Any, while_running: Any) -> list[str]:
    """Start ``app``'s lifespan, run ``while_running()``, shut down; the messages sent."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: Any) -> None:
        sent.append(message["type"])

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await while_running()
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 10)
    return sent


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()

    return Starlette(routes=[WebSocketRoute("/ws", ws)])


@pytest.fixture
def settings() -> Settings:
    return make_settings("memory://", presence_ttl=1, presence_heartbeat_interval=0.1,
                         presence_sweep_interval=0.05, presence_grace=0.5)


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


def test_the_sweeper_stops_at_shutdown_though_its_first_cancellation_is_lost(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = PresenceMiddleware(starlette_app(), settings)
    app.presence.sweep = sweep = SlowCall(lose=1)  # type: ignore[method-assign]

    async def main() -> list[str]:
        sent = await lifespan(app, lambda: until(lambda: sweep.log))
        await asyncio.sleep(0.3)  # a sweeper still running would sweep again by now
        return sent

    assert asyncio.run(main()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sweep.log == ["call", "lost"]  # and no sweep after it
    assert not [r for r in caplog.records if "did not stop" in r.getMessage()]


def test_a_sweeper_that_never_stops_holds_shutdown_only_to_its_bound(
    caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings("memory://", presence_ttl=1, presence_sweep_interval=0.05,
                             socket_timeout=0.2, connect_timeout=0.2)
    app = PresenceMiddleware(starlette_app(), settings)
    app.presence.sweep = sweep = SlowCall(hold=True)  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, "redis_middleware")

    async def main() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        started: list[float] = []

        async def running() -> None:
            await until(lambda: sweep.log)
            started.append(loop.time())

        sent = await lifespan(app, running)
        took = loop.time() - started[0]
        sweep.release()  # the task left behind may now end with the loop
        return sent, took

    sent, took = asyncio.run(main())
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert 1.4 <= took < 5  # the bound: connect and socket timeouts and a second
    stuck = [r for r in caplog.records if "did not stop" in r.getMessage()]
    assert len(stuck) == 1 and "presence sweeper" in stuck[0].getMessage()


def test_a_websocket_ends_though_its_renewal_loses_a_cancellation() -> None:
    """Driven as a server drives it: nothing cancels the handler after the client's
    close (a test client's cancellation would also cancel the renewal it awaits)."""
    from starlette.authentication import SimpleUser

    # Renewed every 0.3 s: the message that ends the handler comes sooner after the
    # renewal that starts, so only the periodic renewal calls the slow heartbeat.
    settings = make_settings("memory://", presence_ttl=2, presence_heartbeat_interval=0.3)
    presence = PresenceMiddleware(starlette_app(), settings)
    real_heartbeat = presence.presence.heartbeat
    slow_heartbeat = SlowCall(lose=1)
    calls = 0

    async def heartbeat(user: str, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the one at connect
            return await real_heartbeat(user, **kwargs)
        return await slow_heartbeat(user, **kwargs)  # the periodic renewal

    presence.presence.heartbeat = heartbeat  # type: ignore[method-assign]

    async def main() -> None:
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = websocket_scope("/ws", user=SimpleUser("ada"))
        await to_app.put({"type": "websocket.connect"})
        handler = asyncio.create_task(presence(scope, to_app.get, from_app.put))
        assert (await asyncio.wait_for(from_app.get(), 5))["type"] == "websocket.accept"
        await until(lambda: slow_heartbeat.log)
        await to_app.put({"type": "websocket.receive", "text": "bye"})  # it returns
        await asyncio.wait_for(handler, 5)  # and its teardown ends
        await asyncio.sleep(0.6)  # two renewal periods: a renewal still running calls again

    asyncio.run(main())
    assert slow_heartbeat.log == ["call", "lost"]
