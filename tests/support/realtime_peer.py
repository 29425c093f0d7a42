"""Another process of the app, for tests/test_realtime.py: ``publish ROOM N`` sends N
numbered messages with the sync Broadcast; ``subscribe ROOM...`` prints every message
and gap of those rooms (asyncio Broadcast) as JSON lines, after a ``ready`` line."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from redis_middleware import Settings
from redis_middleware.asgi import Broadcast as AsyncBroadcast
from redis_middleware.wsgi import Broadcast


def publish(room: str, count: int) -> None:
    broadcast = Broadcast(Settings.from_env())
    for n in range(count):
        broadcast.publish(room, {"n": n})
    print("published", flush=True)


async def subscribe(rooms: list[str]) -> None:
    broadcast = AsyncBroadcast(Settings.from_env())
    async with contextlib.AsyncExitStack() as stack:
        subscriptions = [await stack.enter_async_context(broadcast.subscribe(room))
                         for room in rooms]
        print("ready", flush=True)

        async def forward(subscription: object) -> None:
            async for item in subscription:  # type: ignore[attr-defined]
                print(item.envelope(), flush=True)

        await asyncio.gather(*(forward(s) for s in subscriptions))


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        publish(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(subscribe(sys.argv[2:]))
