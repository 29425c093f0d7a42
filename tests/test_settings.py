"""Settings meet a backend (the settings alone: tests/sansio/test_settings.py)."""

from __future__ import annotations

import pytest

from redis_middleware import Settings

from .sansio.test_settings import REAL, SECRET


@pytest.mark.parametrize("lifetime", [-1, 0])
def test_a_lifetime_of_zero_or_less_expires_the_session_at_once(settings: Settings,
                                                               lifetime: int) -> None:
    """Starlette's ``max_age=-1``: the session cookie expires at once, so the next request
    has no session. Ours (``absolute_lifetime``) takes it with that meaning, keeping
    nothing in Redis, instead of refusing it."""
    from starlette.middleware.sessions import SessionMiddleware as CookieSessions
    from starlette.testclient import TestClient

    from .support.audit import audit_keyspace
    from .test_session_contract import client_for, starlette_app

    env = Settings.from_env({**REAL, "REDIS_MIDDLEWARE_SESSION_ABSOLUTE_LIFETIME": "-1"})
    assert env.session_absolute_lifetime == -1
    seen = []
    with TestClient(CookieSessions(starlette_app(), secret_key=SECRET, max_age=-1)) as theirs, \
            client_for(settings, absolute_lifetime=lifetime) as ours:
        for client in (theirs, ours):
            response = client.post("/update", json={"some": "data"})
            seen.append((response.json(), "session" in client.cookies,
                         client.get("/view").json()))
        assert "Max-Age=" in response.headers["set-cookie"]
        assert int(response.headers["set-cookie"].split("Max-Age=")[1].split(";")[0]) <= 0
    assert seen[0] == seen[1] == ({"session": {"some": "data"}}, False, {"session": {}})
    assert audit_keyspace(settings) == []
