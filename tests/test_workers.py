"""Several real worker processes (uvicorn and gunicorn, 4 workers) against one Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support.clients import SECRET, make_settings, raw_client
from .support.servers import free_port

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["uvicorn", "gunicorn"])
def workers(request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path) -> Any:
    settings = make_settings(redis_server.url)
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_server.url, "REDIS_MIDDLEWARE_SECRET_KEY": SECRET,
           "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix, "PYTHONPATH": str(ROOT)}
    if request.param == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "tests.support.worker_app:asgi", "--workers", "4",
               "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "gunicorn", "-w", "4", "-k", "gthread", "--threads", "4",
               "-b", f"127.0.0.1:{port}", "--log-level", "warning", "tests.support.worker_app:wsgi"]
    ready = tmp_path / "ready"
    ready.mkdir()
    env["WORKER_READY_DIR"] = str(ready)
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        # Wait for the four workers to have loaded the app, then for one to answer
        # (asking until four answer can take long: a shared listening socket can hand
        # nearly every connection to the same worker).
        deadline = time.monotonic() + 30
        while len(list(ready.iterdir())) < 4:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        while True:
            try:
                fresh_get(url + "/get").raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield url, settings
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fresh_get(url: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client() as client:  # a new connection per request: spread over workers
        return client.get(url, **kwargs)


def test_rate_limit_is_exact_across_workers(workers: Any) -> None:
    url, _ = workers
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: fresh_get(url + "/hit"), range(60)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20 and statuses.count(429) == 40
    assert len({r.json()["pid"] for r in responses if r.status_code == 200}) >= 2


def test_session_written_by_one_worker_is_read_by_another(workers: Any) -> None:
    url, _ = workers
    with httpx.Client() as client:
        client.get(url + "/login")
        cookie = client.cookies["session"]
    seen = set()
    # Concurrent reads: sequential ones may all be accepted by one idle worker.
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: fresh_get(
            url + "/get", headers={"cookie": f"session={cookie}"}).json(), range(40)))
    for body in bodies:
        assert body["session"] == {"user_id": "worker-user"}
        seen.add(body["pid"])
    assert len(seen) >= 2


def test_stampede_guard_holds_across_workers(workers: Any) -> None:
    url, _ = workers
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: fresh_get(url + "/slow"), range(12)))
    assert all(r.status_code == 200 for r in responses)
    assert {r.json()["calls"] for r in responses} == {1}


def test_stale_while_revalidate_refreshes_once_across_workers(workers: Any) -> None:
    """RFC 5861 3 with several processes: every request after expiry is answered from the
    stale entry without waiting, and exactly one background refresh runs. The refresh
    takes 1 s and the entry is fresh for 2 s, so that a busy machine still asks each
    round of 12 within those windows (the clients, a new connection each, are made
    before)."""
    url, _ = workers
    assert fresh_get(url + "/swr").json()["calls"] == 1

    def twelve(clients: list[httpx.Client]) -> list[httpx.Response]:
        try:
            with ThreadPoolExecutor(12) as pool:
                return list(pool.map(lambda c: c.get(url + "/swr"), clients))
        finally:
            for client in clients:
                client.close()

    first, second = [httpx.Client() for _ in range(12)], [httpx.Client() for _ in range(12)]
    time.sleep(2.2)
    stale = twelve(first)
    assert {(r.status_code, r.json()["calls"]) for r in stale} == {(200, 1)}
    assert {r.headers["x-cache"] for r in stale} == {"STALE"}
    deadline = time.monotonic() + 10
    calls = 1
    with httpx.Client() as poll:  # one connection, kept: asking costs no new client
        while calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            calls = poll.get(url + "/swr").json()["calls"]
    assert calls == 2
    assert {r.json()["calls"] for r in twelve(second)} == {2}  # refreshed once, by one worker


def test_presence_online_once_across_workers(workers: Any) -> None:
    url, settings = workers
    client = raw_client(settings)
    pubsub = client.pubsub()
    pubsub.subscribe(f"{settings.key_prefix}:presence:events")
    pubsub.get_message(timeout=1)
    with httpx.Client() as http:
        http.get(url + "/login")
        cookie = http.cookies["session"]

    def browse(_: int) -> None:
        for _ in range(5):
            fresh_get(url + "/get", headers={"cookie": f"session={cookie}"})
            time.sleep(0.05)

    threads = [threading.Thread(target=browse, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = []
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            events.append(json.loads(message["data"]))
    pubsub.close()
    client.close()
    assert [(e["user"], e["status"]) for e in events] == [("worker-user", "online")]


def test_a_login_overlapping_a_slow_request_logs_nobody_out(workers: Any) -> None:
    """An SPA's slow API call, sent with the old cookie, overlaps the login: its write
    lands in the logged-in session, and its response sets no cookie that undoes the login
    (several workers, so the two requests run in different processes)."""
    url, _ = workers
    with httpx.Client(base_url=url) as browser:
        browser.get("/put?a=1")
        old = browser.cookies["session"]
        slow: dict[str, Any] = {}

        def slow_call() -> None:
            with httpx.Client(base_url=url) as other:
                slow["response"] = other.get("/slowput?b=2",
                                             headers={"cookie": f"session={old}"})

        thread = threading.Thread(target=slow_call)
        thread.start()
        time.sleep(0.25)  # the slow request has loaded the old id by now
        login = fresh_get(url + "/login", headers={"cookie": f"session={old}"})
        new = login.cookies["session"]
        thread.join()
        response = slow["response"]
        assert response.status_code == 200
        assert "set-cookie" not in response.headers  # nothing that undoes the login
        body = fresh_get(url + "/get", headers={"cookie": f"session={new}"}).json()
        assert body["session"] == {"a": "1", "b": "2", "user_id": "worker-user"}
        replay = fresh_get(url + "/get", headers={"cookie": f"session={old}"}).json()
        assert replay["session"] == {}  # the old id never loads again (fixation)
