"""The operators' CLI, against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from redis_middleware import ConfigError
from redis_middleware.asgi import SessionMiddleware
from redis_middleware.cli import main
from redis_middleware.wsgi import Presence, RateLimiter, SessionStore

from .support.clients import SECRET, make_settings
from .test_session_contract import starlette_app

pytestmark = pytest.mark.real_redis
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


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


def test_check_reports_a_cluster(redis_cluster: Any, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Through redis-py's Cluster pipeline, whose replies redis-py 5.2 leaves unparsed
    (CONFIG GET as a flat name, value array)."""
    monkeypatch.setenv("REDIS_URL", redis_cluster.url)
    monkeypatch.setenv("REDIS_MIDDLEWARE_SECRET_KEY", SECRET)
    code, report = run(capsys, "check")
    assert code == 0 and report["redis_version"].count(".") == 2
    assert report["maxmemory_policy"] == "noeviction" and report["warnings"] == []


def test_check_fails_cleanly(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from .support.servers import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("REDIS_MIDDLEWARE_SECRET_KEY", SECRET)
    assert main(["check"]) == 1
    monkeypatch.setenv("REDIS_URL", "nope://x")
    assert main(["check"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


def test_sessions_online_cache_and_ratelimit(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from redis_middleware._redis.connections import connections_for
    from redis_middleware.sansio.sessions.cookies import IncomingCookie
    from redis_middleware.sansio.sessions.core import SessionCore

    core = SessionCore(env)
    session = core.session_for(IncomingCookie(None))
    session["user_id"] = "ops"
    connections_for(env).run(core.save_flow(session, IncomingCookie(None), False))
    code, listed = run(capsys, "sessions", "list", "--user", "ops")
    assert code == 0 and len(listed) == 1 and listed[0]["expires_in"] > 0
    assert run(capsys, "sessions", "revoke", "--user", "ops")[1] == {
        "revoked": 1, "presence": "was offline"}
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
    out = subprocess.run([sys.executable, "-m", "redis_middleware", "config", "--reference"],
                         capture_output=True, text=True, check=True).stdout
    assert "| `REDIS_URL` |" in out and "REDIS_MIDDLEWARE_RATELIMIT_RULES" in out
    usage = subprocess.run([sys.executable, "-m", "redis_middleware", "cache", "purge"],
                           capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "one of the arguments" in usage.stderr


def cli(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("REDIS")}
    return subprocess.run([sys.executable, "-m", "redis_middleware", *argv], text=True,
                          capture_output=True, env={**full, **(env or {})}, check=False)


def test_version_help_and_json_anywhere(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("redis-middleware ")
    helped = cli("--help")
    assert helped.returncode == 0 and "``" not in helped.stdout and "exit codes" in helped.stdout
    for command in ("check", "sessions", "online", "cache", "ratelimit", "config"):
        sub = cli(command, "--help")
        assert sub.returncode == 0 and "--json" in sub.stdout, command
    assert main(["check", "--json"]) == 0  # the flag after the command
    assert json.loads(capsys.readouterr().out)["key_prefix"] == env.key_prefix


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.run(f"{sys.executable} -m redis_middleware config --reference | head -1",
                          shell=True, text=True, capture_output=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("<!--")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_config_shows_the_effective_settings_with_secrets_masked(env: Any) -> None:
    out = cli("config", "--json", env={"REDIS_URL": "redis://:hunter2@127.0.0.1:6390/0",
                                       "REDIS_MIDDLEWARE_SECRET_KEY": SECRET,
                                       "REDIS_MIDDLEWARE_RATELIMIT_LIMIT": "7/minute"})
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["ratelimit_limit"] == "7/minute" and shown["settings_from"].startswith(
        "the environment")
    assert "hunter2" not in out.stdout and SECRET not in out.stdout
    assert shown["secret_key"] == "<1 secret(s)>"


def test_commands_that_only_read_need_no_secret_key(env: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator looks without the cookie-signing key: the CLI signs no cookie. The
    app still refuses to start without it (a ConfigError), and check says so."""
    Presence(env).heartbeat("ops")
    plain = {"REDIS_URL": env.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": env.key_prefix,
             "REDIS_MIDDLEWARE_RATELIMIT_LIMIT": "5/minute"}
    checked = cli("check", "--json", env=plain)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["warnings"] == [
        "REDIS_MIDDLEWARE_SECRET_KEY is not set here: check does not need it, the app does"]
    online = cli("online", "--json", env=plain)
    assert online.returncode == 0, online.stderr
    assert json.loads(online.stdout) == {"count": 1, "users": ["ops"]}
    for argv in (("sessions", "list", "--user", "ops"),
                 ("ratelimit", "show", "--key", "ip:1.2.3.4"), ("config",)):
        out = cli(*argv, "--json", env=plain)
        assert out.returncode == 0, (argv, out.stderr)
    shown = json.loads(cli("config", "--json", env=plain).stdout)
    assert shown["secret_key"] == "<not set: the app needs one, this command does not>"
    # A key that is given is still checked; the middleware still requires one.
    short = cli("check", env={**plain, "REDIS_MIDDLEWARE_SECRET_KEY": "short"})
    assert short.returncode == 2 and "REDIS_MIDDLEWARE_SECRET_KEY" in short.stderr
    monkeypatch.delenv("REDIS_MIDDLEWARE_SECRET_KEY")
    with pytest.raises(ConfigError, match="REDIS_MIDDLEWARE_SECRET_KEY"):
        SessionMiddleware(starlette_app())  # settings from the environment


@pytest.mark.parametrize(("url", "message"), [
    ("redis://127.0.0.1:{dead}/0", "Redis is unreachable"),
    ("redis://127.0.0.1:{port}/99", "wrong database"),
    ("redis://:wrong@127.0.0.1:{port}/0", "authentication failed"),
])
def test_each_failure_is_one_clear_message_and_exit_1(
        redis_server: Any, tmp_path: Any, url: str, message: str) -> None:
    from .support.servers import free_port, start_redis_server, stop_redis_server

    guarded = start_redis_server(tmp_path)
    with guarded.client() as admin:
        admin.config_set("requirepass", "right")
    try:
        target = url.format(dead=free_port(), port=guarded.port if "wrong@" in url
                            else redis_server.port)
        for command in (("check",), ("ratelimit", "reset", "--key", "ip:1.2.3.4"),
                        ("sessions", "revoke", "--user", "x")):
            out = cli(*command, env={"REDIS_URL": target, "REDIS_MIDDLEWARE_SECRET_KEY": SECRET,
                                     "REDIS_MIDDLEWARE_RATELIMIT_LIMIT": "5/minute"})
            assert out.returncode == 1, (command, out.stdout, out.stderr)
            lines = [line for line in out.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(message), (command, out.stderr)
            assert out.stdout == ""  # nothing claims success
    finally:
        stop_redis_server(guarded)


def test_bad_arguments_are_refused(env: Any) -> None:
    for argv in (("online", "--limit", "-1"), ("online", "--limit", "x"),
                 ("ratelimit", "show", "--key", "1.2.3.4"),
                 ("ratelimit", "show", "--key", "ip:not-an-address"),
                 ("sessions", "revoke", "--all-users", "--ref", "abc")):
        out = cli(*argv, env={"REDIS_URL": env.redis_url, "REDIS_MIDDLEWARE_SECRET_KEY": SECRET})
        assert out.returncode == 2, argv
        assert "Traceback" not in out.stderr


def test_ratelimit_refuses_when_no_limits_are_known(env: Any) -> None:
    out = cli("ratelimit", "reset", "--key", "ip:1.2.3.4",
              env={"REDIS_URL": env.redis_url, "REDIS_MIDDLEWARE_SECRET_KEY": SECRET})
    assert out.returncode == 2 and "no rate limits are known" in out.stderr and "--app" in (
        out.stderr)


def test_app_option_reads_limits_set_in_code(redis_server: Any, tmp_path: Any) -> None:
    """--app module:attr: the FastAPI and Flask examples' limits (set in code), a Django
    settings module, a Settings object and a factory; the counters the app made are the
    ones shown and reset."""
    from .support.clients import make_settings

    settings = make_settings(redis_server.url)
    (tmp_path / "shop.py").write_text(
        "from redis_middleware import Settings\n"
        "from redis_middleware.asgi import RateLimitMiddleware\n"
        f"settings = Settings(redis_url={settings.redis_url!r}, "
        f"key_prefix={settings.key_prefix!r}, secret_key=({SECRET!r},))\n"
        "async def inner(scope, receive, send): pass\n"
        "app = RateLimitMiddleware(inner, settings, limit='3/minute', "
        "rules={'/login': '1/minute'})\n"
        "def create_app():\n    return app\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    limiter = RateLimiter(settings.replace(ratelimit_limit="3/minute",
                                           ratelimit_rules={"/login": "1/minute"}))
    from redis_middleware.sansio.request import RequestInfo

    check = limiter.core.prepare(RequestInfo("GET", "/login", b"", (), "9.9.9.9", "http"),
                                 lambda: None)
    assert check is not None and limiter.check(check)
    for spec in ("shop:app", "shop:create_app", "shop:create_app()"):
        out = cli("--app", spec, "ratelimit", "show", "--key", "ip:9.9.9.9", "--json", env=env)
        assert out.returncode == 0, (spec, out.stderr)
        assert json.loads(out.stdout)["/login"][0]["used"] == 1, spec
    bare = cli("--app", "shop:settings", "ratelimit", "show", "--key", "ip:9.9.9.9", env=env)
    assert bare.returncode == 2 and "no rate limits are known from the app" in bare.stderr
    checked = cli("--app", "shop:settings", "check", "--json", env=env)
    assert json.loads(checked.stdout)["key_prefix"] == settings.key_prefix
    reset = cli("--app", "shop:app", "ratelimit", "reset", "--key", "ip:9.9.9.9", "--json",
                env=env)
    assert json.loads(reset.stdout) == {"reset": 1}
    for spec in ("examples.fastapi_app.app:app", "examples.flask_app.app:app",
                 "examples.django_app.settings"):
        out = cli("--app", spec, "ratelimit", "show", "--key", "ip:127.0.0.1", "--json",
                  env={"PYTHONPATH": str(ROOT), "DJANGO_DB": str(tmp_path / "db.sqlite3")})
        assert out.returncode == 0, (spec, out.stderr)
        assert "/login" in json.loads(out.stdout), spec
    missing = cli("--app", "shop:nothing", "check", env=env)
    assert missing.returncode == 2 and "no attribute" in missing.stderr


def test_revoking_a_user_ends_their_presence_and_all_users_at_once(
        env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from redis_middleware._redis.connections import connections_for
    from redis_middleware.sansio.sessions.cookies import IncomingCookie
    from redis_middleware.sansio.sessions.core import SessionCore

    core = SessionCore(env)
    for user in ("alice", "bob", "carol"):
        session = core.session_for(IncomingCookie(None))
        session["user_id"] = user
        connections_for(env).run(core.save_flow(session, IncomingCookie(None), False))
        Presence(env).heartbeat(user)
    assert run(capsys, "sessions", "revoke", "--user", "alice")[1] == {
        "revoked": 1, "presence": "ended"}
    assert run(capsys, "online")[1] == {"count": 2, "users": ["bob", "carol"]}
    code, done = run(capsys, "sessions", "revoke", "--all-users")
    assert code == 0 and done == {"users": 2, "revoked": 2, "presence_ended": 2}
    assert SessionStore(env).list("bob") == [] and Presence(env).online_count() == 0


def test_purging_everything_goes_in_batches(env: Any, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from redis_middleware import cli as cli_module
    from redis_middleware.wsgi import CacheMiddleware

    monkeypatch.setattr(cli_module, "BATCH", 2)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    from werkzeug.test import Client

    client = Client(CacheMiddleware(app, env, routes={"/p/*": 60}))
    for i in range(5):
        assert client.get(f"/p/{i}", buffered=True).status_code == 200
    assert run(capsys, "cache", "purge", "--all")[1] == {"purged": 5}
    assert run(capsys, "cache", "purge", "--all")[1] == {"purged": 0}


def test_progress_shows_on_a_terminal_and_not_in_a_pipe(env: Any) -> None:
    """``cache purge --all`` over more URLs than one batch: ``done/total`` on a terminal's
    stderr, nothing on a pipe's."""
    import os
    import pty

    from werkzeug.test import Client

    from redis_middleware.wsgi import CacheMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x"]

    client = Client(CacheMiddleware(app, env, routes={"/p/*": 60}))

    def fill() -> None:
        for i in range(7):
            client.get(f"/p/{i}", buffered=True)

    code = ("import sys; from redis_middleware import cli; cli.BATCH = 2; "
            "sys.exit(cli.main(['cache', 'purge', '--all']))")
    full = {**os.environ, "REDIS_URL": env.redis_url, "REDIS_MIDDLEWARE_SECRET_KEY": SECRET,
            "REDIS_MIDDLEWARE_KEY_PREFIX": env.key_prefix}
    fill()
    piped = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                           text=True, check=True)
    assert piped.stderr == "" and "purged: 7" in piped.stdout
    fill()
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=full, stdout=subprocess.PIPE,
                              stderr=terminal, text=True, check=True)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert "URLs: 7/7" in shown.decode() and "purged: 7" in proc.stdout
