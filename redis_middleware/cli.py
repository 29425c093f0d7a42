"""``redis-middleware``: the operators' command line (``docs/cli.md``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .config.identity import IDENTITIES, check_identity
from .config.settings import Settings
from .config.urls import mask_url as _mask_url
from .errors import ConfigError, RedisMiddlewareError
from .sansio.flow import Call, Flow

__all__ = ["main"]

DESCRIPTION = """\
Operate redis-middleware: check the Redis it uses, list and revoke sessions, see who
is online, purge the cache, read and reset rate-limit counters.

Settings come from the environment (REDIS_URL, REDIS_MIDDLEWARE_*), as in the app, or
from the app itself with --app module:attr (limits, prefixes and routes set in code).
"""
EPILOG = """\
examples:
  redis-middleware check
  redis-middleware --app myapp.main:app ratelimit show --key ip:203.0.113.7
  redis-middleware sessions revoke --user 42 --json
  redis-middleware cache purge --tag products

exit codes: 0 success, 1 Redis not reached or a check failed, 2 bad configuration or usage
"""
BATCH = 500  # URLs or users per round trip in long operations


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print JSON (for scripts)")
    group.add_argument("--app", metavar="MODULE:ATTR", default=argparse.SUPPRESS,
                       help="use the settings of this app (or factory, or Settings), as "
                            "uvicorn and gunicorn take it; a Django settings module alone")
    group.add_argument("--redis-url", metavar="URL", default=argparse.SUPPRESS,
                       help="the Redis URL (instead of REDIS_URL)")
    group.add_argument("--prefix", metavar="PREFIX", default=argparse.SUPPRESS,
                       help="the key prefix (instead of REDIS_MIDDLEWARE_KEY_PREFIX)")
    return common


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _identity(text: str) -> str:
    """An identity as the limiter names buckets (``ip:ADDRESS``, ``user:ID``, ...: the
    forms of ``config.identity``)."""
    try:
        return check_identity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("redis-middleware")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        own = "unknown"
    common = _common()
    parser = argparse.ArgumentParser(
        prog="redis-middleware", description=DESCRIPTION, epilog=EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"redis-middleware {own}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, parents=[common])

    command("check", "validate the settings, reach Redis, warn about risky setups")
    sessions = command("sessions", "list or revoke a user's sessions (revoking ends "
                                   "their presence too)")
    sessions.add_argument("action", choices=["list", "revoke"], help="what to do")
    who = sessions.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="the user's id (as the session holds it)")
    who.add_argument("--all-users", action="store_true",
                     help="revoke: every session of every user (progress on a terminal)")
    sessions.add_argument("--ref", help="revoke only this session (a ref from list)")
    online = command("online", "who is online")
    online.add_argument("--room", default="", help="a room (default: the site-wide one)")
    online.add_argument("--limit", type=_positive, default=100, metavar="N",
                        help="list at most N users (default 100)")
    cache = command("cache", "purge stored responses")
    cache.add_argument("action", choices=["purge"], help="what to do")
    target = cache.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", dest="purge_url", metavar="PATH",
                        help="one URL: a path, with its query string if any")
    target.add_argument("--tag", help="every route carrying this tag")
    target.add_argument("--all", action="store_true",
                        help="everything (in batches; progress on a terminal)")
    ratelimit = command("ratelimit", "show or reset an identity's rate-limit counters")
    ratelimit.add_argument("action", choices=["show", "reset"], help="what to do")
    ratelimit.add_argument("--key", required=True, type=_identity, metavar="IDENTITY",
                           help=", ".join(IDENTITIES))
    config = command("config", "print the effective settings (secrets masked)")
    config.add_argument("--reference", action="store_true",
                        help="print the reference table of every setting instead")
    return parser


# -- settings ---------------------------------------------------------------------------
@dataclasses.dataclass
class _Context:
    settings: Settings
    source: str
    found: Any = None  # _appload.Found when --app was given

    def for_component(self, component: str) -> Settings:
        return self.found.best(component) if self.found is not None else self.settings


def _secret_missing(settings: Settings) -> bool:
    """No secret key was given, and the app would refuse to start without one."""
    return settings.secret_generated and settings.target.kind != "memory"


def _reads_only(args: argparse.Namespace) -> bool:
    return args.command in ("check", "online", "config") or (
        args.command in ("sessions", "ratelimit") and args.action in ("list", "show"))


def _context(args: argparse.Namespace) -> _Context:
    overrides = {k: v for k, v in (("redis_url", getattr(args, "redis_url", None)),
                                   ("key_prefix", getattr(args, "prefix", None))) if v}
    spec = getattr(args, "app", None)
    if spec:
        from ._appload import load_app_settings

        found = load_app_settings(spec)
        if overrides:
            found = dataclasses.replace(found, settings=tuple(
                s.replace(**overrides) for s in found.settings))
        return _Context(found.best(), f"the app {found.where}", found)
    # A command that only reads signs no cookie: an operator may look without the key.
    settings = Settings._signing_nothing() if _reads_only(args) else Settings.from_env()
    if overrides:
        settings = settings.replace(**overrides)
    return _Context(settings, "the environment (no --app)")


# -- Redis errors -----------------------------------------------------------------------
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _reach_error(exc: BaseException) -> str:
    """One message that says what went wrong reaching Redis."""
    text = " ".join(f"{type(e).__name__} {e}" for e in _chain(exc)).lower()
    if any(k in text for k in ("wrongpass", "noauth", "authenticationerror",
                               "invalid password", "invalid username-password")):
        return f"authentication failed: {exc}"
    if "db index is out of range" in text or "invalid db index" in text:
        return f"wrong database: {exc}"
    if "noperm" in text:
        return f"permission denied (ACL): {exc}"
    return f"Redis is unreachable: {exc}"


# -- commands ---------------------------------------------------------------------------
def _info_flow() -> Flow[tuple[Any, Any]]:
    info, policy = yield (Call.of("INFO", "server"), Call.of("CONFIG", "GET", "maxmemory-policy"))
    return info, policy


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(reply: Any, name: str) -> str | None:
    """One field of an ``INFO`` or ``CONFIG GET`` reply, in each shape redis-py hands it
    over: a mapping (its callbacks; RESP3), the flat name, value, ... array or the
    ``name:value`` lines the server sends (redis-py 5.2's Cluster pipeline applies no
    callback)."""
    if isinstance(reply, (bytes, str)):
        pairs: Any = (line.partition(":")[::2] for line in _text(reply).splitlines())
    elif isinstance(reply, dict):
        pairs = reply.items()
    elif isinstance(reply, (list, tuple)):
        pairs = zip(reply[0::2], reply[1::2], strict=False)
    else:
        return None
    return next((_text(value) for key, value in pairs if _text(key) == name), None)


def _ping() -> Flow[bool]:
    (pong,) = yield (Call.of("PING"),)
    return bool(pong)


def _check(ctx: _Context) -> tuple[dict[str, Any], int]:
    from ._redis.connections import connections_for
    from ._redis.endpoint import too_old

    settings = ctx.settings
    report: dict[str, Any] = {"settings_from": ctx.source,
                              "redis_url": _mask_url(settings.redis_url),
                              "key_prefix": settings.key_prefix, "warnings": []}
    warnings: list[str] = report["warnings"]
    if settings.target.kind == "memory":
        warnings.append("REDIS_URL is memory://: every process has its own data, so sessions, "
                        "limits and presence are not shared between workers")
        return report, 0
    if _secret_missing(settings):
        warnings.append("REDIS_MIDDLEWARE_SECRET_KEY is not set here: check does not need "
                        "it, the app does")
    conns = connections_for(settings)
    conns.run(_ping())  # a failure here is reported by main(), once
    try:
        info, policy = conns.run(_info_flow())
    except RedisMiddlewareError as exc:  # managed Redis often forbids CONFIG (and INFO)
        report["maxmemory_policy"] = None
        warnings.append(f"could not read maxmemory-policy ({exc}); check it in your provider")
        return report, 0
    report["redis_version"] = _field(info, "redis_version")
    old = too_old({"version": str(report["redis_version"] or "")})
    if old is not None:
        report["error"] = f"the server is {old}: redis-middleware needs Redis 6.2 or newer"
        return report, 1
    name = _field(policy, "maxmemory-policy")
    report["maxmemory_policy"] = name
    if name and name != "noeviction":
        warnings.append(
            f"maxmemory-policy is {name}: under memory pressure Redis may evict sessions "
            "and rate-limit counters (every key has a TTL). Use noeviction with enough "
            "memory, or a separate Redis for the cache")
    return report, 0


class _Progress:
    """``done/total`` on stderr while it is a terminal; silent in a pipe."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.shown = sys.stderr.isatty() and total > BATCH

    def add(self, n: int) -> None:
        self.done += n
        if self.shown:
            print(f"\r{self.label}: {self.done}/{self.total}", end="", file=sys.stderr,
                  flush=True)

    def end(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _sessions(args: argparse.Namespace, settings: Settings) -> tuple[Any, int]:
    from .wsgi import Presence, SessionStore

    store = SessionStore(settings)
    if args.all_users:
        if args.action != "revoke" or args.ref:
            raise _UsageError("--all-users goes with revoke, without --ref")
        return _revoke_everyone(store, Presence(settings)), 0
    if args.action == "list":
        return [dataclasses.asdict(s) for s in store.list(args.user)], 0
    if args.ref:
        return {"revoked": int(store.revoke(args.user, args.ref)),
                "presence": "kept: the user's other sessions may still be in use"}, 0
    revoked = store.revoke_all(args.user)
    ended = Presence(settings).remove(args.user)
    return {"revoked": revoked, "presence": "ended" if ended else "was offline"}, 0


def _revoke_everyone(store: Any, presence: Any) -> dict[str, Any]:
    core, redis = store.core, store.redis
    indexes = list(_scan(redis, core.index_pattern()))
    progress = _Progress("users", len(indexes))
    revoked = 0
    for index in indexes:
        revoked += redis.run(core.revoke_index_flow(index))
        progress.add(1)
    progress.end()
    ended = 0
    while users := presence.online_users(limit=BATCH):
        for user in users:
            ended += int(presence.remove(user))
    return {"users": len(indexes), "revoked": revoked, "presence_ended": ended}


def _scan(redis: Any, pattern: str) -> Iterator[str]:
    def scan_flow(cursor: int) -> Flow[Any]:
        (reply,) = yield (Call.of("SCAN", cursor, "MATCH", pattern, "COUNT", 1000),)
        return reply

    cursor = 0
    while True:
        cursor, keys = redis.run(scan_flow(cursor))
        yield from (k.decode() if isinstance(k, bytes) else str(k) for k in keys)
        cursor = int(cursor)
        if cursor == 0:
            return


def _cache(args: argparse.Namespace, settings: Settings) -> tuple[Any, int]:
    from .wsgi import Cache

    cache = Cache(settings)
    if args.tag:
        return {"purged": cache.purge_tag(args.tag)}, 0
    if args.purge_url:
        path, _, query = args.purge_url.partition("?")
        return {"purged": cache.purge_url(path, query)}, 0
    urls = cache.redis.run(cache.core.stored_urls_flow())
    progress = _Progress("URLs", len(urls))
    purged = 0
    for start in range(0, len(urls), BATCH):
        batch = urls[start:start + BATCH]
        purged += cache.redis.run(cache.core.purge_urls_flow(batch))
        progress.add(len(batch))
    progress.end()
    return {"purged": purged}, 0


def _ratelimit(args: argparse.Namespace, ctx: _Context) -> tuple[Any, int]:
    from .wsgi import RateLimiter

    settings = ctx.for_component("ratelimit")
    if not (settings.ratelimit_limit or settings.ratelimit_rules):
        raise _UsageError(
            f"no rate limits are known from {ctx.source}: pass --app module:attr (the app "
            "that sets them in code) or set REDIS_MIDDLEWARE_RATELIMIT_LIMIT / _RULES")
    limiter = RateLimiter(settings)
    if args.action == "show":
        usage = limiter.usage(args.key)
        return {rule: [dataclasses.asdict(u) for u in items] for rule, items in usage.items()}, 0
    return {"reset": limiter.reset(args.key)}, 0


def _config(args: argparse.Namespace, ctx: _Context | None) -> tuple[Any, int]:
    if args.reference:
        from .config.reference import settings_table

        return settings_table(), 0
    assert ctx is not None
    settings = ctx.settings
    values: dict[str, Any] = {"settings_from": ctx.source}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret") and f.name == "redis_url":
            value = _mask_url(value)
        elif f.metadata.get("secret") and _secret_missing(settings):
            value = "<not set: the app needs one, this command does not>"
        elif f.metadata.get("secret"):
            value = f"<{len(value)} secret(s), generated>" if settings.secret_generated else (
                f"<{len(value)} secret(s)>")
        elif callable(value):
            value = f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', '?')}"
        values[f.name] = value
    return values, 0


class _UsageError(Exception):
    """A command that cannot do what was asked with what it was given (exit 2)."""


def _run(args: argparse.Namespace, ctx: _Context) -> tuple[Any, int]:
    commands: dict[str, Callable[[], tuple[Any, int]]] = {
        "check": lambda: _check(ctx),
        "sessions": lambda: _sessions(args, ctx.for_component("session")),
        "online": lambda: _online(args, ctx.for_component("presence")),
        "cache": lambda: _cache(args, ctx.for_component("cache")),
        "ratelimit": lambda: _ratelimit(args, ctx),
        "config": lambda: _config(args, ctx),
    }
    return commands[args.command]()


def _online(args: argparse.Namespace, settings: Settings) -> tuple[Any, int]:
    from .wsgi import Presence

    presence = Presence(settings)
    return {"count": presence.online_count(room=args.room),
            "users": presence.online_users(room=args.room, limit=args.limit)}, 0


# -- output -----------------------------------------------------------------------------
def _human(value: Any, indent: str = "") -> str:
    if isinstance(value, str):
        return f"{indent}{value}"
    if isinstance(value, dict) and not value:
        return f"{indent}(none)"
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}{key}:")
                lines.append(_human(item, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {item if item not in (None, [], ()) else '-'}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(f"{indent}- " + (_human(v, indent + "  ").lstrip() if isinstance(
            v, (dict, list)) else str(v)) for v in value) or f"{indent}(none)"
    return f"{indent}{value}"


def _emit(text: str) -> None:
    """Print; a reader that went away (``| head``) ends the output quietly."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error at interpreter exit


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    # The command reports each failure itself, once: the library's own log lines (the
    # circuit breaker's "unavailable") would say it a second time.
    quiet = logging.getLogger("redis_middleware")
    level, quiet.level = quiet.level, logging.CRITICAL + 1
    try:
        try:
            ctx = None if args.command == "config" and args.reference else _context(args)
            result, code = _config(args, ctx) if args.command == "config" else _run(
                args, ctx)  # type: ignore[arg-type]
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        except _UsageError as exc:
            print(f"redis-middleware {args.command}: {exc}", file=sys.stderr)
            return 2
        except RedisMiddlewareError as exc:
            print(_reach_error(exc), file=sys.stderr)
            return 1
    finally:
        quiet.level = level
    if isinstance(result, dict) and "error" in result and not as_json:
        print(result["error"], file=sys.stderr)
    _emit(json.dumps(result, indent=2, default=str) if as_json else _human(result))
    return code
