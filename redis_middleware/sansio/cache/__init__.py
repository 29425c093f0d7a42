"""The response cache's decisions (RFC 9111 for a shared cache), without I/O.

``core`` plans a request and holds the flows, ``entry`` the values, ``scripts`` the Lua
scripts, ``serve`` the rules of serving a stored response, ``capture`` the following of
a computed one, and ``cache_control``, ``freshness`` and ``http_dates`` HTTP's fields.
"""

from .capture import Capture
from .core import CacheCore
from .entry import (
    CONDITIONAL,
    CachePlan,
    Entry,
    Lookup,
    Resolved,
    SessionUse,
    Verdict,
    encode_headers,
)
from .serve import byte_range

__all__ = ["CONDITIONAL", "CacheCore", "CachePlan", "Capture", "Entry", "Lookup", "Resolved",
           "SessionUse", "Verdict", "byte_range", "encode_headers"]
