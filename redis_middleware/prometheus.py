"""Prometheus metrics for redis-middleware (``pip install "redis-middleware[prometheus]"``).

Example::

    from redis_middleware import prometheus

    prometheus.enable()                        # once, at startup, in every worker
    app.mount("/metrics", prometheus.asgi_app())     # or prometheus.wsgi_app()

With several worker processes (gunicorn, ``uvicorn --workers``) set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start:
prometheus_client then keeps each worker's values in files there, and the ``/metrics``
apps add them up. ``docs/operations.md`` lists every metric and queries for them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_asgi_app,
    make_wsgi_app,
    multiprocess,
)

from .asgi._http import answer_lifespan
from .sansio import metrics

__all__ = ["PrometheusRecorder", "asgi_app", "disable", "enable", "registry", "wsgi_app"]

_PREFIX = "redis_middleware"
_ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PrometheusRecorder:
    """Counters and histograms for every report of :mod:`redis_middleware.sansio.metrics`."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"{_PREFIX}_{name}", doc, labels, registry=registry)

        self.cache_responses = counter(
            "cache_responses", "Responses of cached routes, by outcome, route pattern and "
            "reason (why not stored, why bypassed).", ("outcome", "route", "reason"))
        self.ratelimit_decisions = counter(
            "ratelimit_decisions", "Rate-limit decisions by rule and identity kind "
            "(allowed, limited, or error: Redis failed).", ("decision", "rule", "identity"))
        self.session_operations = counter(
            "session_operations", "Session loads, writes, regenerations, conflicts (a write "
            "refused: deleted meanwhile), size refusals and outages.", ("operation",))
        self.presence_events = counter(
            "presence_events", "Presence heartbeats written, and users coming online and "
            "going offline.", ("event",))
        self.data_lookups = counter(
            "data_lookups", "Data cache lookups by outcome (hit, stale: served while one "
            "caller refreshes it, miss, bypass: Redis failed) and cached function.",
            ("outcome", "function"))
        self.data_loads = Histogram(
            f"{_PREFIX}_data_load_seconds", "Data cache loader runs (the count) and their "
            "duration, by cached function.", ("function",), registry=registry,
            buckets=_LOAD_BUCKETS)
        self.data_waits = Histogram(
            f"{_PREFIX}_data_wait_seconds", "Callers that waited for another caller's load "
            "of the same key (the stampede guard), and how long, by cached function.",
            ("function",), registry=registry, buckets=_LOAD_BUCKETS)
        self.near_events = counter(
            "near_cache_events", "Near cache: lookups served from memory (hit) or not "
            "(miss), entries dropped by an invalidation or an eviction, flushes (by "
            "reason) and turning off (by reason).", ("event", "reason"))
        self.redis_round_trips = Histogram(
            f"{_PREFIX}_redis_round_trip_seconds", "Duration of one Redis round trip (one "
            "pipeline of commands).", registry=registry, buckets=_ROUND_TRIP_BUCKETS)
        self.redis_commands = counter("redis_commands", "Commands sent to Redis.", ())
        self.redis_errors = counter("redis_errors", "Redis round trips that failed, by the "
                                    "client's error class.", ("error",))
        self.breaker_open = Gauge(
            f"{_PREFIX}_redis_breaker_open", "1 while the circuit breaker of a Redis "
            "target is open (failing fast).", ("target",), registry=registry,
            multiprocess_mode="max")

    def cache(self, outcome: str, route: str, reason: str) -> None:
        self.cache_responses.labels(outcome, route, reason).inc()

    def ratelimit(self, decision: str, rule: str, identity: str) -> None:
        self.ratelimit_decisions.labels(decision, rule, identity).inc()

    def session(self, operation: str) -> None:
        self.session_operations.labels(operation).inc()

    def presence(self, event: str, count: int = 1) -> None:
        self.presence_events.labels(event).inc(count)

    def data(self, event: str, function: str, seconds: float = 0.0) -> None:
        if event == "load":
            self.data_loads.labels(function).observe(seconds)
        elif event == "wait":
            self.data_waits.labels(function).observe(seconds)
        else:
            self.data_lookups.labels(event, function).inc()

    def near(self, event: str, reason: str = "", count: int = 1) -> None:
        self.near_events.labels(event, reason).inc(count)

    def redis(self, seconds: float, commands: int, error: str | None) -> None:
        self.redis_round_trips.observe(seconds)
        self.redis_commands.inc(commands)
        if error is not None:
            self.redis_errors.labels(error).inc()

    def breaker(self, target: str, is_open: bool) -> None:
        from .config.urls import mask_url as _mask_url

        self.breaker_open.labels(_mask_url(target)).set(1 if is_open else 0)


_installed: PrometheusRecorder | None = None


def enable(registry: CollectorRegistry = REGISTRY) -> PrometheusRecorder:
    """Start recording (idempotent): every component reports to Prometheus from now on."""
    global _installed
    if _installed is None:
        _installed = PrometheusRecorder(registry)
    metrics.install(_installed)
    return _installed


def disable() -> None:
    """Stop recording (the metrics keep their values)."""
    metrics.install(None)


def registry() -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or, with
    ``PROMETHEUS_MULTIPROC_DIR`` set, the sum over every worker's files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return combined
    return REGISTRY


def asgi_app() -> Any:
    """An ASGI app answering the exposition (mount it at ``/metrics``, or serve it alone:
    it also answers the lifespan protocol, which prometheus_client's app refuses)."""
    exposition = make_asgi_app(registry())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await exposition(scope, receive, send)

    return app


def wsgi_app() -> Any:
    """A WSGI app answering the exposition."""
    return make_wsgi_app(registry())
