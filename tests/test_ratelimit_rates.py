"""Rate strings as the core holds them (``Rate``) and as the ``limits`` strategies count
them: the same limits, the same keys as ``limits`` makes of the string itself."""

from __future__ import annotations

import uuid
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import redis
from limits import parse_many

from redis_middleware import Settings
from redis_middleware.config.rates import parse_limits
from redis_middleware.keys import escape
from redis_middleware.wsgi import RateLimitMiddleware

SECRET = "k" * 40
SPECS = "3/second;2/3 minutes;10 per hour;5/2 days;7/month;100/year"


def test_rates_hold_what_limits_parsed() -> None:
    for rate, item in zip(parse_limits(SPECS), parse_many(SPECS), strict=True):
        assert (rate.amount, rate.multiples, rate.granularity, rate.seconds) == (
            item.amount, item.multiples, item.GRANULARITY.name, item.get_expiry())
        assert parse_many(rate.spec) == [item]


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.real_redis
@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
def test_limits_strategies_count_at_the_keys_limits_makes_of_the_rate_string(
        redis_server: Any, strategy: str) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix="t-" + uuid.uuid4().hex[:12],
                        secret_key=(SECRET,))
    app = RateLimitMiddleware(_app, settings, limit=SPECS, strategy=strategy)
    environ: dict[str, Any] = {"REMOTE_ADDR": "192.0.2.7", "PATH_INFO": "/x"}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    for _ in range(4):
        body = app(dict(environ), lambda status, headers, exc=None: statuses.append(status))
        b"".join(body)
    assert [s.split()[0] for s in statuses] == ["200", "200", "429", "429"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        found = {k.decode() for k in client.scan_iter(match=f"{settings.key_prefix}:*")}
    finally:
        client.close()
    ids = (escape("ip:192.0.2.7"), escape("default"))
    wanted = {item.key_for(*ids, str(i)) for i, item in enumerate(parse_many(SPECS))}
    # A strategy may wrap the item's key in a hash tag and add suffixes (the sliding
    # window counter keeps the previous window too): every key found holds one the
    # items make, and every item's key is found.
    prefix = f"{settings.key_prefix}:ratelimit:"
    assert found and all(k.startswith(prefix) for k in found)
    stems = {k[len(prefix):].lstrip("{").replace("}", "") for k in found}
    assert all(any(stem.startswith(w) for w in wanted) for stem in stems), (stems, wanted)
    assert all(any(stem.startswith(w) for stem in stems) for w in wanted), (stems, wanted)
