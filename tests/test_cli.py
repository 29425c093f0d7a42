"""The operators' CLI, against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from redis_middleware.cli import main
from redis_middleware.wsgi import Presence, RateLimiter, SessionStore

from .conftest import SECRET, make_settings

pytestmark = pytest.mark.real_redis


@pytest.fixture
def env(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = make_settings(redis_server.url, ratelimit_limit="5/minute")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_MIDDLEWARE_SECRET_KEY", SECRET)
    monkeypatch.setenv("REDIS_MIDDLEWARE_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("REDIS_MIDDLEWARE_RATELIMIT_LIMIT", "5/minute")
    return settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_check_reports_the_server(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run(capsys, "check")
    assert code == 0 and report["redis_version"].count(".") == 2
    assert report["maxmemory_policy"] == "noeviction" and report["warnings"] == []


def test_check_fails_cleanly(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("REDIS_MIDDLEWARE_SECRET_KEY", SECRET)
    assert main(["check"]) == 1
    monkeypatch.setenv("REDIS_URL", "nope://x")
    assert main(["check"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


def test_sessions_online_cache_and_ratelimit(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from redis_middleware._redis.connections import connections_for
    from redis_middleware.sansio.cookies import IncomingCookie
    from redis_middleware.sansio.sessions import SessionCore

    core = SessionCore(env)
    session = core.session_for(IncomingCookie(None))
    session["user_id"] = "ops"
    connections_for(env).run(core.save_flow(session, IncomingCookie(None), False))
    code, listed = run(capsys, "sessions", "list", "--user", "ops")
    assert code == 0 and len(listed) == 1 and listed[0]["expires_in"] > 0
    assert run(capsys, "sessions", "revoke", "--user", "ops")[1] == {"revoked": 1}
    assert SessionStore(env).list("ops") == []

    Presence(env).heartbeat("ops")
    assert run(capsys, "online")[1] == {"count": 1, "users": ["ops"]}

    limiter = RateLimiter(env)
    from redis_middleware.sansio.request import RequestInfo

    check = limiter.core.prepare(RequestInfo("GET", "/", b"", (), "1.2.3.4", "http"),
                                 lambda: None)
    assert check is not None
    limiter.check(check)
    code, shown = run(capsys, "ratelimit", "show", "--key", "ip:1.2.3.4")
    assert shown["default"][0]["used"] == 1
    assert run(capsys, "ratelimit", "reset", "--key", "ip:1.2.3.4")[1] == {"reset": 1}
    assert run(capsys, "cache", "purge", "--all")[1] == {"purged": 0}
    assert run(capsys, "cache", "purge", "--url", "/x?a=1")[1] == {"purged": 0}


def test_module_entry_point_and_config_table() -> None:
    out = subprocess.run([sys.executable, "-m", "redis_middleware", "config"],
                         capture_output=True, text=True, check=True).stdout
    assert "| `REDIS_URL` |" in out and "REDIS_MIDDLEWARE_RATELIMIT_RULES" in out
    usage = subprocess.run([sys.executable, "-m", "redis_middleware", "cache", "purge"],
                           capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "one of the arguments" in usage.stderr
