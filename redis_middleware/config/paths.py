"""The path rules are matched against: every spelling a framework routes to one handler
becomes one string.

Frameworks route more spellings to a handler than its path: Werkzeug merges repeated
slashes (``//limited`` reaches ``/limited``), Starlette and Django redirect a missing or
extra trailing slash, and clients or proxies may send dot segments. Rate-limit rules,
exempt patterns and cache routes are matched against :func:`route_path`, so none of
those spellings escapes the rule written for the handler. The cache *key* keeps the
path as sent: two spellings share a stored response only if the app said so by
answering them the same way.

``route_path`` merges repeated slashes, resolves ``.`` and ``..`` segments (RFC 3986
5.2.4; never above the root), and drops one trailing slash. Percent-decoding is the
server's job (ASGI ``path`` and WSGI ``PATH_INFO`` arrive decoded); a decoded ``/``
(from ``%2F``) is a separator here too, which can only make more spellings match a rule.
"""

from __future__ import annotations

from .._memo import memoized

__all__ = ["route_path"]


@memoized(8192)
def route_path(path: str) -> str:
    """The canonical spelling of ``path`` for matching rules (always starts with ``/``)."""
    if "//" not in path and "/." not in path and (len(path) < 2 or path[-1] != "/") and (
            path[:1] == "/"):
        return path  # the common case: already canonical
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)
