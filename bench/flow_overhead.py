"""What the middleware's flow path costs per request on top of the built-in client alone.

    python bench/flow_overhead.py [--requests 20000] [--runs 5]

Starts its own redis-server on a free loopback port (stopped at the end), then, at 16
and 64 requests in flight on one event loop, measures the CPU time of this process per
request for the same one-command round trip driven three ways:

- ``client``: the built-in asyncio client's ``execute`` alone (the floor);
- ``flow``: ``RedisConnections.arun`` of a one-batch flow (breaker, counters, script
  fallback, error split: what every middleware request pays);
- ``client2``: the client alone sending two commands in one round trip;
- ``gather``: two one-command flows merged by ``gather`` into one round trip (the stack's
  case), compared with ``client2``.

Runs alternate between the ways (noise hits all alike); medians are printed, and the
overhead is ``flow - client`` (and ``gather - client2``) in microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datacache import start_server, stop_server

from redis_middleware import Settings
from redis_middleware._redis.connections import RedisConnections
from redis_middleware.sansio.flow import Call, Flow, gather

COMMAND = ("GET", "bench:flow:key")


def one_get() -> Flow[Any]:
    (value,) = yield (Call(COMMAND),)
    return value


async def measure(way: str, conns: RedisConnections, in_flight: int, requests: int) -> float:
    execute = conns._async_executor()[0]  # the built-in client of this loop
    per_task = requests // in_flight

    async def client_loop() -> None:
        for _ in range(per_task):
            await execute([COMMAND])

    async def client2_loop() -> None:
        for _ in range(per_task):
            await execute([COMMAND, COMMAND])

    async def flow_loop() -> None:
        for _ in range(per_task):
            await conns.arun(one_get())

    async def gather_loop() -> None:
        for _ in range(per_task):
            await conns.arun(gather(one_get(), one_get()))

    loop_of = {"client": client_loop, "client2": client2_loop, "flow": flow_loop,
               "gather": gather_loop}[way]
    await asyncio.gather(*(loop_of() for _ in range(in_flight // 4)))  # warm up
    start = time.process_time()
    await asyncio.gather(*(loop_of() for _ in range(in_flight)))
    return (time.process_time() - start) / (per_task * in_flight) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    proc, url, workdir = start_server()  # bench/datacache.py's: a free loopback port
    try:
        settings = Settings(redis_url=url, secret_key="x" * 40)
        print(f"{'in flight':>9} {'client':>7} {'flow':>7} {'client2':>8} {'gather':>7}"
              f" {'flow - client':>14} {'gather - client2':>17}   (µs of CPU per request)")
        for in_flight in (16, 64):
            samples: dict[str, list[float]] = {"client": [], "flow": [], "client2": [],
                                               "gather": []}

            async def run_all(in_flight: int = in_flight,
                              samples: dict[str, list[float]] = samples) -> None:
                conns = RedisConnections(settings)
                for _ in range(args.runs):
                    for way in samples:
                        samples[way].append(await measure(way, conns, in_flight,
                                                          args.requests))
                await conns.aclose()

            asyncio.run(run_all())
            med = {way: statistics.median(v) for way, v in samples.items()}
            print(f"{in_flight:>9} {med['client']:>7.1f} {med['flow']:>7.1f} "
                  f"{med['client2']:>8.1f} {med['gather']:>7.1f} "
                  f"{med['flow'] - med['client']:>14.1f} "
                  f"{med['gather'] - med['client2']:>17.1f}")
    finally:
        stop_server(proc, workdir)


if __name__ == "__main__":
    main()
