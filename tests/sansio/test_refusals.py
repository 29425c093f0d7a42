"""The responses the middleware answers itself: problem+json or HTML by Accept, and the
app's refusal handler."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from redis_middleware.sansio import incidents
from redis_middleware.sansio.responses import (
    Refusal,
    Refusals,
    Response,
    preferred_format,
    render,
)

from .helpers import request

LIMITED = Refusal("rate-limited", 429, "Rate limit exceeded: 5 per 1 minute",
                  (("Retry-After", "42"), ("X-RateLimit-Limit", "5")))


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(None, "problem", id="no-accept-an-api-client"),
        pytest.param("*/*", "problem", id="anything"),
        pytest.param("application/json", "problem", id="json"),
        pytest.param("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                     "html", id="a-browser-navigation"),
        pytest.param("application/json, text/html;q=0.5", "problem", id="json-preferred"),
        pytest.param("text/html;q=0.2, application/problem+json", "problem",
                     id="9110-12.5.1-q-values"),
        pytest.param("text/html;q=0", "problem", id="q-zero-is-not-acceptable"),
        pytest.param("TEXT/HTML", "html", id="case-insensitive"),
    ],
)
def test_preferred_format(accept: str | None, expected: str) -> None:
    assert preferred_format(accept) == expected


def test_problem_json_default() -> None:
    """RFC 9457: type, title, status, detail; the refusal's headers kept."""
    response = render(LIMITED)
    headers = dict(response.headers)
    assert response.status == 429 and headers["Content-Type"] == "application/problem+json"
    assert json.loads(response.body) == {"type": "about:blank", "title": "Too Many Requests",
                                         "status": 429, "detail": LIMITED.detail}
    assert headers["Retry-After"] == "42" and headers["X-RateLimit-Limit"] == "5"


def test_html_for_browsers_escapes_the_detail() -> None:
    hostile = Refusal("rate-limited", 429, "<script>x</script>", (("Retry-After", "3"),))
    response = render(hostile, "text/html")
    assert dict(response.headers)["Content-Type"] == "text/html; charset=utf-8"
    assert b"<script>" not in response.body and b"&lt;script&gt;" in response.body
    assert b"Try again in 3 s." in response.body and response.status == 429


def test_the_apps_handler_answers_and_gets_retry_after() -> None:
    seen: list[Any] = []

    def handler(req: Any, refusal: Refusal) -> Response | None:
        seen.append((req.path, refusal.kind))
        return Response(refusal.status, (("Content-Type", "text/plain"),), b"slow down")

    answer = Refusals(handler, 1.0).answer(LIMITED, request(path="/login"))
    assert (answer.status, answer.body) == (429, b"slow down")
    assert dict(answer.headers)["Retry-After"] == "42"
    assert seen == [("/login", "rate-limited")]


def test_a_handler_that_declines_or_fails_gets_the_default(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "_last_logged", {})
    assert Refusals(lambda r, f: None, 1.0).answer(LIMITED, request()).body == render(
        LIMITED).body

    def broken(req: Any, refusal: Refusal) -> Response | None:
        raise RuntimeError("bug in the hook")

    with caplog.at_level(logging.WARNING, logger="redis_middleware"):
        for _ in range(3):
            answer = Refusals(broken, 1.0).answer(LIMITED, request())
            assert answer.status == 429
    assert sum("refusal_handler failed" in r.getMessage() for r in caplog.records) == 1


def test_session_unavailable_is_a_503_with_retry_after() -> None:
    answer = Refusals(None, 2.4).session_unavailable(request(headers=(("accept",
                                                                       "text/html"),)))
    assert answer.status == 503 and dict(answer.headers)["Retry-After"] == "2"
    assert b"Service Unavailable" in answer.body
