"""Every identity kind declared in ``config.identity`` is known everywhere a kind is
used: the settings accept it, the core resolves a request by it (and knows whether that
needs the user), the CLI takes the identities it makes, and docs/ratelimit.md names it.
A kind added to the table and missed by one of them fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redis_middleware import Settings
from redis_middleware.cli import main
from redis_middleware.config.identity import KINDS, Kind
from redis_middleware.sansio.ratelimit.core import RateLimitCore
from redis_middleware.sansio.ratelimit.identity import RESOLVERS
from redis_middleware.sansio.request import RequestInfo

PAGE = Path(__file__).resolve().parent.parent / "docs" / "ratelimit.md"
ARGUMENTS = {"header": "X-Api-Key"}  # a sample argument of each parameterised kind
CARRYING = RequestInfo("GET", "/", b"", (("authorization", "Bearer tok-1"),
                                         ("x-api-key", "k-1")), "192.0.2.7", "http")
BARE = RequestInfo("GET", "/", b"", (), "192.0.2.8", "http")
PARAMS = [pytest.param(kind, id=kind.name) for kind in KINDS]


def _key(kind: Kind) -> object:
    """What a user gives to count by ``kind``: its spelling, or a callable in code."""
    if not kind.settable:
        return lambda request: request.path
    return f"{kind.name}:{ARGUMENTS[kind.name]}" if kind.argument else kind.name


def _core(kind: Kind) -> RateLimitCore:
    return RateLimitCore(Settings(redis_url="memory://", ratelimit_limit="5/minute",
                                  ratelimit_key=_key(kind)))


def test_every_kind_has_a_resolver_in_the_core() -> None:
    assert set(RESOLVERS) == {kind.name for kind in KINDS}


@pytest.mark.parametrize("kind", PARAMS)
def test_the_settings_accept_each_kind(kind: Kind) -> None:
    key = _key(kind)
    assert Settings(redis_url="memory://", ratelimit_key=key).ratelimit_key is key
    if kind.settable:
        rule = {"/x": {"limit": "1/minute", "key": key}}
        assert Settings(redis_url="memory://", ratelimit_rules=rule).ratelimit_rules[0][1].key
        if kind.name == "user" or kind.credential:
            assert Settings(redis_url="memory://", presence_key=str(key)).presence_key == key


@pytest.mark.parametrize("kind", PARAMS)
def test_the_core_resolves_each_kind(kind: Kind) -> None:
    """An identity for a request that carries what the kind reads (with and without a
    user), namespaced by the kind that made it; the core loads the user only for the
    kinds that need one."""
    core = _core(kind)
    with_user = core.identity(CARRYING, lambda: "42")
    assert with_user is not None
    if kind.identity:
        assert with_user.startswith(kind.name + ":")
    assert core.needs_user(CARRYING) is kind.needs_user
    if not kind.needs_user:
        assert core.identity(CARRYING, lambda: None) == with_user


@pytest.mark.parametrize("kind", PARAMS)
def test_the_cli_takes_the_identities_each_kind_makes(
        kind: Kind, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REDIS_URL", "REDIS_MIDDLEWARE_KEY_PREFIX", "REDIS_MIDDLEWARE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_MIDDLEWARE_RATELIMIT_LIMIT", "5/minute")
    core = _core(kind)
    made = {core.identity(request, user) for request in (CARRYING, BARE)
            for user in (lambda: "42", lambda: None)} - {None}
    assert made
    for identity in sorted(str(i) for i in made):
        assert main(["--json", "ratelimit", "show", "--key", identity]) == 0, identity
        assert list(json.loads(capsys.readouterr().out)) == ["default"]


@pytest.mark.parametrize("kind", PARAMS)
def test_the_rate_limit_page_names_each_kind(kind: Kind) -> None:
    page = PAGE.read_text()
    if kind.settable:
        assert f"`{kind.spelling}`" in page or f"`{_key(kind)}`" in page
    if kind.identity:
        assert f"`{kind.name}:" in page
