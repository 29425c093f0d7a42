"""Server-rendered HTML shared by the FastAPI, Flask and Django examples (no build step),
and their stand-in for a database."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from html import escape
from pathlib import Path
from typing import Any, TypeVar

STYLE = """
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
nav a{margin-right:1rem} .box{border:1px solid #ddd;border-radius:6px;padding:1rem;margin:1rem 0}
code{background:#f4f4f4;padding:0 .2rem} li{margin:.2rem 0} .muted{color:#777}
"""

T = TypeVar("T")

PRODUCTS = {"1": "Teapot", "2": "Kettle", "3": "Mug"}


class Database:
    """The demos' database: a product table in an SQLite file, whose reads take a while
    and are counted (``queries``), so that what the data cache saves shows. Every worker
    process of a demo opens the same file, so a rename made by one is read by all, as
    with a real database server. The apps read it through ``DataCache.cached`` (key
    ``products:list``, tag ``products``) and invalidate the tag when a product is
    renamed."""

    LATENCY = 0.02  # seconds a query takes

    def __init__(self, path: str | None = None) -> None:
        """``path``: the SQLite file; ``$DEMO_DB`` by default, else one in the temporary
        folder. The tables are made, with the three products, when they are missing (at
        the first query too: a test may replace the file)."""
        self.path = path or os.environ.get("DEMO_DB") or str(
            Path(tempfile.gettempdir()) / "redis-middleware-demo-products.sqlite3")
        self._run(_create)

    def _run(self, query: Callable[[sqlite3.Connection], T]) -> T:
        # One connection per call: the demos call from several threads (Flask's and
        # Django's servers) and several processes; SQLite's own locking orders them.
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            try:
                return query(db)
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                _create(db)
                return query(db)

    @property
    def queries(self) -> int:
        """How many product queries the database answered, from every process."""
        return self._run(lambda db: int(db.execute("SELECT n FROM demo_queries").fetchone()[0]))

    def _select(self) -> dict[str, str]:
        def select(db: sqlite3.Connection) -> dict[str, str]:
            db.execute("UPDATE demo_queries SET n = n + 1")
            return dict(db.execute("SELECT id, name FROM demo_products ORDER BY id"))

        return self._run(select)

    def select_products(self) -> dict[str, str]:
        """``SELECT id, name FROM products``."""
        time.sleep(self.LATENCY)
        return self._select()

    async def aselect_products(self) -> dict[str, str]:
        """The same query on an async driver (here: SQLite in a worker thread)."""
        await asyncio.sleep(self.LATENCY)
        return await asyncio.to_thread(self._select)

    def rename(self, pid: str, name: str) -> None:
        """``UPDATE products SET name = ... WHERE id = ...`` (unknown ids change nothing,
        nor does an empty name)."""
        name = name.strip()[:40]
        if name:
            self._run(lambda db: db.execute(
                "UPDATE demo_products SET name = ? WHERE id = ?", (name, pid)))

    async def arename(self, pid: str, name: str) -> None:
        """:meth:`rename` on an async driver."""
        await asyncio.to_thread(self.rename, pid, name)

    async def aqueries(self) -> int:
        """:attr:`queries` on an async driver."""
        return await asyncio.to_thread(lambda: self.queries)


def _create(db: sqlite3.Connection) -> None:
    """The demo's tables and its three products (several workers may race here: each
    statement is idempotent)."""
    db.execute("CREATE TABLE IF NOT EXISTS demo_products "
               "(id TEXT PRIMARY KEY, name TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS demo_queries (n INTEGER NOT NULL)")
    db.executemany("INSERT OR IGNORE INTO demo_products VALUES (?, ?)", PRODUCTS.items())
    db.execute("INSERT INTO demo_queries SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM demo_queries)")


# The middleware options both examples use: a site-wide limit per user (or address), a
# strict fail-closed login limit per address, an API limit, and a cached product list.
OPTIONS: dict[str, Any] = {
    "limit": "300/minute",
    "key": "user_or_ip",
    "rules": {
        "/login": {"limit": "5/minute", "methods": ["POST"], "fail": "closed", "key": "ip"},
        "/api/*": "30/minute",
    },
    "exempt": ["/health"],
    "routes": {"/products": {"ttl": 30, "tags": ["products"]}},
}



def clock(epoch: float) -> str:
    """A readable UTC time (the pages show times, never raw epoch seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def page(title: str, body: str, user: str | None = None, shared: bool = False) -> str:
    """``shared``: the page is cached and served to everyone, so it says nothing about
    who is signed in (a cached "not signed in" would be wrong for a signed-in user)."""
    if shared:
        who = "this page is cached: the same for everyone"
    else:
        who = f"signed in as <b>{escape(user)}</b>" if user else "not signed in"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{STYLE}</style></head><body>
<nav><a href="/">Home</a><a href="/profile">Profile</a><a href="/products">Products</a>
<a href="/online">Who is online</a><a href="/api/ping">API</a></nav>
<p class="muted">{who}</p><h1>{escape(title)}</h1>{body}</body></html>"""


def unavailable() -> str:
    """The page a view answers when Redis cannot be reached (with a 503)."""
    return page("Temporarily unavailable", "<p>The session and presence store cannot be "
                "reached right now. Try again in a moment.</p>")


def home(user: str | None, chat_room: bool = False) -> str:
    """``chat_room``: the app has the chat (the FastAPI demo: WebSockets)."""
    if user:
        form = """<form method="post" action="/logout"><button>Log out</button></form>
<form method="post" action="/logout-everywhere"><button>Log out everywhere</button></form>"""
        if chat_room:
            form += '<p><a href="/chat">Open the chat room</a></p>'

    else:
        form = """<form method="post" action="/login"><input name="username" placeholder="name"
 required> <button>Log in</button></form>
<p class="muted">Login is limited to 5 attempts a minute (fail-closed: 503 if Redis is
down). Try it six times.</p>"""
    return page("redis-middleware demo", f"""<div class="box">{form}</div>
<p>Every request passes through <code>RedisMiddleware</code>: a session in a Redis hash,
rate limits (see the <code>X-RateLimit-*</code> headers), a cached product list
(<code>X-Cache: HIT</code>), and presence.</p>""", user)


def profile(user: str | None, visits: int, sessions: list[tuple[str, float, float]]) -> str:
    rows = "".join(
        f"<li><code>{escape(ref[:10])}…</code> created {clock(created)}, last seen "
        f"{clock(seen)}</li>"
        for ref, created, seen in sessions) or "<li>none</li>"
    return page("Profile", f"""<p>Visits to this page in this session: <b>{visits}</b></p>
<div class="box"><b>Your live sessions</b><ul>{rows}</ul></div>""", user)


def products(items: dict[str, str], rendered_at: float) -> str:
    rows = "".join(
        f"""<li>{escape(name)} <form style="display:inline" method="post" action="/products">
<input type="hidden" name="id" value="{pid}"><input name="name" value="{escape(name)}">
<button>Rename</button></form></li>""" for pid, name in items.items())
    return page("Products", f"""<p class="muted">Rendered at {clock(rendered_at)}: reload,
and the time stays the same while the page is served from the cache (look for
<code>X-Cache: HIT</code>). The list itself is read through the data cache
(<code>products:list</code>; <a href="/api/products">/api/products</a> counts the
database's queries). Renaming a product invalidates both.</p><ul>{rows}</ul>""",
                shared=True)


def online(users: list[str], count: int, user: str | None, live: bool = True) -> str:
    items = "".join(f"<li>{escape(u)}</li>" for u in users) or "<li>nobody</li>"
    listing = f"""<p><b id="count">{count}</b> online</p><ul id="users">{items}</ul>"""
    if not live:  # WSGI: no WebSocket; the page refreshes itself
        return page("Who is online", '<meta http-equiv="refresh" content="5">' + listing, user)
    return page("Who is online", listing + """<div class="box"><b>Live events</b>
<span id="feed" class="muted">connecting…</span><ul id="events"></ul></div>
<script>
const feed = document.getElementById("feed");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host
                         + "/ws/presence");
ws.onopen = () => { feed.textContent = "live"; };
ws.onclose = () => { feed.textContent = "disconnected: reload the page to reconnect"; };
ws.onmessage = (m) => {
  const e = JSON.parse(m.data);
  const li = document.createElement("li");
  li.textContent = `#${e.seq} ${e.user} is ${e.status} (${e.reason})`;
  document.getElementById("events").prepend(li);
  fetch("/api/online").then(r => r.json()).then(d => {
    document.getElementById("count").textContent = d.count;
    document.getElementById("users").innerHTML = d.users.map(u => "<li></li>").join("");
    [...document.getElementById("users").children].forEach((li, i) => li.textContent = d.users[i]);
  });
};
</script>""", user)


def chat(room: str, user: str, recent: list[tuple[str, str, float]], members: list[str]) -> str:
    """A chat room: its latest messages, who is here, and a live socket that reconnects
    from the last message it saw (the room is durable: nothing is missed meanwhile)."""
    lines = "".join(f"<li><b>{escape(who)}</b> <span class='muted'>{clock(ts)}</span> "
                    f"{escape(text)}</li>" for who, text, ts in recent)
    here = "".join(f"<li>{escape(m)}</li>" for m in members)
    return page(f"Chat: {room}", f"""<div class="box"><b>Here now</b> <span id="feed"
class="muted">connecting…</span><ul id="members">{here}</ul></div>
<ul id="messages">{lines}</ul>
<form id="say"><input id="text" autocomplete="off" placeholder="say something" maxlength="500"
 required> <button>Send</button></form>
<script>
const room = {json.dumps(room)};
const feed = document.getElementById("feed");
let since = "", socket = null, left = false;
function add(html) {{
  const li = document.createElement("li"); li.innerHTML = html;
  document.getElementById("messages").append(li);
}}
function text(s) {{
  const d = document.createElement("span"); d.textContent = s; return d.innerHTML;
}}
function members() {{
  fetch(`/api/chat/${{room}}/members`).then(r => r.json()).then(d => {{
    document.getElementById("members").innerHTML =
      d.members.map(m => `<li>${{text(m)}}</li>`).join("");
  }});
}}
function connect() {{
  if (socket || left) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = `${{scheme}}${{location.host}}/ws/chat/${{room}}?since=${{since}}`;
  const s = socket = new WebSocket(url);
  s.onopen = () => {{ feed.textContent = "live"; members(); }};
  s.onclose = (e) => {{
    if (socket !== s) return;  // closed when the page was left
    socket = null;
    if (e.code === 4401) {{ feed.textContent = "signed out"; return; }}
    feed.textContent = "reconnecting…"; setTimeout(connect, 1000);
  }};
  s.onmessage = (m) => {{
    const e = JSON.parse(m.data);
    if (e.type === "gap") {{ add('<i class="muted">some messages may be missing</i>'); return; }}
    since = e.id || since;
    if (e.data.presence) {{
      const did = e.data.presence === "online" ? "joined" : "left";
      add(`<i class="muted">${{text(e.data.user)}} ${{did}}</i>`);
      members();
    }} else {{
      add(`<b>${{text(e.data.user)}}</b> ${{text(e.data.text)}}`);
    }}
  }};
}}
document.getElementById("say").onsubmit = (ev) => {{
  ev.preventDefault();
  const box = document.getElementById("text");
  if (socket && socket.readyState === 1) {{ socket.send(box.value); box.value = ""; }}
}};
// Leaving the page closes the socket, even when the browser keeps the page in its
// back/forward cache (where it would stay open, and the user "here", for minutes);
// coming back from that cache reconnects, from the last message seen.
addEventListener("pagehide", () => {{
  left = true;
  const s = socket; socket = null;
  if (s) s.close(1000, "left the page");
}});
addEventListener("pageshow", (e) => {{ if (e.persisted) {{ left = false; connect(); }} }});
connect();
</script>""", user)
