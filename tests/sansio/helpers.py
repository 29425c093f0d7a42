"""Builders for driving the cores with no I/O."""

from __future__ import annotations

from typing import Any

from redis_middleware import Settings
from redis_middleware.sansio.flow import Batch, Flow
from redis_middleware.sansio.request import RequestInfo, cookies_of

SECRET = "s" * 40


def settings(**overrides: Any) -> Settings:
    return Settings(redis_url="redis://127.0.0.1:1/0", secret_key=(SECRET,), key_prefix="t",
                    **overrides)


def request(method: str = "GET", path: str = "/x", query: bytes = b"",
            headers: tuple[tuple[str, str], ...] = (), peer: str = "1.2.3.4",
            scheme: str = "http") -> RequestInfo:
    return RequestInfo(method, path, query, headers, peer, scheme,
                       cookies=cookies_of([v for k, v in headers if k == "cookie"]))


def batches(flow: Flow[Any], answers: list[list[Any]]) -> tuple[list[Batch], Any]:
    """Run ``flow`` on canned answers; every batch it yielded, and its result."""
    seen: list[Batch] = []
    try:
        batch = next(flow)
        for answer in answers:
            seen.append(batch)
            batch = flow.send(answer)
        seen.append(batch)
        raise AssertionError(f"flow wanted more than {len(answers)} batches")
    except StopIteration as stop:
        return seen, stop.value


def commands(batch: Batch) -> list[str]:
    """The command names of a batch (a script counts as EVALSHA)."""
    return [str(op.args[0]) for op in batch]
