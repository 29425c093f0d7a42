"""Parse and validate ``REDIS_URL`` once, at settings construction.

redis-py's own parser checks a single server's URL; it is imported when such a URL is
parsed, not with this module, so configuration (and the core, which reads it) imports
no redis-py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

Kind = Literal["memory", "standalone", "sentinel", "cluster"]

SCHEMES: dict[str, Kind] = {
    "memory": "memory",
    "redis": "standalone",
    "rediss": "standalone",
    "unix": "standalone",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
}

_TLS_QUERY = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is, as decided from the URL: what the connection factory needs."""

    kind: Kind
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: dict[str, Any] = field(default_factory=dict)


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise ValueError("empty host in host list")
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        if not host:
            raise ValueError(f"missing host in {part!r}")
        port = int(port_text) if port_text else default_port
        if not 0 < port < 65536:
            raise ValueError(f"port out of range in {part!r}")
        hosts.append((host, port))
    return tuple(hosts)


def _tls_options(query: str) -> dict[str, Any]:
    """The TLS options of a Sentinel or Cluster URL; any other option is refused (these
    URLs are not passed to redis-py whole, so an unknown option would be silently lost)."""
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - set(_TLS_QUERY))
    if unknown:
        raise ValueError(f"unsupported URL option(s) {', '.join(unknown)}; a Sentinel or "
                         f"Cluster URL takes only {', '.join(_TLS_QUERY)}")
    out: dict[str, Any] = {}
    for name in _TLS_QUERY:
        if name in params:
            value: Any = params[name][-1]
            if name == "ssl_check_hostname":
                value = value.lower() in {"1", "true", "yes"}
            out[name] = value
    return out


def parse_redis_url(url: str) -> RedisTarget:
    """Validate ``url``; raise ValueError with a reason (never echoing a password)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError("not a URL (expected scheme://...)")
    kind = SCHEMES.get(scheme.lower())
    if kind is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {known}")
    if kind == "memory":
        return RedisTarget(kind="memory", url=url)
    if kind == "standalone":
        from redis.connection import parse_url

        options = parse_url(url)  # type: ignore[no-untyped-call] # redis-py's own parser: raises ValueError when malformed
        if scheme != "unix" and not urlsplit(url).hostname:
            raise ValueError("missing host")
        if scheme == "unix" and not options.get("path"):
            raise ValueError("missing socket path")
        return RedisTarget(kind="standalone", url=url, tls=scheme == "rediss")
    # Sentinel and cluster URLs name several hosts, which urlsplit cannot parse.
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user_text, has_colon, pass_text = auth.partition(":")
        username = unquote(user_text) or None
        password = unquote(pass_text) if has_colon else None
        if not has_colon:  # "secret@host": a bare token is a password, as in limits
            username, password = None, unquote(user_text)
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = _hosts(netloc, default_port)
    service_name, db = "", 0
    parts = [p for p in path.split("/") if p]
    if kind == "sentinel":
        if not parts:
            raise ValueError("missing service name (redis+sentinel://host:port/service_name)")
        service_name = unquote(parts[0])
        if len(parts) > 1:
            db = int(parts[1])
    elif parts:
        raise ValueError("a cluster URL takes no path (Redis Cluster has only database 0)")
    return RedisTarget(
        kind=kind,
        url=url,
        hosts=hosts,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        tls=scheme.startswith("rediss"),
        tls_options=_tls_options(query),
    )


def mask_url(url: str) -> str:
    """Hide the password in a URL for logs and repr."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", re.sub(r"://[^:/@]+@", "://***@", url))
