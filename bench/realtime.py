"""Real-time fan-out, side by side: redis-middleware's shared subscription, the common
one-subscription-per-socket code, and encode/broadcaster.

    python bench/realtime.py [--sockets 1000] [--rooms 100] [--rate 1000] [--duration 6]

For each variant (bench/stacks/realtime_app.py) it starts a redis-server and one uvicorn
process, connects ``--sockets`` WebSockets from a client process across ``--rooms``
rooms, and publishes ``--rate`` messages a second in total from a third process.
Reported: Redis Pub/Sub connections held by the server, the server's resident memory
per idle subscriber, deliveries per second, the server's CPU time per delivered message,
and the publish-to-receive latency (p50, p99, max: one clock, one machine). Writes
``bench/results/realtime.json``; stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = ["ours", "per-socket", "broadcaster"]
SECRET = "bench-secret-bench-secret-bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- the client and publisher processes -------------------------------------------
async def client(port: int, sockets: int, rooms: int) -> None:
    """Open the sockets, then record every frame's latency until told to stop."""
    import websockets

    latencies: list[float] = []
    conns = []
    for i in range(sockets):
        conns.append(await websockets.connect(f"ws://127.0.0.1:{port}/ws/r{i % rooms}",
                                              max_queue=None))

    async def read(conn: Any) -> None:
        async for frame in conn:
            now = time.time()
            data = json.loads(frame)
            data = data.get("data", data)
            if isinstance(data, dict) and "ts" in data:
                latencies.append(now - data["ts"])

    readers = [asyncio.create_task(read(c)) for c in conns]
    print("connected", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for task in readers:
        task.cancel()
    for conn in conns:
        await conn.close()
    latencies.sort()
    print(json.dumps({"received": len(latencies), "latencies": latencies[::10]}), flush=True)


def publisher(variant: str, url: str, prefix: str, rooms: int, rate: int,
              duration: float) -> None:
    """Publish ``rate`` messages a second, round-robin over the rooms, each carrying its
    send time; the way each variant's users publish."""
    import redis

    send: Any
    if variant == "ours":
        from redis_middleware import Settings
        from redis_middleware.wsgi import Broadcast

        broadcast = Broadcast(Settings(redis_url=url, key_prefix=prefix, secret_key=SECRET))

        def send(room: str, data: dict[str, Any]) -> None:
            broadcast.publish(room, data)
    else:
        plain = redis.Redis.from_url(url)

        def send(room: str, data: dict[str, Any]) -> None:
            plain.publish("bench:" + room, json.dumps(data))

    start = time.monotonic()
    n = 0
    while True:
        due = start + n / rate
        if due - start >= duration:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(f"r{n % rooms}", {"n": n, "ts": time.time()})
        n += 1
    print(json.dumps({"published": n}), flush=True)


# -- one variant --------------------------------------------------------------------
def run_variant(variant: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import redis

    prefix = f"bench-{variant}"
    port = free_port()
    env = {**os.environ, "VARIANT": variant, "REDIS_URL": redis_url,
           "REDIS_MIDDLEWARE_KEY_PREFIX": prefix, "REDIS_MIDDLEWARE_SECRET_KEY": SECRET,
           "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.stacks.realtime_app:app", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=env)
    procs: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/ready")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        rss_before = rss_bytes(server.pid)
        reader = subprocess.Popen(
            [sys.executable, str(HERE / "realtime.py"), "--client", str(port),
             "--sockets", str(args.sockets), "--rooms", str(args.rooms)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(reader)
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "connected"
        while httpx.get(f"http://127.0.0.1:{port}/ready").json()["sockets"] < args.sockets:
            time.sleep(0.1)
        time.sleep(1.0)
        rss_idle = rss_bytes(server.pid)
        with redis.Redis.from_url(redis_url) as admin:
            pubsub_conns = len(admin.client_list(_type="pubsub"))
        cpu_before = cpu_seconds(server.pid)
        t0 = time.monotonic()
        pub = subprocess.run(
            [sys.executable, str(HERE / "realtime.py"), "--publish", variant, "--url",
             redis_url, "--prefix", prefix, "--rooms", str(args.rooms), "--rate",
             str(args.rate), "--duration", str(args.duration)],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        time.sleep(1.0)  # the last messages drain
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(server.pid) - cpu_before
        published = json.loads(pub.stdout)["published"]
        reader.stdin.write("stop\n")
        reader.stdin.flush()
        result = json.loads(reader.stdout.readline())
        reader.wait(30)
        lat = result["latencies"]
        received = result["received"]
        expected = published * args.sockets // args.rooms
        return {
            "variant": variant,
            "pubsub_connections": pubsub_conns,
            "published": published,
            "deliveries_expected": expected,
            "delivered": received,
            "deliveries_per_s": round(received / elapsed),
            "server_cpu_us_per_delivery": round(cpu / max(received, 1) * 1e6, 1),
            "server_cpu_s": round(cpu, 2),
            "latency_ms": {"p50": round(statistics.median(lat) * 1000, 2) if lat else None,
                           "p99": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
                           "max": round(lat[-1] * 1000, 2) if lat else None},
            "rss_per_idle_subscriber_kib": round((rss_idle - rss_before) / args.sockets / 1024,
                                                 1),
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client(args.client, args.sockets, args.rooms))
        return
    if args.publish:
        publisher(args.publish, args.url, args.prefix, args.rooms, args.rate, args.duration)
        return
    port = free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--maxclients", "10000"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        url = f"redis://127.0.0.1:{port}/0"
        results = [run_variant(v, url, args) for v in args.variants.split(",")]
    finally:
        redis_server.terminate()
        redis_server.wait(10)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "sockets": args.sockets, "rooms": args.rooms, "rate": args.rate,
              "duration_s": args.duration, "results": results}
    out = HERE / "results" / "realtime.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'variant':<12} {'pubsub':>6} {'deliv/s':>8} {'cpu us/msg':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'KiB/sub':>8} {'lost':>6}")
    for r in results:
        print(f"{r['variant']:<12} {r['pubsub_connections']:>6} {r['deliveries_per_s']:>8} "
              f"{r['server_cpu_us_per_delivery']:>10} {r['latency_ms']['p50']:>7} "
              f"{r['latency_ms']['p99']:>7} {r['rss_per_idle_subscriber_kib']:>8} "
              f"{r['deliveries_expected'] - r['delivered']:>6}")


if __name__ == "__main__":
    main()
