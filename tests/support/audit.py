"""The keyspace audit: every key a test leaves has its prefix, a known component and a
TTL."""

from __future__ import annotations

from redis_middleware import Settings

from .clients import raw_client

KEY_RE_COMPONENTS = ("session", "ratelimit", "cache", "presence", "realtime", "data")


def audit_keyspace(settings: Settings) -> list[str]:
    """Every key of this test's prefix has a TTL and a known component; return the keys."""
    client = raw_client(settings)
    try:
        keys = sorted({k.decode() for k in client.scan_iter(match=f"{settings.key_prefix}:*")})
        for key in keys:
            component = key.split(":")[1]
            assert component in KEY_RE_COMPONENTS, f"key {key!r} outside the component namespaces"
            assert client.ttl(key) != -1, f"key {key!r} has no TTL"
        return keys
    finally:
        client.close()
