"""Real-time fan-out, side by side: redis-middleware's shared subscription, the common
one-subscription-per-socket code, and encode/broadcaster.

    python bench/realtime.py [--sockets 1000] [--rooms 100] [--rate 1000] [--duration 6]
    python bench/realtime.py --slow 100 --pad 2048 --duration 10     # backpressure

For each variant (bench/stacks/realtime_app.py) it starts a redis-server and one uvicorn
process, connects ``--sockets`` WebSockets from a client process across ``--rooms``
rooms, and publishes ``--rate`` messages a second in total from a third process.
Reported: Redis Pub/Sub connections held by the server, the server's resident memory
per idle subscriber, deliveries per second, the server's CPU time per delivered message,
and the publish-to-receive latency (p50, p99, max: one clock, one machine). Writes
``bench/results/realtime.json``; stops everything it started.

``--slow K``: the first K sockets (one per room when K <= rooms) stop reading, with a
small receive buffer, so that the server's sends to them block; ``--pad`` makes each
message that many bytes larger. Then reported: what the other sockets get (latency,
losses), and how much the server's and Redis's memory grew while publishing — what a
slow client costs everyone else. Writes ``bench/results/realtime-slow.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
def stalled_socket(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads, with a
    small receive buffer: the server's sends to it soon block. (A client library
    keeps reading into its own queue.)"""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):  # byte by byte: no frame is read
        answer += raw.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return raw


async def client(port: int, sockets: int, rooms: int, slow: int) -> None:
    """Open the sockets, then record every frame's latency until told to stop; the
    first ``slow`` sockets never read."""
    import websockets

    latencies: list[float] = []
    conns, stalled = [], []
    for i in range(sockets):
        url = f"ws://127.0.0.1:{port}/ws/r{i % rooms}"
        if i < slow:
            stalled.append(await asyncio.to_thread(stalled_socket, port, f"/ws/r{i % rooms}"))
        else:
            conns.append(await websockets.connect(url, max_queue=None))

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
    for raw in stalled:
        raw.close()  # a close handshake could not pass its full buffer
    for conn in conns:
        await conn.close()
    latencies.sort()
    print(json.dumps({"received": len(latencies), "latencies": latencies[::10]}), flush=True)


def publisher(variant: str, url: str, prefix: str, rooms: int, rate: int,
              duration: float, pad: int) -> None:
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
        send(f"r{n % rooms}", {"n": n, "ts": time.time(), **({"pad": "x" * pad} if pad else {})})
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
             "--sockets", str(args.sockets), "--rooms", str(args.rooms),
             "--slow", str(args.slow)],
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
            redis_before = int(admin.info("memory")["used_memory"])
        cpu_before = cpu_seconds(server.pid)
        t0 = time.monotonic()
        pub = subprocess.Popen(
            [sys.executable, str(HERE / "realtime.py"), "--publish", variant, "--url",
             redis_url, "--prefix", prefix, "--rooms", str(args.rooms), "--rate",
             str(args.rate), "--duration", str(args.duration), "--pad", str(args.pad)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        procs.append(pub)
        timeline, held = [], []  # the server's RSS growth and messages not yet sent,
        while pub.poll() is None:  # once a second while publishing
            timeline.append(round((rss_bytes(server.pid) - rss_idle) / 2**20, 1))
            held.append(httpx.get(f"http://127.0.0.1:{port}/ready").json()["held"])
            time.sleep(1.0)
        assert pub.returncode == 0 and pub.stdout is not None
        time.sleep(1.0)  # the last messages drain
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(server.pid) - cpu_before
        rss_growth = rss_bytes(server.pid) - rss_idle
        with redis.Redis.from_url(redis_url) as admin:
            redis_growth = int(admin.info("memory")["used_memory"]) - redis_before
        published = json.loads(pub.stdout.read())["published"]
        reader.stdin.write("stop\n")
        reader.stdin.flush()
        result = json.loads(reader.stdout.readline())
        reader.wait(30)
        lat = result["latencies"]
        received = result["received"]
        expected = published * (args.sockets - args.slow) // args.rooms
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
            "server_rss_growth_mib": round(rss_growth / 2**20, 1),
            "server_rss_growth_mib_each_second": timeline,
            "messages_held_each_second": held,
            "redis_memory_growth_mib": round(redis_growth / 2**20, 1),
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
    parser.add_argument("--slow", type=int, default=0)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client(args.client, args.sockets, args.rooms, args.slow))
        return
    if args.publish:
        publisher(args.publish, args.url, args.prefix, args.rooms, args.rate, args.duration,
                  args.pad)
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
              "duration_s": args.duration, "slow_sockets": args.slow, "pad_bytes": args.pad,
              "results": results}
    out = HERE / "results" / ("realtime-slow.json" if args.slow else "realtime.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'variant':<12} {'pubsub':>6} {'deliv/s':>8} {'cpu us/msg':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'KiB/sub':>8} {'lost':>6} {'+RSS MiB':>8} "
          f"{'+Redis MiB':>10}")
    for r in results:
        print(f"{r['variant']:<12} {r['pubsub_connections']:>6} {r['deliveries_per_s']:>8} "
              f"{r['server_cpu_us_per_delivery']:>10} {r['latency_ms']['p50']:>7} "
              f"{r['latency_ms']['p99']:>7} {r['rss_per_idle_subscriber_kib']:>8} "
              f"{r['deliveries_expected'] - r['delivered']:>6} "
              f"{r['server_rss_growth_mib']:>8} {r['redis_memory_growth_mib']:>10}")


if __name__ == "__main__":
    main()
