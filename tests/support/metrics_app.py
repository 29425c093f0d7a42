"""A WSGI app with the stack and Prometheus metrics, for gunicorn with several workers
(``PROMETHEUS_MULTIPROC_DIR`` set by the test): ``/metrics`` sums every worker."""

from __future__ import annotations

from typing import Any

from redis_middleware import Settings, prometheus
from redis_middleware.wsgi import RedisMiddleware

prometheus.enable()
exposition = prometheus.wsgi_app()


def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/metrics":
        return exposition(environ, start_response)  # type: ignore[no-any-return]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


app = RedisMiddleware(inner, Settings.from_env(), limit="1000/minute",
                      routes={"/c/*": 60}, exempt=["/metrics", "/health"])
