"""Benchmark redis-middleware against the peer packages and against no middleware.

    python bench/run.py [--side asgi|wsgi|wsgi-granian|both|all] [--duration 4] [--runs 3]
    python bench/run.py --baseline REV     # this checkout's stacks beside those of REV
    python bench/run.py --least            # the floor, the stack, and the least Python
                                           # doing the stack's work (bench/stacks/least.py)

Starts its own redis-server on a free loopback port and one server per stack (uvicorn
for ASGI; gunicorn for WSGI, or granian for the ``wsgi-granian`` side; the same settings
for every stack of a side), drives them with wrk
(runs alternate between stacks, so noise hits all alike), counts Redis commands and
round trips per request from ``INFO stats`` deltas over a fixed number of requests,
measures memory per session and keys without a TTL, prints the tables and writes
``bench/results/latest.json``. Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import redis

HERE = Path(__file__).resolve().parent
STACKS = ["bare", "floor", "peers", "ours", "stack"]
COMPONENT_STACKS = ["bare", "peer-ratelimit", "our-ratelimit", "peer-cache", "our-cache"]
DJANGO_STACKS = ["django-db", "django-cache", "django-ours"]
METRICS_STACKS = ["bare", "stack", "stack+metrics"]
LEAST_STACKS = ["floor", "stack", "least"]  # how near the floor Python can come
LABELS = {"bare": "no middleware", "floor": "floor (1 round trip)", "peers": "peer stack",
          "ours": "ours (4 middlewares)", "stack": "ours (RedisMiddleware)",
          "ours@base": "ours (4 middlewares), baseline", "stack@base": "ours (stack), baseline",
          "least": "least Python doing the stack's work",
          "peer-ratelimit": "peer rate limiter alone", "our-ratelimit": "our rate limiter alone",
          "peer-cache": "peer cache alone", "our-cache": "our cache alone",
          "django-db": "Django db engine (SQLite)", "django-cache": "Django cache engine "
          "(django-redis)", "django-ours": "redis_middleware.django.sessions"}
PEERS = {"asgi": "starsessions + slowapi + fastapi-cache2",
         "wsgi": "Flask-Session + Flask-Limiter + Flask-Caching",
         "django": "Django's db and cache (django-redis) session engines"}
# side -> (interface, server). gunicorn's gthread worker is what most Flask deployments
# run; granian (Rust) is a second WSGI server whose own cost per request is far lower,
# so the middleware's share of the time shows (see docs/benchmarks.md).
SIDES = {"asgi": ("asgi", "uvicorn"), "wsgi": ("wsgi", "gunicorn"),
         "wsgi-granian": ("wsgi", "granian"),
         # Django's session engines side by side (bench/stacks/django_app.py), on gunicorn.
         "django": ("django", "gunicorn")}
SIDE_CHOICES = {"both": ["asgi", "wsgi"], "all": ["asgi", "wsgi", "wsgi-granian"]}
WORKLOADS = {  # name -> (method, path, needs a session cookie)
    "hello": ("GET", "/hello", False),
    "session-read": ("GET", "/me", True),
    "cached-item": ("GET", "/item/1", False),
    "login": ("POST", "/login", False),
}
COUNTED_REQUESTS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    side: str
    stack: str
    port: int
    db: int
    proc: subprocess.Popen[bytes]
    cookie: str = ""
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_redis(stack: ExitStack) -> tuple[int, redis.Redis]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--databases", "16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(10), shutil.rmtree(workdir, True)))
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return port, client
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def server_command(server: str, port: int, module: str = "wsgi_app") -> list[str]:
    """One worker process on every server; WSGI servers run the app on 8 threads."""
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--log-level", "warning",
                "--no-access-log"]
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8",
                "-b", f"127.0.0.1:{port}", "--log-level", "warning", f"{module}:app"]
    return [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--blocking-threads", "8",
            "--log-level", "error", "wsgi_app:app"]


BASELINE_STACKS = ["peers", "ours", "ours@base", "stack", "stack@base"]
_baseline_root: Path | None = None  # a worktree of the --baseline revision


def start_server(side: str, stack_name: str, redis_port: int, db: int,
                 stack: ExitStack) -> Server:
    port = free_port()
    name, _, base = stack_name.partition("@")
    name, plus, _ = name.partition("+")  # "stack+metrics": the stack with metrics on
    root = _baseline_root if base and _baseline_root is not None else HERE.parent
    env = {**os.environ, "BENCH_STACK": name, **({"BENCH_METRICS": "1"} if plus else {}),
           "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/{db}",
           "PYTHONPATH": os.pathsep.join([str(HERE / "stacks"), str(root)])}
    # Its own process group: stopping it stops its worker processes too, even when the
    # server's main process has to be killed.
    module = "django_app" if side == "django" else "wsgi_app"
    proc = subprocess.Popen(server_command(SIDES[side][1], port, module), cwd=HERE / "stacks",
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)

    def stop() -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.5)  # workers leave after the main process; then make sure

    stack.callback(stop)
    server = Server(side, stack_name, port, db, proc)
    for _ in range(200):
        try:
            if httpx.get(server.url + "/hello", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"{side}/{stack_name} did not start:\n{err}")
        time.sleep(0.1)
    raise SystemExit(f"{side}/{stack_name} did not answer")


def prepare(server: Server) -> None:
    """Log in once (the session read workload's cookie) and warm the cache and scripts."""
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/login")
        response.raise_for_status()
        server.cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        for _ in range(3):
            client.get("/me").raise_for_status()
            if server.side != "django":
                client.get("/item/1").raise_for_status()
            client.get("/hello").raise_for_status()


def wrk_script(method: str, cookie: str) -> str:
    lines = [f'wrk.method = "{method}"']
    if cookie:
        lines.append(f'wrk.headers["Cookie"] = "{cookie}"')
    path = Path(tempfile.mkstemp(suffix=".lua")[1])
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]", "", text)  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(server: Server, workload: str, duration: float, connections: int) -> dict[str, float]:
    method, path, needs_cookie = WORKLOADS[workload]
    script = wrk_script(method, server.cookie if needs_cookie else "")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
         "-s", script, server.url + path], capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "errors": int(non2xx.group(1)) if non2xx else 0}


def count_redis(server: Server, workload: str, admin: redis.Redis) -> dict[str, float]:
    """Exact Redis commands (scripts' inner commands included) and round trips per request."""
    method, path, needs_cookie = WORKLOADS[workload]
    headers = {"cookie": server.cookie} if needs_cookie else {}
    with httpx.Client(base_url=server.url) as client:
        client.request(method, path, headers=headers)
        time.sleep(0.2)
        before, usec = admin.info("stats"), redis_usec(admin)
        for _ in range(COUNTED_REQUESTS):
            client.cookies.clear()  # like wrk: only the workload's own cookie is sent
            client.request(method, path, headers=headers).raise_for_status()
        usec, after = redis_usec(admin) - usec, admin.info("stats")
    # the INFO of the first snapshot and the two INFO cpu are counted too
    commands = after["total_commands_processed"] - before["total_commands_processed"] - 3
    reads = after["total_reads_processed"] - before["total_reads_processed"] - 3
    return {"commands": commands / COUNTED_REQUESTS, "round_trips": reads / COUNTED_REQUESTS,
            "redis_us": usec / COUNTED_REQUESTS}


def redis_usec(admin: redis.Redis) -> float:
    """Microseconds of CPU the server's main thread has used so far (INFO cpu: user and
    system, parsing and answering included). Not INFO commandstats: it counts a script's
    inner commands twice (in their own entries and in the EVALSHA's time), which would
    bill the stacks that use scripts for work done once."""
    cpu: dict[str, Any] = admin.info("cpu")
    return (float(cpu["used_cpu_user_main_thread"]) +
            float(cpu["used_cpu_sys_main_thread"])) * 1e6


def session_memory(server: Server, admin_port: int) -> dict[str, Any]:
    """Bytes of Redis memory for one login's session (3 short fields), keys included."""
    db = redis.Redis(port=admin_port, db=server.db)
    before = set(db.scan_iter(count=1000))
    with httpx.Client(base_url=server.url) as client:
        client.post("/login").raise_for_status()
    time.sleep(0.1)
    new = [k for k in db.scan_iter(count=1000) if k not in before]
    sizes = {k.decode(errors="replace"): int(db.memory_usage(k, samples=0) or 0) for k in new
             if db.type(k) in (b"hash", b"string") and not k.startswith((b"LIMITS", b"rmw:rate"))}
    return {"bytes": sum(sizes.values()), "keys": sizes}


def keys_without_ttl(server: Server, admin_port: int) -> int:
    db = redis.Redis(port=admin_port, db=server.db)
    return sum(1 for k in db.scan_iter(count=1000) if db.ttl(k) == -1 and k != b"bench:floor")


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for dist in ("redis-middleware", "redis", "starlette", "fastapi", "uvicorn", "flask",
                 "gunicorn", "granian", "starsessions", "slowapi", "fastapi-cache2",
                 "Flask-Session", "Flask-Limiter", "Flask-Caching", "limits", "django",
                 "django-redis"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "os": platform.platform(), "redis-server": redis_version,
            "wrk": (wrk_version.stdout or wrk_version.stderr).split("[")[0].strip(),
            **{f"pkg:{k}": v for k, v in versions.items()}}


def run_side(side: str, stacks: list[str], workloads: list[str], args: argparse.Namespace,
             redis_port: int, admin: redis.Redis) -> dict[str, Any]:
    """One side's servers, started, measured, and stopped before the next side starts
    (idle servers of an earlier side must not add load or Redis traffic)."""
    with ExitStack() as stack:
        first_db = min(len(STACKS) * list(SIDES).index(side), 12)  # 16 databases, 5 per side
        servers = [start_server(side, name, redis_port, first_db + i, stack)
                   for i, name in enumerate(stacks)]
        for server in servers:
            prepare(server)
        timings: dict[tuple[str, str], list[dict[str, float]]] = {}
        for run in range(args.runs):
            order = servers if run % 2 == 0 else list(reversed(servers))
            for workload in workloads:
                for server in order:
                    timings.setdefault((server.stack, workload), []).append(
                        run_wrk(server, workload, args.duration, args.connections))
            print(f"{side}: run {run + 1}/{args.runs} done", flush=True)
        side_report: dict[str, Any] = {"peers": PEERS[SIDES[side][0]],
                                       "server": SIDES[side][1], "stacks": {}}
        for server in servers:
            entry: dict[str, Any] = {"workloads": {}}
            for workload in workloads:
                runs = timings[(server.stack, workload)]
                entry["workloads"][workload] = {
                    "rps": statistics.median(r["rps"] for r in runs),
                    "rps_runs": [r["rps"] for r in runs],
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                    "errors": sum(r["errors"] for r in runs),
                    **count_redis(server, workload, admin),
                }
            entry["session_memory"] = session_memory(server, redis_port)
            entry["keys_without_ttl"] = keys_without_ttl(server, redis_port)
            side_report["stacks"][server.stack] = entry
        return side_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=[*SIDES, *SIDE_CHOICES], default="both",
                        help="both = asgi + wsgi (gunicorn); all adds wsgi-granian")
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per workload")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--components", action="store_true",
                        help="compare single components instead (rate limiter, cache)")
    parser.add_argument("--metrics", action="store_true",
                        help="the stack without and with Prometheus metrics, side by side")
    parser.add_argument("--least", action="store_true",
                        help="the floor, the stack and the least Python that does the "
                        "stack's work on a session read and an anonymous request "
                        "(bench/stacks/least.py), side by side (ASGI and gunicorn)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the middleware stacks of git revision REV, side by side")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs wrk and redis-server: run bench/run.sh, which installs them")
    sides = SIDE_CHOICES.get(args.side, [args.side])
    stacks = COMPONENT_STACKS if args.components else STACKS
    if sides == ["django"]:
        stacks = DJANGO_STACKS
    if args.metrics:
        stacks = METRICS_STACKS
    if args.least:
        stacks = LEAST_STACKS
        sides = [side for side in sides if side in ("asgi", "wsgi")]
    global _baseline_root
    if args.baseline:
        stacks = BASELINE_STACKS
    workloads = ["hello", "cached-item"] if args.components else list(WORKLOADS)
    if args.least:
        workloads = ["hello", "session-read"]
    if sides == ["django"]:
        workloads = ["hello", "session-read", "login"]
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args), "sides": {}}
    with ExitStack() as stack:
        if args.baseline:
            _baseline_root = Path(tempfile.mkdtemp(prefix="bench-base-")) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(_baseline_root),
                            args.baseline], cwd=HERE.parent, check=True)
            stack.callback(lambda: subprocess.run(
                ["git", "worktree", "remove", "--force", str(_baseline_root)],
                cwd=HERE.parent, check=False))
        redis_port, admin = start_redis(stack)
        for side in sides:
            report["sides"][side] = run_side(side, stacks, workloads, args, redis_port, admin)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    if args.baseline:
        print(render_baseline(report, args.baseline))
    elif sides == ["django"]:
        print(render_django(report))
    elif args.metrics:
        print(render_metrics(report))
    elif args.least:
        print(render_least(report))
    else:
        print(render_components(report) if args.components else render(report))
    return 0


def render_metrics(report: dict[str, Any]) -> str:
    """The stack with metrics off and on: requests/s and the ratio."""
    out = ["| Side | Workload | no middleware | stack | stack + metrics | metrics on / off |",
           "| --- | --- | --- | --- | --- | --- |"]
    for side, data in report["sides"].items():
        stacks = data["stacks"]
        for workload in WORKLOADS:
            rps = {s: stacks[s]["workloads"][workload]["rps"] for s in METRICS_STACKS}
            out.append(f"| {side} | {workload} | {rps['bare']:,.0f} | {rps['stack']:,.0f} | "
                       f"{rps['stack+metrics']:,.0f} | "
                       f"{rps['stack+metrics'] / rps['stack']:.2f}x |")
    return "\n".join(out)


def render_least(report: dict[str, Any]) -> str:
    """The floor, the stack and the least Python doing its work: requests/s, each's ratio
    to the floor, and the time each adds to a request over the floor (from the requests
    per second of one saturated worker: its CPU time per request, near enough)."""
    out = ["| Side | Workload | floor | stack | least Python | stack / floor | least / floor | "
           "added per request: stack, least |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for side, data in report["sides"].items():
        stacks = data["stacks"]
        for workload in ("session-read", "hello"):
            rps = {s: stacks[s]["workloads"][workload]["rps"] for s in LEAST_STACKS}
            added = {s: 1e6 / rps[s] - 1e6 / rps["floor"] for s in ("stack", "least")}
            out.append(f"| {side} | {workload} | {rps['floor']:,.0f} | {rps['stack']:,.0f} | "
                       f"{rps['least']:,.0f} | {rps['stack'] / rps['floor']:.2f}x | "
                       f"{rps['least'] / rps['floor']:.2f}x | {added['stack']:.0f} µs, "
                       f"{added['least']:.0f} µs |")
    return "\n".join(out)


def render_django(report: dict[str, Any]) -> str:
    """Django's session engines: requests/s, ratios, Redis (or SQLite) cost, memory."""
    stacks = report["sides"]["django"]["stacks"]
    out = ["| Workload | " + " | ".join(LABELS[s] for s in DJANGO_STACKS) +
           " | ours / db | ours / cache |", "| --- " * (len(DJANGO_STACKS) + 3) + "|"]
    for workload in ("hello", "session-read", "login"):
        rps = {s: stacks[s]["workloads"][workload]["rps"] for s in DJANGO_STACKS}
        out.append(f"| {workload} (req/s) | " + " | ".join(
            f"{rps[s]:,.0f}" for s in DJANGO_STACKS) +
            f" | {rps['django-ours'] / rps['django-db']:.2f}x"
            f" | {rps['django-ours'] / rps['django-cache']:.2f}x |")
    out += ["", "| Redis commands / round trips per request | " + " | ".join(
        LABELS[s] for s in DJANGO_STACKS) + " |", "| --- " * (len(DJANGO_STACKS) + 1) + "|"]
    for workload in ("session-read", "login"):
        out.append(f"| {workload} | " + " | ".join(
            f"{stacks[s]['workloads'][workload]['commands']:.2f} / "
            f"{stacks[s]['workloads'][workload]['round_trips']:.2f}" for s in DJANGO_STACKS)
            + " |")
    out.append("| Redis bytes per session (3 fields) | " + " | ".join(
        str(stacks[s]["session_memory"]["bytes"]) for s in DJANGO_STACKS) + " |")
    return "\n".join(out)


def render_components(report: dict[str, Any]) -> str:
    """Single components side by side: requests/s, ratio, Redis cost, and the server's
    ceiling (the app without middleware, on /hello)."""
    out = ["| Side (server) | Workload | Peer | Ours | Ours / peer | No middleware, /hello | "
           "Redis commands / round trips (peer vs ours) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for side, data in report["sides"].items():
        stacks = data["stacks"]
        ceiling = stacks["bare"]["workloads"]["hello"]["rps"]
        for kind, workload in (("ratelimit", "hello"), ("cache", "cached-item")):
            peer = stacks[f"peer-{kind}"]["workloads"][workload]
            ours = stacks[f"our-{kind}"]["workloads"][workload]
            out.append(
                f"| {side.upper()} ({data.get('server', '?')}) | {kind}: {workload} | "
                f"{peer['rps']:,.0f} | {ours['rps']:,.0f} | {ours['rps'] / peer['rps']:.2f}x | "
                f"{ceiling:,.0f} | "
                f"{peer['commands']:.2f} / {peer['round_trips']:.2f} vs "
                f"{ours['commands']:.2f} / {ours['round_trips']:.2f} |")
    return "\n".join(out)


def render_baseline(report: dict[str, Any], rev: str) -> str:
    """This checkout against ``rev``: both against the same peer stack, in the same run."""
    out = [f"| Side | Workload | peers | ours@{rev} | ours | stack@{rev} | stack | "
           "ours / peers (base, now) | stack / peers (base, now) | stack now / base |",
           "| --- " * 10 + "|"]
    for side, data in report["sides"].items():
        stacks = data["stacks"]
        for workload in WORKLOADS:
            rps = {s: stacks[s]["workloads"][workload]["rps"] for s in stacks}
            out.append(
                f"| {side} | {workload} | " + " | ".join(
                    f"{rps[s]:,.0f}" for s in ("peers", "ours@base", "ours", "stack@base",
                                                 "stack")) +
                f" | {rps['ours@base'] / rps['peers']:.2f}x, {rps['ours'] / rps['peers']:.2f}x"
                f" | {rps['stack@base'] / rps['peers']:.2f}x, "
                f"{rps['stack'] / rps['peers']:.2f}x | {rps['stack'] / rps['stack@base']:.2f}x |")
    return "\n".join(out)


def render(report: dict[str, Any]) -> str:
    """Markdown tables: throughput and ratios, latency, Redis cost, memory, TTLs."""
    out: list[str] = []
    for side, data in report["sides"].items():
        stacks = data["stacks"]
        out.append(f"### {side.upper()} ({data.get('server', '?')}) — peer stack: "
                   f"{data['peers']}\n")
        out.append("| Workload | " + " | ".join(LABELS[s] for s in stacks) +
                   " | stack / peers | stack / none | stack / floor |")
        out.append("| --- " * (len(stacks) + 4) + "|")
        for workload in WORKLOADS:
            rps = {s: stacks[s]["workloads"][workload]["rps"] for s in stacks}
            cells = [f"{rps[s]:,.0f}" for s in stacks]
            ratio = [f"{rps['stack'] / rps[o]:.2f}x" for o in ("peers", "bare", "floor")]
            out.append(f"| {workload} (req/s) | " + " | ".join(cells + ratio) + " |")
        out.append("")
        out.append("| Workload: p50 / p99 ms | " + " | ".join(LABELS[s] for s in stacks) + " |")
        out.append("| --- " * (len(stacks) + 1) + "|")
        for workload in WORKLOADS:
            cells = [f"{stacks[s]['workloads'][workload]['p50_ms']:.2f} / "
                     f"{stacks[s]['workloads'][workload]['p99_ms']:.2f}" for s in stacks]
            out.append(f"| {workload} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("| Workload: Redis commands / round trips per request | " +
                   " | ".join(LABELS[s] for s in stacks) + " |")
        out.append("| --- " * (len(stacks) + 1) + "|")
        for workload in WORKLOADS:
            cells = [f"{stacks[s]['workloads'][workload]['commands']:.2f} / "
                     f"{stacks[s]['workloads'][workload]['round_trips']:.2f}" for s in stacks]
            out.append(f"| {workload} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("| Workload: Redis CPU per request (µs, INFO cpu, main thread) | " +
                   " | ".join(LABELS[s] for s in stacks) + " |")
        out.append("| --- " * (len(stacks) + 1) + "|")
        for workload in WORKLOADS:
            cells = [f"{stacks[s]['workloads'][workload].get('redis_us', 0):.1f}"
                     for s in stacks]
            out.append(f"| {workload} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("| | " + " | ".join(LABELS[s] for s in stacks) + " |")
        out.append("| --- " * (len(stacks) + 1) + "|")
        out.append("| Redis bytes per session (3 fields) | " + " | ".join(
            str(stacks[s]["session_memory"]["bytes"]) for s in stacks) + " |")
        out.append("| Keys without a TTL | " + " | ".join(
            str(stacks[s]["keys_without_ttl"]) for s in stacks) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
