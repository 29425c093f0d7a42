"""The path rules are matched against: every spelling a framework routes to one handler
becomes one string.

Frameworks route more spellings to a handler than its path: Werkzeug merges repeated
slashes (``//limited`` reaches ``/limited``), and Starlette and Django redirect a missing
or extra trailing slash. Rate-limit rules, exempt patterns and cache routes are matched
against :func:`route_path`, so none of those spellings escapes the rule written for the
handler. The cache *key* keeps the path as sent: two spellings share a stored response
only if the app said so by answering them the same way.

``route_path`` merges repeated slashes and drops one trailing slash. Dot segments stay
as they are: no router resolves them (Starlette, Werkzeug and Django route
``/api/../login`` to ``/api/{path}``, and ``/x/../login`` to no handler), so resolving
them here would match ``/api/../login`` against the rule of ``/login`` while the handler
of ``/api/*`` answers it, and ``/files/../health`` against an exempt ``/health``. A
proxy that resolves them does so before the app sees the path. Percent-decoding is the
server's job (ASGI ``path`` and WSGI ``PATH_INFO`` arrive decoded); a decoded ``/``
(from ``%2F``) is a separator here too, which can only make more spellings match a rule.
"""

from __future__ import annotations

from .._memo import memoized

__all__ = ["route_path"]


@memoized(8192)
def route_path(path: str) -> str:
    """The canonical spelling of ``path`` for matching rules (always starts with ``/``)."""
    if "//" not in path and (len(path) < 2 or path[-1] != "/") and path[:1] == "/":
        return path  # the common case: already canonical
    return "/" + "/".join([segment for segment in path.split("/") if segment])
