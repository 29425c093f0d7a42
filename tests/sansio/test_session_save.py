"""What saving a session writes, decided with no Redis: exact commands per case."""

from __future__ import annotations

from typing import Any

import pytest

from redis_middleware.sansio.sessions.cookies import IncomingCookie, new_session_id
from redis_middleware.sansio.sessions.core import CookieRules, SaveResult, SessionCore
from redis_middleware.sansio.sessions.mapping import Session, session_use
from redis_middleware.sansio.sessions.scripts import META

from .helpers import batches, commands, settings

SID = new_session_id()


def core() -> SessionCore:
    return SessionCore(settings())


def loaded(c: SessionCore, data: dict[str, Any] | None) -> Session:
    """A session as loaded from Redis (None: no hash behind the cookie)."""
    session = c.session_for(IncomingCookie(SID, present=True))
    if data is None:
        session.set_loaded(None)
    else:
        session.set_loaded((dict(data), {k: c_encode(v) for k, v in data.items()}))
    return session


def c_encode(value: Any) -> str:
    from redis_middleware.sansio.sessions.mapping import encode

    return encode(value)


def script_mode(batch: Any) -> str:
    """The save script's mode argument (create / update / move)."""
    return str(batch[0].args[3 + 2])


def case_create(s: Session) -> None:
    s["cart"] = [1]


def case_update(s: Session) -> None:
    s["theme"] = "dark"


def case_login(s: Session) -> None:
    s["user_id"] = "7"
    s.regenerate()


def case_delete_key(s: Session) -> None:
    del s["theme"]


def case_logout(s: Session) -> None:
    s.clear()


def case_read_only(s: Session) -> None:
    _ = s.get("theme")


@pytest.mark.parametrize(
    ("before", "change", "expected", "mode", "cookie"),
    [
        pytest.param(None, case_create, ["EVALSHA"], "create", "set", id="new-session-creates"),
        pytest.param({"theme": "light"}, case_update, ["EVALSHA"], "update", None,
                     id="a-change-updates-in-place-no-cookie"),
        pytest.param({"theme": "light", "a": 1}, case_delete_key, ["EVALSHA"], "update", None,
                     id="a-deleted-key-is-an-HDEL-in-the-script"),
        pytest.param({"theme": "light"}, case_delete_key, ["DEL"], None, "expire",
                     id="deleting-the-last-key-ends-the-session"),
        pytest.param({"theme": "light"}, case_login,
                     ["EVALSHA", "ZADD", "ZREMRANGEBYSCORE", "EXPIRE"], "move", "set",
                     id="login-moves-to-a-new-id-and-indexes-the-user"),
        pytest.param({"theme": "light", "user_id": "7"}, case_logout,
                     ["DEL", "ZREM"], None, "expire", id="logout-deletes-and-expires"),
        pytest.param({"theme": "light"}, case_read_only, [], None, None,
                     id="a-read-costs-no-write"),
        pytest.param(None, case_read_only, [], None, None,
                     id="an-empty-new-session-writes-nothing"),
    ],
)
def test_save_table(before: dict[str, Any] | None, change: Any, expected: list[str],
                    mode: str | None, cookie: str | None) -> None:
    c = core()
    session = loaded(c, before)
    change(session)
    incoming = IncomingCookie(SID, present=True)
    answers = [[1] * len(expected)] if expected else []
    seen, result = batches(c.save_flow(session, incoming, https=False), answers)
    assert isinstance(result, SaveResult)
    if expected:
        assert commands(seen[0]) == expected
    else:
        assert seen == [] or seen == [()]
    if mode is not None:
        assert script_mode(seen[0]) == mode
    if cookie is None:
        assert result.set_cookie is None
    elif cookie == "set":
        assert result.set_cookie is not None and "Max-Age=0" not in result.set_cookie
    else:
        assert result.set_cookie is not None and "Max-Age=0" in result.set_cookie


def test_only_the_changed_field_is_sent() -> None:
    c = core()
    session = loaded(c, {"a": 1, "b": [1, 2], "c": "x"})
    session["a"] = 2
    seen, _ = batches(c.save_flow(session, IncomingCookie(SID, present=True), False), [[1]])
    args = list(seen[0][0].args)
    # EVALSHA sha 2 key old | mode now idle absolute meta now36 moved grace | n_set
    # (field value)* n_del field*
    assert args[13] == 1 and args[14:16] == ["a", "2"] and args[16] == 0
    assert META not in args[13:]


def test_a_refused_update_expires_the_cookie_and_reports_not_stored() -> None:
    """A logout elsewhere deleted the hash: the slow request must not resurrect it."""
    c = core()
    session = loaded(c, {"a": 1})
    session["a"] = 2
    _, result = batches(c.save_flow(session, IncomingCookie(SID, present=True), False), [[0]])
    assert result == SaveResult(result.set_cookie, False)
    assert result.set_cookie is not None and "Max-Age=0" in result.set_cookie


@pytest.mark.parametrize(
    ("stored", "zadd", "then"),
    [
        pytest.param(1, 1, [], id="stored-keeps-its-index-entry"),
        pytest.param(0, 1, ["ZREM"], id="refused-takes-back-the-entry-it-added"),
        pytest.param(2, 1, ["ZREM"], id="followed-a-login-takes-back-the-old-id"),
        pytest.param(0, 0, [], id="refused-leaves-an-entry-it-did-not-add"),
    ],
)
def test_the_user_index_keeps_only_a_stored_session(stored: int, zadd: int,
                                                    then: list[str]) -> None:
    """The index lives in another Cluster slot than the session, so the script cannot
    update it: a save that was not stored takes back what its round trip added."""
    c = core()
    session = loaded(c, {"user_id": "7", "a": 1})
    session["a"] = 2
    answers = [[stored, zadd, 0, 1]] + ([[1]] if then else [])
    seen, _ = batches(c.save_flow(session, IncomingCookie(SID, present=True), False), answers)
    assert commands(seen[0]) == ["EVALSHA", "ZADD", "ZREMRANGEBYSCORE", "EXPIRE"]
    assert [commands(b) for b in seen[1:]] == ([then] if then else [])
    if then:
        assert seen[1][0].args[2] == c.ref(SID)


@pytest.mark.parametrize("lifetime", [0, -1])
def test_a_lifetime_of_zero_or_less_writes_nothing_and_expires_the_cookie(
        lifetime: int) -> None:
    c = SessionCore(settings(session_absolute_lifetime=lifetime))
    session = loaded(c, None)
    session["a"] = 1
    seen, result = batches(c.save_flow(session, IncomingCookie(None), https=False), [])
    assert seen == []
    assert result.set_cookie is not None and "Max-Age=0" in result.set_cookie


# Flask's cookie rules (the Flask adapter's): the cookie is sent again when the session
# was assigned to, an equal value too; the other adapters' rules send nothing for it.
FLASK_RULES = CookieRules(follow_permanent=True, resend_on_change=True)


def assign_equal(s: Session) -> None:
    s["theme"] = "light"


def mark_by_hand(s: Session) -> None:
    s.modified = True


@pytest.mark.parametrize("assign", [assign_equal, mark_by_hand], ids=["equal", "by-hand"])
@pytest.mark.parametrize(("rules", "cookie"), [(FLASK_RULES, True), (CookieRules(), False)],
                         ids=["flask-rules", "other-adapters"])
def test_an_assignment_that_changes_nothing_writes_nothing(
        assign: Any, rules: CookieRules, cookie: bool) -> None:
    c = SessionCore(settings(), rules=rules)
    session = loaded(c, {"theme": "light"})
    assign(session)
    assert session.assigned
    seen, result = batches(c.save_flow(session, IncomingCookie(SID, present=True), False), [])
    assert seen == []  # no command
    assert (result.set_cookie is not None) is cookie
    if cookie:
        assert result.set_cookie is not None and "Max-Age=0" not in result.set_cookie
    # A plain Session's ``modified`` (the other adapters', and the response cache's
    # question) stays "something will be written".
    assert session.modified is False
    assert session_use(session) == "read"


def test_a_read_is_no_assignment_under_flask_rules() -> None:
    c = SessionCore(settings(), rules=FLASK_RULES)
    session = loaded(c, {"theme": "light"})
    case_read_only(session)
    assert not session.assigned
    seen, result = batches(c.save_flow(session, IncomingCookie(SID, present=True), False), [])
    assert seen == [] and result.set_cookie is None


@pytest.mark.parametrize(("rules", "cookie"), [(FLASK_RULES, True), (CookieRules(), False)],
                         ids=["flask-rules", "other-adapters"])
def test_clearing_a_session_with_nothing_stored(rules: CookieRules, cookie: bool) -> None:
    """No stored session stood behind the cookie: nothing to delete, and under Flask's
    rules the emptied session's cookie is expired."""
    c = SessionCore(settings(), rules=rules)
    session = loaded(c, None)
    session.clear()
    seen, result = batches(c.save_flow(session, IncomingCookie(SID, present=True), False), [])
    assert seen == []
    assert (result.set_cookie is not None) is cookie
    if cookie:
        assert result.set_cookie is not None and "Max-Age=0" in result.set_cookie
