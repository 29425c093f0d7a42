"""An httpx transport that calls a WSGI app in-process, decoding headers as latin-1.

httpx's own WSGITransport decodes header values as ASCII, so it cannot send the
binary-ish headers that hostile-input tests need; PEP 3333 says latin-1.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import httpx


class WSGITransport(httpx.BaseTransport):
    def __init__(self, app: Any, remote_addr: str = "127.0.0.1") -> None:
        self.app = app
        self.remote_addr = remote_addr

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        url = request.url
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": url.raw_path.split(b"?", 1)[0].decode("latin-1"),
            "QUERY_STRING": url.query.decode("latin-1"),
            "SERVER_NAME": url.host,
            "SERVER_PORT": str(url.port or (443 if url.scheme == "https" else 80)),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.remote_addr,
        }
        for raw_key, raw_value in request.headers.raw:
            key = raw_key.decode("latin-1").upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            value = raw_value.decode("latin-1")
            environ[key] = f"{environ[key]}, {value}" if key in environ else value
        from urllib.parse import unquote_to_bytes

        environ["PATH_INFO"] = unquote_to_bytes(environ["PATH_INFO"]).decode("latin-1")
        seen: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            seen["status"], seen["headers"] = status, headers
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return httpx.Response(
            int(seen["status"].split(" ", 1)[0]),
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in seen["headers"]],
            content=content,
        )
