"""Pure tests: no Redis, no server, no event loop, no client. The clean-up that
``tests/conftest.py`` runs around every backend test has nothing to do here, and its
garbage collection alone cost each of these tests 50-70 ms once the whole suite was
loaded: the three fixtures below stand in for it, and a test here that asks for a
server fixture fails before it starts one."""

from __future__ import annotations

import pytest

SERVER_FIXTURES = frozenset({"backend_url", "settings", "conns", "make_client", "audit",
                             "redis_server", "own_server", "redis_cluster"})


@pytest.fixture
def _reset_app_calls() -> None:
    """No test app runs here."""


@pytest.fixture
def _close_sync_clients() -> None:
    """No Redis client is made here."""


@pytest.fixture
def _collect_garbage() -> None:
    """No socket is opened here: nothing for a collection to report."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    reached = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if reached:  # failed before any of them starts a server
        pytest.fail(f"{item.nodeid} uses {', '.join(sorted(reached))}: a test that reaches a "
                    "server is a backend test, and belongs beside them in tests/",
                    pytrace=False)
