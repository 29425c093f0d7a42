"""A WSGI app called directly, as a server calls it: what it returns is kept as it is
(the iterable itself reaches the test), and every start is recorded."""

from __future__ import annotations

import io
from typing import Any


class Called:
    """One call: ``result`` is what the app returned; ``starts`` fills in as it starts
    (a lazy body may start again while it is read)."""

    def __init__(self, app: Any, path: str, cookie: str | None, extra: dict[str, Any]) -> None:
        self.starts: list[tuple[str, dict[str, str]]] = []
        environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
                   "QUERY_STRING": "", "SERVER_NAME": "test", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.9",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), **extra}
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        self.result = app(environ, self._start)

    def _start(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.starts.append((status, dict(headers)))
        return lambda data: None

    def read(self) -> bytes:
        """The whole body; the iterable is closed after, as a server closes it."""
        try:
            return b"".join(self.result)
        finally:
            getattr(self.result, "close", lambda: None)()

    @property
    def status(self) -> str:
        return self.starts[-1][0]

    @property
    def headers(self) -> dict[str, str]:
        return self.starts[-1][1]


def call(app: Any, path: str, cookie: str | None = None, **extra: Any) -> Called:
    """Call ``app`` for a GET of ``path`` (``extra``: more environ keys)."""
    return Called(app, path, cookie, extra)
