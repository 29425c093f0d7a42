"""The stack's own cost per request in CPU instructions: exact, whatever the machine does.

    python bench/request_instructions.py [--requests 800] [--browser]

``bench/request_overhead.py`` times requests; on a shared machine its runs differ by more
than most changes to the request path. This counts instead: each case of that bench
(the floor, the stack signed in, anonymous and serving a cached route's entry, one part
alone; on ASGI also the least Python doing the stack's work, ``bench/stacks/least.py``)
runs in a process of its own under ``valgrind --tool=callgrind`` (Debian's
``valgrind``), which counts the instructions the process executes between two points:
after a warm-up (scripts loaded, memos filled) and after ``--requests`` more requests.
Two runs, of N and 2N requests, are subtracted, so that what the process does once
(imports, start, shutdown) drops out: what remains is instructions per request, the
same on every run of the same code within about 1% (the presence sweep, due every 10 s
of wall time, falls into the counted requests more or less often as the machine is
busier). The redis-server's work is not counted (another process);
the kernel's neither (user-mode instructions only).

``--browser`` adds nine headers a browser sends (twelve in all, ``Accept-Language``,
``Sec-Fetch-*``...) to every request. Two checkouts compare by running this file under
each (``PYTHONPATH=<tree>``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if not os.environ.get("PYTHONPATH"):  # else the checkout it names is measured
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import request_overhead as bench

CASES = [("floor", None), ("stack", "signed in"), ("stack", "anonymous"),
         ("stack", "cached hit"),  # /item/1, a cached route's entry served (anonymous)
         ("rate limit alone", "anonymous"), ("sessions alone", "signed in"),
         # ASGI only: the least Python doing the stack's work (bench/stacks/least.py)
         ("least", "signed in"), ("least", "anonymous")]
BROWSER = [("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
           ("accept-language", "en-US,en;q=0.5"), ("accept-encoding", "gzip, deflate, br"),
           ("referer", "https://example.com/page"), ("sec-fetch-dest", "document"),
           ("sec-fetch-mode", "navigate"), ("sec-fetch-site", "same-origin"),
           ("upgrade-insecure-requests", "1"), ("cache-control", "max-age=0")]


def with_browser_headers() -> None:
    """Every request the bench builds carries :data:`BROWSER` too."""
    scope, environ = bench.scope, bench.environ

    def browser_scope(path: str, cookie: str | None) -> dict[str, Any]:
        built = scope(path, cookie)
        built["headers"] = [*built["headers"], *((k.encode(), v.encode()) for k, v in BROWSER)]
        return built

    def browser_environ(path: str, cookie: str | None) -> dict[str, Any]:
        built = environ(path, cookie)
        built.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in BROWSER})
        return built

    bench.scope, bench.environ = browser_scope, browser_environ  # type: ignore[assignment]


def child(side: str, stack: str, who: str, url: str, requests: int) -> None:
    """Run in the counted process: build, warm, then count ``requests`` requests."""
    import uvloop

    from redis_middleware import Settings, asgi, wsgi

    if os.environ.get("BENCH_BROWSER"):
        with_browser_headers()
    app_of = bench.asgi_app if side == "asgi" else bench.wsgi_app
    settings = Settings(redis_url=url, secret_key=(bench.SECRET,), key_prefix=f"i{side}",
                        **bench.STACKS.get(stack, {}))
    app: Any
    if stack == "least":
        sys.path.insert(0, str(Path(__file__).resolve().parent / "stacks"))
        from least import Least

        app = Least(asgi.RedisMiddleware(app_of, settings, limit=bench.LIMIT, key="ip",
                                         routes={"/item/{id}": 60}))
    elif stack == "floor":
        app = (bench.AsgiFloor if side == "asgi" else bench.WsgiFloor)(app_of, settings)
    else:
        module = asgi if side == "asgi" else wsgi
        app = module.RedisMiddleware(app_of, settings, limit=bench.LIMIT, key="ip",
                                     routes={"/item/{id}": 60})
    loop = uvloop.new_event_loop()
    cookie = None
    if who == "signed in" and side == "asgi":
        cookie = bench.cookie_of(loop.run_until_complete(
            bench.asgi_call(app, "/login", None))[0]["headers"])
    elif who == "signed in":
        cookie = bench.cookie_of(bench.wsgi_call(app, "/login", None)[1])

    path = "/item/1" if who == "cached hit" else "/me"

    def run(n: int) -> None:  # as request_overhead.py: 16 in flight on ASGI
        if side == "wsgi":
            for _ in range(n):
                bench.wsgi_call(app, path, cookie)
            return

        async def worker(k: int) -> None:
            for _ in range(k):
                await bench.asgi_call(app, path, cookie)

        async def many() -> None:
            await asyncio.gather(*(worker(n // 16) for _ in range(16)))

        loop.run_until_complete(many())

    run(320)
    counting = ["callgrind_control", "--instr=on", str(os.getpid())]
    subprocess.run(counting, check=True, capture_output=True)
    run(requests)
    counting[1] = "--instr=off"
    subprocess.run(counting, check=True, capture_output=True)
    loop.close()


def counted(side: str, stack: str, who: str, url: str, requests: int) -> int:
    """Instructions of ``requests`` requests (and the counting's own fixed cost)."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, __file__, "--child", side,
             stack, who or "", url, str(requests)],
            check=True, capture_output=True)
        found = re.search(r"^totals: (\d+)", out.read_text(), re.M)
        if found is None:
            raise SystemExit(f"no totals in {out}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--browser", action="store_true",
                        help="twelve headers a browser sends on every request")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, stack, who, url, n = args.child
        child(side, stack, who, url, int(n))
        return
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install valgrind)")
    if args.browser:
        os.environ["BENCH_BROWSER"] = "1"
    proc, url, workdir = bench.start_server()
    try:
        print("| Side | Stack | Instructions per request | over the floor |")
        print("| --- | --- | --- | --- |")
        for side in ("asgi", "wsgi"):
            floor = 0
            for stack, who in CASES:
                if stack == "least" and side != "asgi":
                    continue
                n = args.requests
                per = (counted(side, stack, who or "", url, 2 * n)
                       - counted(side, stack, who or "", url, n)) // n
                floor = per if stack == "floor" else floor
                label = stack if who is None else f"{stack}, {who}"
                print(f"| {side} | {label} | {per:,} | {per - floor:+,} |", flush=True)
    finally:
        bench.stop_server(proc, workdir)


if __name__ == "__main__":
    main()
