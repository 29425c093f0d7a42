"""``redis-middleware``: the operators' command line.

    redis-middleware check                      validate settings, reach Redis, warn
    redis-middleware sessions list --user ID    a user's live sessions
    redis-middleware sessions revoke --user ID [--ref REF]
    redis-middleware online [--room R] [--limit N]
    redis-middleware cache purge (--url U | --tag T | --all)
    redis-middleware ratelimit (show|reset) --key ip:1.2.3.4
    redis-middleware config                     the settings reference (markdown)

Settings come from the environment, as in the app. ``--json`` prints JSON.
Exit codes: 0 success, 1 Redis failed or a check found a problem, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, RedisMiddlewareError
from .sansio.flow import Call, Flow
from .settings import Settings, _mask_url

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redis-middleware", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate settings, ping Redis, warn about risky setups")
    sessions = sub.add_parser("sessions", help="list or revoke a user's sessions")
    sessions.add_argument("action", choices=["list", "revoke"])
    sessions.add_argument("--user", required=True)
    sessions.add_argument("--ref", help="revoke only this session (default: all)")
    online = sub.add_parser("online", help="who is online")
    online.add_argument("--room", default="")
    online.add_argument("--limit", type=int, default=100)
    cache = sub.add_parser("cache", help="purge stored responses")
    cache.add_argument("action", choices=["purge"])
    target = cache.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a path, with its query string if any")
    target.add_argument("--tag")
    target.add_argument("--all", action="store_true")
    ratelimit = sub.add_parser("ratelimit", help="show or reset an identity's counters")
    ratelimit.add_argument("action", choices=["show", "reset"])
    ratelimit.add_argument("--key", required=True, help="ip:ADDRESS, user:ID or custom:VALUE")
    sub.add_parser("config", help="print the settings reference table (markdown)")
    return parser


def _info_flow() -> Flow[tuple[Any, Any]]:
    info, policy = yield (Call.of("INFO", "server"), Call.of("CONFIG", "GET", "maxmemory-policy"))
    return info, policy


def _check(settings: Settings) -> tuple[dict[str, Any], int]:
    from ._redis.connections import connections_for
    from ._redis.endpoint import too_old

    report: dict[str, Any] = {"redis_url": _mask_url(settings.redis_url),
                              "key_prefix": settings.key_prefix, "warnings": []}
    warnings: list[str] = report["warnings"]
    if settings.target.kind == "memory":
        warnings.append("REDIS_URL is memory://: every process has its own data, so sessions, "
                        "limits and presence are not shared between workers")
        return report, 0
    conns = connections_for(settings)
    try:
        conns.run(_ping())
    except RedisMiddlewareError as exc:
        report["error"] = f"Redis is unreachable: {exc}"
        return report, 1
    try:
        info, policy = conns.run(_info_flow())
        report["redis_version"] = info.get("redis_version") if isinstance(info, dict) else None
        old = too_old({"version": str(report["redis_version"] or "")})
        if old is not None:
            report["error"] = f"the server is {old}: redis-middleware needs Redis 6.2 or newer"
            return report, 1
        value = policy.get(b"maxmemory-policy") or policy.get("maxmemory-policy") if isinstance(
            policy, dict) else None
        name = value.decode() if isinstance(value, bytes) else value
        report["maxmemory_policy"] = name
        if name and name != "noeviction":
            warnings.append(
                f"maxmemory-policy is {name}: under memory pressure Redis may evict sessions "
                "and rate-limit counters (every key has a TTL). Use noeviction with enough "
                "memory, or a separate Redis for the cache")
    except RedisMiddlewareError as exc:  # managed Redis often forbids CONFIG
        report["maxmemory_policy"] = None
        warnings.append(f"could not read maxmemory-policy ({exc}); check it in your provider")
    return report, 0


def _ping() -> Flow[bool]:
    (pong,) = yield (Call.of("PING"),)
    return bool(pong)


def _run(args: argparse.Namespace, settings: Settings) -> tuple[Any, int]:
    from .wsgi import Cache, Presence, RateLimiter, SessionStore

    if args.command == "check":
        return _check(settings)
    if args.command == "sessions":
        store = SessionStore(settings)
        if args.action == "list":
            return [dataclasses.asdict(s) for s in store.list(args.user)], 0
        if args.ref:
            return {"revoked": int(store.revoke(args.user, args.ref))}, 0
        return {"revoked": store.revoke_all(args.user)}, 0
    if args.command == "online":
        presence = Presence(settings)
        return {"count": presence.online_count(room=args.room),
                "users": presence.online_users(room=args.room, limit=args.limit)}, 0
    if args.command == "cache":
        cache = Cache(settings)
        if args.all:
            return {"purged": cache.purge_all()}, 0
        if args.tag:
            return {"purged": cache.purge_tag(args.tag)}, 0
        path, _, query = args.url.partition("?")
        return {"purged": cache.purge_url(path, query)}, 0
    limiter = RateLimiter(settings)
    if args.action == "show":
        usage = limiter.usage(args.key)
        return {rule: [dataclasses.asdict(u) for u in items] for rule, items in usage.items()}, 0
    return {"reset": limiter.reset(args.key)}, 0


def _human(value: Any, indent: str = "") -> str:
    if isinstance(value, dict) and not value:
        return f"{indent}(none)"
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}{key}:")
                lines.append(_human(item, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {item if item not in (None, []) else '-'}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(f"{indent}- " + (_human(v, indent + "  ").lstrip() if isinstance(
            v, (dict, list)) else str(v)) for v in value) or f"{indent}(none)"
    return f"{indent}{value}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        from ._reference import settings_table

        print(settings_table())
        return 0
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        result, code = _run(args, settings)
    except RedisMiddlewareError as exc:
        print(f"Redis error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str) if args.json else _human(result))
    return code
