"""The demo in a real browser (headless Chromium from Debian's packages): load the pages,
log in through the form, watch the live feed announce a second user, keep a screenshot;
and the configuration page of the docs fits a 1280 px window."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support.browser import Browser, chromium

ROOT = Path(__file__).resolve().parent.parent
# Screenshots are kept here (or in $TEST_ARTIFACTS) for a person to look at.
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))

pytestmark = pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="no chromium (apt-get install chromium); CI installs it")


def test_the_demo_in_a_browser_with_its_live_feed(tmp_path: Path) -> None:
    from .support.servers import Served

    with Served(["examples.fastapi_app"], {"REDIS_URL": "memory://"},
                tmp_path / "demo.log") as srv:
        async def story() -> dict[str, Any]:
            page = await Browser().start()
            try:
                await page.goto(srv.base + "/")
                assert "Log in" in await page.evaluate("document.body.innerText")
                await page.evaluate(
                    "document.querySelector('input[name=username]').value = 'alice';"
                    "document.querySelector('form[action=\"/login\"]').submit()")
                await page.wait_for("location.pathname === '/profile'")
                profile = await page.evaluate("document.body.innerText")
                await page.goto(srv.base + "/online")
                await page.wait_for("document.getElementById('feed').textContent === 'live'")
                # A second user, in another session, logs in: the feed says so.
                with httpx.Client(base_url=srv.base, follow_redirects=True) as bob:
                    bob.post("/login", data={"username": "bob"})  # then /profile
                await page.wait_for("document.getElementById('events').innerText"
                                    ".includes('bob is online')")
                await page.wait_for("document.getElementById('users').innerText"
                                    ".includes('bob')")
                count = await page.evaluate("document.getElementById('count').textContent")
                await page.screenshot(ARTIFACTS / "demo-online.png")
                await page.goto(srv.base + "/products")
                products = await page.evaluate("document.body.innerText")
                return {"profile": profile, "count": count, "products": products}
            finally:
                await page.close()

        seen = asyncio.run(story())
    assert "alice" in seen["profile"] and "Visits" in seen["profile"]
    assert int(seen["count"]) >= 2
    assert "the same for everyone" in seen["products"]  # the cached page claims no user
    assert (ARTIFACTS / "demo-online.png").stat().st_size > 10_000
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def test_the_configuration_table_fits_1280_pixels(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir",
                    str(site)], cwd=ROOT, check=True)

    async def measure() -> tuple[int, int]:
        page = await Browser(width=1280).start()
        try:
            await page.goto((site / "configuration" / "index.html").as_uri())
            widths = await page.evaluate(
                "[Math.max(document.documentElement.scrollWidth, ...[...document"
                ".querySelectorAll('table')].map(t => t.getBoundingClientRect().right)),"
                " document.documentElement.clientWidth]")
            await page.screenshot(ARTIFACTS / "configuration-1280.png")
            return int(widths[0]), int(widths[1])
        finally:
            await page.close()

    scroll, client = asyncio.run(measure())
    assert scroll <= client <= 1280, (scroll, client)


def test_the_chat_page_leaves_the_room_when_left_and_sees_a_refusal_as_4401(
        redis_server: Any, tmp_path: Path) -> None:
    """A page left for another keeps running in the back/forward cache, socket open,
    unless it closes the socket itself: the user would stay in "Here now" for minutes.
    A socket the server refuses is closed with 4401, and the browser sees that code."""
    from redis_middleware.wsgi import Presence

    from .support.clients import SECRET, make_settings
    from .support.servers import Served

    settings = make_settings(redis_server.url, presence_ttl=8)  # a 2 s grace on leaving
    env = {"REDIS_URL": redis_server.url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET, "REDIS_MIDDLEWARE_PRESENCE_TTL": "8"}
    presence = Presence(settings)

    async def here(expected: bool) -> None:
        deadline = time.monotonic() + 8
        while ("alice" in presence.online_users(room="chat:lobby")) != expected:
            assert time.monotonic() < deadline, f"alice here: not {expected} in 8 s"
            await asyncio.sleep(0.2)

    with Served(["examples.fastapi_app"], env, tmp_path / "demo.log") as srv:
        async def story() -> int:
            page = await Browser().start()
            try:
                await page.goto(srv.base + "/")
                refused = await page.evaluate(  # not signed in yet
                    f"new Promise(done => new WebSocket('{srv.base.replace('http', 'ws')}"
                    "/ws/chat/lobby').onclose = (e) => done(e.code))")
                await page.evaluate(
                    "document.querySelector('input[name=username]').value = 'alice';"
                    "document.querySelector('form[action=\"/login\"]').submit()")
                await page.wait_for("location.pathname === '/profile'")
                await page.goto(srv.base + "/chat")
                await page.wait_for("document.getElementById('feed').textContent === 'live'")
                await here(True)
                await page.goto(srv.base + "/products")  # away: out of the room
                await here(False)
                await page.evaluate("history.back()")  # back: in the room again
                await page.wait_for("location.pathname === '/chat' && "
                                    "document.getElementById('feed').textContent === 'live'")
                await here(True)
                return int(refused)
            finally:
                await page.close()

        assert asyncio.run(story()) == 4401
    assert "Traceback" not in (tmp_path / "demo.log").read_text()
