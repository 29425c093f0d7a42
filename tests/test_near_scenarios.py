"""The response-cache scenarios again, with the near cache on: every HTTP rule holds when
fresh entries are served from the process's memory, and every change made behind its
back (a purge, an invalidation, a key deleted or expired) is seen by the next request,
as Redis tells the process. On a real redis-server (RESP3), the same server spoken to in
RESP2 (the tracking connection then redirects to itself: where the matrix has
``memory://``, which has no near cache), and a Cluster (a tracking connection per
primary)."""

from __future__ import annotations

import pytest

from redis_middleware import Settings
from redis_middleware._redis.connections import connections_for

from .support.clients import make_settings
from .test_cache import *  # noqa: F403 (the scenarios, run again here)
from .test_cache_http import *  # noqa: F403

pytestmark = [pytest.mark.usefixtures("audit"), pytest.mark.scenarios, pytest.mark.real_redis]


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    url = str(request.getfixturevalue("redis_server").url)
    return url + "?protocol=2" if request.param == "memory" else url


@pytest.fixture
def settings(backend_url: str) -> Settings:
    settings = make_settings(backend_url, near_cache_size=1000)
    near = connections_for(settings).near_cache(settings)
    assert near is not None and near.wait_ready(10), "the near cache did not start"
    return settings
