"""What a server in front does to the client address the per-IP limit counts by: uvicorn
rewrites ``scope["client"]`` from ``X-Forwarded-For`` when the peer is in
``--forwarded-allow-ips`` (127.0.0.1 by default), before the middleware sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support.clients import make_settings
from .support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.real_redis


def _serve(redis_url: str, tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    settings = make_settings(redis_url)
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX":
           settings.key_prefix, "REDIS_MIDDLEWARE_SECRET_KEY": settings.secret_key[0],
           "PYTHONPATH": str(ROOT)}
    env.pop("FORWARDED_ALLOW_IPS", None)
    with (tmp_path / f"uvicorn-{port}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "tests.support.proxy_app:app",
                                 "--port", str(port), "--log-level", "warning", *flags],
                                env=env, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            httpx.get(url + "/warm", headers={"x-forwarded-for": "192.0.2.250"})
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("uvicorn did not start")


def _spoofing(url: str) -> list[tuple[int, str]]:
    """Six requests from 127.0.0.1, each claiming another client address."""
    out = []
    for i in range(6):
        response = httpx.get(url + "/", headers={"x-forwarded-for": f"203.0.113.{i}"})
        out.append((response.status_code, response.text))
    return out


@pytest.mark.parametrize("flags", [(), ("--no-proxy-headers",)], ids=["default", "no-proxy"])
def test_uvicorn_proxy_headers_decide_the_client(redis_server: Any, tmp_path: Path,
                                                 flags: tuple[str, ...]) -> None:
    proc, url = _serve(redis_server.url, tmp_path, *flags)
    try:
        answers = _spoofing(url)
    finally:
        proc.terminate()
        proc.wait(10)
    if flags:
        # uvicorn leaves the socket peer alone: one bucket, 3 allowed (warm-up included).
        assert [s for s, _ in answers] == [200, 200, 429, 429, 429, 429]
        assert {t for s, t in answers if s == 200} == {"127.0.0.1"}
    else:
        # uvicorn trusts 127.0.0.1 and takes each claimed address as the client: every
        # request gets its own bucket. Behind no trusted proxy, this is a bypass.
        assert answers == [(200, f"203.0.113.{i}") for i in range(6)]
