"""Prometheus metrics: values after known traffic, on ASGI and WSGI, bounded labels, and
the multiprocess mode under gunicorn with two workers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from redis_middleware import Settings
from redis_middleware.sansio import metrics

from .support.clients import Clients

pytest.importorskip("prometheus_client")


@pytest.fixture
def registry() -> Iterator[Any]:
    """A recorder on a registry of this test alone."""
    from prometheus_client import CollectorRegistry

    from redis_middleware.prometheus import PrometheusRecorder

    fresh = CollectorRegistry()
    metrics.install(PrometheusRecorder(fresh))
    yield fresh
    metrics.install(None)


def value(registry: Any, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else float(found)


def test_known_traffic_gives_known_values(make_client: Clients, settings: Settings,
                                          registry: Any) -> None:
    client = make_client("RedisMiddleware", limit="3/minute", routes={"/c/*": 60})
    client.post("/login?user=ann")  # a session write (and a heartbeat)
    first = client.get("/c/one")
    second = client.get("/c/one")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert client.get("/noop").status_code == 429  # the 4th request of 3/minute
    cache = "redis_middleware_cache_responses_total"
    assert value(registry, cache, outcome="miss", route="/c/*", reason="stored") == 1
    assert value(registry, cache, outcome="hit", route="/c/*", reason="") == 1
    decisions = "redis_middleware_ratelimit_decisions_total"
    assert value(registry, decisions, decision="allowed", rule="default", identity="ip") == 3
    assert value(registry, decisions, decision="limited", rule="default", identity="ip") == 1
    sessions = "redis_middleware_session_operations_total"
    assert value(registry, sessions, operation="write") >= 1
    assert value(registry, sessions, operation="load") >= 3
    presence = "redis_middleware_presence_events_total"
    assert value(registry, presence, event="heartbeat") >= 1
    assert value(registry, presence, event="online") == 1
    assert value(registry, "redis_middleware_redis_round_trip_seconds_count") >= 5
    assert value(registry, "redis_middleware_redis_commands_total") >= 5


def test_labels_never_hold_raw_paths_or_who(make_client: Clients, registry: Any) -> None:
    from prometheus_client import generate_latest

    client = make_client("RedisMiddleware", limit="100/minute", routes={"/c/*": 60})
    client.post("/login?user=secret-user-42")
    for _ in range(5):
        client.get(f"/c/{uuid.uuid4().hex}")
    text = generate_latest(registry).decode()
    assert "secret-user-42" not in text and "127.0.0.1" not in text
    assert not re.search(r'route="/c/[0-9a-f]{32}"', text)
    assert 'route="/c/*"' in text


def test_the_breaker_and_errors_are_reported(registry: Any, tmp_path: Any) -> None:
    from redis_middleware._redis.connections import connections_for
    from redis_middleware.errors import RedisUnavailableError
    from redis_middleware.sansio.flow import Call

    from .support.clients import SECRET
    from .support.servers import free_port

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key=(SECRET,),
                        connect_timeout=0.2, socket_timeout=0.2)

    def ping() -> Any:
        yield (Call.of("PING"),)

    with pytest.raises(RedisUnavailableError):
        connections_for(settings).run(ping())
    samples = {s.labels.get("target"): s.value for m in registry.collect()
               if m.name == "redis_middleware_redis_breaker_open" for s in m.samples}
    assert list(samples.values()) == [1.0]
    errors = sum(s.value for m in registry.collect() if m.name == "redis_middleware_redis_errors"
                 for s in m.samples if s.name.endswith("_total"))
    assert errors == 1


def test_without_a_recorder_nothing_is_reported(make_client: Clients) -> None:
    assert metrics.hook is None
    client = make_client("RedisMiddleware", limit="3/minute", routes={"/c/*": 60})
    assert client.get("/c/x").status_code == 200  # every report site skipped


def test_the_asgi_and_wsgi_metrics_apps(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient
    from werkzeug.test import Client

    from redis_middleware import prometheus

    metrics.hook.cache("hit", "/x", "")  # type: ignore[union-attr]
    monkeypatch.setattr(prometheus, "registry", lambda: registry)
    with TestClient(prometheus.asgi_app()) as client:
        text = client.get("/").text
    assert 'redis_middleware_cache_responses_total{outcome="hit",reason="",route="/x"} 1.0' in text
    body = b"".join(Client(prometheus.wsgi_app()).get("/").iter_encoded()).decode()
    assert 'route="/x"' in body


@pytest.mark.real_redis
def test_gunicorn_workers_add_up(tmp_path: Any, redis_server: Any) -> None:
    import httpx

    from .support.clients import SECRET, make_settings
    from .support.servers import Served

    settings = make_settings(redis_server.url)
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {"REDIS_URL": settings.redis_url, "REDIS_MIDDLEWARE_KEY_PREFIX": settings.key_prefix,
           "REDIS_MIDDLEWARE_SECRET_KEY": SECRET, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with Served(["gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "tests.support.metrics_app:app"],
                env, tmp_path / "gunicorn.log") as srv:
        pids = set()
        with httpx.Client(base_url=srv.base) as http:
            for _ in range(40):  # new connections: both workers take some
                with httpx.Client(base_url=srv.base) as fresh:
                    fresh.get("/c/page")
            text = http.get("/metrics").text
        pids = {p.name for p in multiproc.iterdir()}
    assert len({p.split("_")[-1] for p in pids}) >= 2, pids  # files of two worker pids
    hits = re.search(r'redis_middleware_cache_responses_total\{outcome="hit",reason="",'
                     r'route="/c/\*"\} ([0-9.]+)', text)
    misses = re.search(r'redis_middleware_cache_responses_total\{outcome="miss",'
                       r'reason="stored",route="/c/\*"\} ([0-9.]+)', text)
    assert hits and misses, text
    assert float(hits[1]) + float(misses[1]) == 40
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()
