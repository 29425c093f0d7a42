"""Managed Redis restrictions: an ACL user that may touch only keys and channels under
our prefix, and no dangerous command (CONFIG, DEBUG, KEYS, FLUSHALL, ...). Core scenarios
of every component run as that user, so no key or channel outside the namespace and no
administrative command is ever needed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from redis_middleware import Settings

from .support.clients import SECRET
from .support.servers import RedisServer
from .test_cache import test_second_get_is_a_hit_restored_exactly  # noqa: F401
from .test_presence import (  # noqa: F401
    events,
    test_online_after_a_request_offline_after_ttl,
)
from .test_ratelimit import (  # noqa: F401
    test_limits_library_strategies,
    test_sixth_request_of_five_per_minute,
)
from .test_sessions import (  # noqa: F401
    test_json_values_round_trip_exactly,
    test_log_out_everywhere,
    test_regenerate_moves_data_and_kills_the_old_cookie,
)
from .test_stack import test_session_writes_and_cache_in_one_stack  # noqa: F401

pytestmark = pytest.mark.real_redis


@pytest.fixture
def backend_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def settings(redis_server: RedisServer) -> Iterator[Settings]:
    """This test's prefix, reached as a user limited to ``<prefix>:*`` keys and
    channels, without the commands managed services take away."""
    prefix = "t-" + uuid.uuid4().hex[:12]
    user, password = f"app-{prefix}", uuid.uuid4().hex
    admin = redis_server.client()
    admin.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "resetkeys", f"~{prefix}:*",
        "resetchannels", f"&{prefix}:*", "+@all", "-@dangerous", "-@admin", "-config",
        "-debug", "-keys", "-flushall", "-flushdb", "-shutdown")
    try:
        yield Settings(redis_url=f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0",
                       key_prefix=prefix, secret_key=(SECRET,))
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.replace(presence_ttl=1, presence_heartbeat_interval=0.5,
                            presence_sweep_interval=0.2, presence_grace=0.5)


def test_the_user_is_really_restricted(settings: Settings) -> None:
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.set(f"{settings.key_prefix}:session:x", "1", ex=5)
        for command in (("SET", "elsewhere", "1"), ("CONFIG", "GET", "maxmemory"),
                        ("KEYS", "*"), ("FLUSHALL",), ("PUBLISH", "elsewhere", "x")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        with pytest.raises(redis.exceptions.ResponseError):  # refused, whatever the reason
            client.execute_command("DEBUG", "SLEEP", "0")
    finally:
        client.close()


def test_the_cli_check_works_without_config(settings: Settings, capsys: Any) -> None:
    """``redis-middleware check`` cannot read maxmemory-policy there: it says so, and
    still succeeds."""
    import json
    import os

    from redis_middleware.cli import main

    os.environ["REDIS_URL"] = settings.redis_url
    os.environ["REDIS_MIDDLEWARE_SECRET_KEY"] = SECRET
    try:
        assert main(["--json", "check"]) == 0
    finally:
        del os.environ["REDIS_URL"], os.environ["REDIS_MIDDLEWARE_SECRET_KEY"]
    report = json.loads(capsys.readouterr().out)
    assert report["maxmemory_policy"] is None
    assert any("maxmemory-policy" in w for w in report["warnings"])
