"""The near cache's decisions with no Redis: the memory (bounds, deadlines, tickets,
invalidations), the copies a hit returns, what a frame on the tracking connection
means, the handshake and its refusals, and the response cache's lookup with a near
cache (served with no batch only while fresh; what it keeps, what it forgets)."""

from __future__ import annotations

import marshal
import tracemalloc
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import hiredis
import pytest

from redis_middleware.sansio import metrics
from redis_middleware.sansio.cache import CacheCore, CachePlan, Entry
from redis_middleware.sansio.cache import near as decide
from redis_middleware.sansio.cache.near import (
    ENTRY_OVERHEAD,
    MISS,
    NearStore,
    Ticket,
    classify,
    freeze,
    thaw,
)
from redis_middleware.sansio.flow import run_pure

from .helpers import batches, commands, request, settings

NOW = 1_000.0


def store(entries: int = 100, size: int = 1 << 20, ttl: float = 60.0) -> NearStore:
    return NearStore(entries, size, ttl)


def kept(s: NearStore, key: str, value: Any, size: int = 10, now: float = NOW,
         ttl: float | None = None) -> bool:
    return s.store(s.begin(key), value, size, now, ttl)


# -- the memory ---------------------------------------------------------------------------
def test_a_kept_value_is_served_until_its_deadline() -> None:
    s = store(ttl=60)
    assert s.get("k", NOW) is MISS
    assert kept(s, "k", "v")
    assert s.get("k", NOW + 59.9) == "v"
    assert s.get("k", NOW + 60) is MISS  # never past near_cache_ttl
    assert len(s) == 0 and s.bytes == 0
    assert (s.hits, s.misses) == (1, 2)


@pytest.mark.parametrize(("key_ttl", "served_until"), [
    pytest.param(5.0, 5.0, id="the-key-expires-first"),
    pytest.param(600.0, 60.0, id="near-cache-ttl-first"),
    pytest.param(None, 60.0, id="the-key-never-expires"),
])
def test_the_deadline_is_the_sooner_of_the_two(key_ttl: float | None,
                                               served_until: float) -> None:
    s = store(ttl=60)
    kept(s, "k", "v", ttl=key_ttl)
    assert s.get("k", NOW + served_until - 0.001) == "v"
    assert s.get("k", NOW + served_until) is MISS


def test_least_recently_used_goes_first_past_the_entries_bound() -> None:
    s = store(entries=3)
    for key in "abc":
        kept(s, key, key)
    assert s.get("a", NOW) == "a"  # now the most recent
    kept(s, "d", "d")
    assert [k for k in "abcd" if s.get(k, NOW) is not MISS] == ["a", "c", "d"]
    assert s.evictions == 1


def test_the_bytes_bound_counts_key_value_and_overhead() -> None:
    one = len("k0") + 100 + ENTRY_OVERHEAD
    s = store(entries=1000, size=one * 8)
    for i in range(8):
        assert kept(s, f"k{i}", "v", size=100)
    assert s.bytes == one * 8 and len(s) == 8
    kept(s, "k8", "v", size=100)
    assert s.bytes == one * 8 and len(s) == 8 and s.get("k0", NOW) is MISS


def test_an_entry_over_an_eighth_of_the_bytes_is_not_kept() -> None:
    s = store(size=8 * 1024)
    assert not kept(s, "big", "v", size=1024)
    assert kept(s, "small", "v", size=1024 - ENTRY_OVERHEAD - len("small"))
    # What the view asks before copying a value: the same line.
    assert not s.fits("big", 1024) and s.fits("small", 1024 - ENTRY_OVERHEAD - len("small"))
    assert not s.fits("small", 1025 - ENTRY_OVERHEAD - len("small"))


def test_a_rewrite_replaces_the_entry_and_its_bytes() -> None:
    s = store()
    kept(s, "k", "old", size=10)
    kept(s, "k", "new", size=30)
    assert s.get("k", NOW) == "new" and s.bytes == len("k") + 30 + ENTRY_OVERHEAD


@pytest.mark.parametrize("what", [
    pytest.param("invalidate", id="redis-said-the-key-changed"),
    pytest.param("flush", id="everything-may-have-changed"),
])
def test_a_read_that_raced_a_change_is_not_kept(what: str) -> None:
    """The reply of a read sent before the change may carry the old value."""
    s = store()
    ticket = s.begin("k")
    s.invalidate(["k"]) if what == "invalidate" else s.flush("")
    assert not s.store(ticket, "old", 3, NOW)
    assert s.get("k", NOW) is MISS and s.refused == 1
    assert kept(s, "k", "new")  # a read that starts after the change is kept


def test_concurrent_reads_of_one_key_each_keep_their_reply() -> None:
    """Under load a hot key always has a read in flight: a ticket must not void the
    others, or nothing would ever be kept."""
    s = store()
    first, second = s.begin("k"), s.begin("k")
    third = s.begin("k")
    assert s.store(first, "v1", 2, NOW)
    s.abandon(second)
    assert s.store(third, "v3", 2, NOW)
    assert s.get("k", NOW) == "v3"


def test_a_change_voids_every_open_read_of_the_key_and_no_other() -> None:
    s = store()
    a, b, other = s.begin("k"), s.begin("k"), s.begin("j")
    s.invalidate(["k"])
    later = s.begin("k")
    assert not s.store(a, "x", 1, NOW) and not s.store(b, "x", 1, NOW)
    assert s.store(other, "y", 1, NOW) and s.store(later, "z", 1, NOW)


def test_reads_that_never_ended_are_forgotten_and_voided() -> None:
    s = store(entries=1)
    lost = [s.begin(f"k{i}") for i in range(1028)]
    assert len(s._reading) == 1028
    fresh = s.begin("new")  # over 4 x entries + 1024: all forgotten
    assert len(s._reading) == 1
    assert not s.store(lost[0], "x", 1, NOW)  # no invalidation could reach it any more
    assert s.store(fresh, "y", 1, NOW)


def test_invalidation_counts_only_what_was_kept() -> None:
    s = store()
    kept(s, "a", 1)
    kept(s, "b", 2)
    assert s.invalidate(["a", "b", "c"]) == 2
    assert s.invalidations == 2 and s.bytes == 0


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def near(self, event: str, reason: str = "", count: int = 1) -> None:
        self.events.append((event, reason, count))


def test_metrics_hits_misses_invalidations_evictions_flushes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(metrics, "hook", recorder)
    s = store(entries=1)
    s.get("a", NOW)
    kept(s, "a", 1)
    s.get("a", NOW)
    kept(s, "b", 2)  # evicts a
    s.invalidate(["b"])
    s.flush("disconnect")
    assert recorder.events == [("miss", "", 1), ("hit", "", 1), ("eviction", "", 1),
                               ("invalidation", "", 1), ("flush", "disconnect", 1)]


def test_a_million_distinct_keys_stay_within_both_bounds() -> None:
    """Entries and accounted bytes never pass their bounds, and what the process really
    allocates stays within the accounted bytes (the per-entry overhead is measured)."""
    s = NearStore(5_000, 4 << 20, 60)
    values = ["x" * (10 + size) for size in range(2000)]  # sizes from 10 to 2,009 bytes
    for i in range(1_000_000):
        value = values[i % 2000]
        s.store(s.begin(f"t:data:{{k{i}}}"), value, len(value), NOW)
        if i % 1000 == 0:
            assert len(s) <= 5_000 and s.bytes <= 4 << 20
    assert len(s) <= 5_000 and s.bytes <= 4 << 20 and s.evictions > 990_000
    del s
    # Real memory: what 20,000 entries allocate against what they are counted for.
    tracemalloc.start()
    try:
        s = NearStore(20_000, 1 << 40, 60)
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            key, value = f"t:data:{{k{i}}}", b"x" * (10 + i % 500)
            s.store(s.begin(key), value, len(value), NOW)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used <= s.bytes * 1.05, (used, s.bytes)


# -- copies -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    pytest.param("text", id="str"), pytest.param(b"raw", id="bytes"), pytest.param(42, id="int"),
    pytest.param(1.5, id="float"), pytest.param(True, id="bool"), pytest.param(None, id="none"),
])
def test_immutable_values_are_kept_as_they_are(value: Any) -> None:
    assert freeze(value) is value and thaw(value) is value


@pytest.mark.parametrize("value", [
    pytest.param({"a": [1, {"b": None}], "c": "d"}, id="json-object"),
    pytest.param([1, 2.5, "x", [True]], id="json-array"),
    pytest.param({"t": (1, 2), "s": {1, 2}, "b": b"x"}, id="tuples-sets-bytes"),
])
def test_each_hit_gets_a_copy_of_its_own(value: Any) -> None:
    frozen = freeze(value)
    first, second = thaw(frozen), thaw(frozen)
    assert first == value == second and first is not second
    first_inner = next(iter(first.values())) if isinstance(first, dict) else first[-1]
    assert first_inner is not (
        next(iter(second.values())) if isinstance(second, dict) else second[-1])


@pytest.mark.parametrize("value", [
    pytest.param(OrderedDict(a=1), id="a-dict-subclass"),
    pytest.param([object()], id="an-object-inside"),
])
def test_what_cannot_be_copied_is_not_kept(value: Any) -> None:
    with pytest.raises(ValueError, match="unmarshallable"):
        marshal.dumps(value)
    assert freeze(value) is MISS


# -- frames ---------------------------------------------------------------------------------
def push(*items: Any) -> Any:
    """A RESP3 push frame, as hiredis reads it."""
    reader = hiredis.Reader()
    reader.feed(b">%d\r\n" % len(items) + b"".join(_resp(i) for i in items))
    return reader.gets()


def _resp(item: Any) -> bytes:
    if item is None:
        return b"_\r\n"
    if isinstance(item, list):
        return b"*%d\r\n" % len(item) + b"".join(_resp(i) for i in item)
    if isinstance(item, int):
        return b":%d\r\n" % item
    return b"$%d\r\n%s\r\n" % (len(item), item)


@pytest.mark.parametrize(("frame", "is_push", "kind", "keys"), [
    pytest.param(push(b"invalidate", [b"t:data:a", b"t:data:b"]), True, decide.INVALIDATE,
                 ["t:data:a", "t:data:b"], id="resp3-keys"),
    pytest.param(push(b"invalidate", None), True, decide.FLUSH, [], id="resp3-flushdb"),
    pytest.param([b"message", b"__redis__:invalidate", [b"t:cache:x"]], False,
                 decide.INVALIDATE, ["t:cache:x"], id="resp2-redirected-keys"),
    pytest.param([b"message", b"__redis__:invalidate", None], False, decide.FLUSH, [],
                 id="resp2-flushdb"),
    pytest.param(push(b"invalidate", [b"\xff\xfe"]), True, decide.INVALIDATE,
                 ["\udcff\udcfe"], id="a-key-not-utf8-matches-nothing"),
    pytest.param(push(b"subscribe", b"t:near", 1), True, decide.IGNORE, [],
                 id="resp3-subscribed"),
    pytest.param([b"subscribe", b"__redis__:invalidate", 1], False, decide.IGNORE, [],
                 id="resp2-subscribed"),
    pytest.param(push(b"message", b"t:near", b"hi"), True, decide.IGNORE, [],
                 id="a-message-on-our-channel"),
    pytest.param(push(b"tracking-redir-broken", 7), True, decide.BROKEN, [],
                 id="redirect-broken"),
    pytest.param([b"master", 123, []], False, decide.ANSWER, [], id="role-master"),
    pytest.param([b"slave", b"127.0.0.1", 6379, b"connected", 10], False, decide.DEMOTED, [],
                 id="role-replica"),
    pytest.param([b"sentinel", [b"svc"]], False, decide.DEMOTED, [], id="role-sentinel"),
    pytest.param([b"pong", b""], False, decide.ANSWER, [], id="ping-in-pubsub-mode"),
    pytest.param(b"PONG", False, decide.ANSWER, [], id="ping"),
    pytest.param(hiredis.ReplyError("ERR no"), False, decide.BROKEN, [], id="an-error"),
])
def test_what_a_frame_means(frame: Any, is_push: bool, kind: str, keys: list[str]) -> None:
    assert (type(frame) is hiredis.PushNotification) == is_push
    assert classify(frame, is_push) == (kind, keys)


# -- the handshake --------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "user", "password", "command"), [
    pytest.param(3, None, None, ("HELLO", 3, "SETNAME", decide.NAME), id="resp3"),
    pytest.param(3, None, "pw", ("HELLO", 3, "AUTH", "default", "pw", "SETNAME", decide.NAME),
                 id="resp3-password"),
    pytest.param(3, "ann", "pw", ("HELLO", 3, "AUTH", "ann", "pw", "SETNAME", decide.NAME),
                 id="resp3-acl-user"),
    pytest.param(2, None, None, ("PING",), id="resp2"),
    pytest.param(2, None, "pw", ("AUTH", "pw"), id="resp2-password"),
    pytest.param(2, "ann", "pw", ("AUTH", "ann", "pw"), id="resp2-acl-user"),
])
def test_the_first_command(protocol: int, user: str | None, password: str | None,
                           command: tuple[Any, ...]) -> None:
    assert decide.hello(protocol, user, password) == command


def test_tracking_is_bcast_on_our_prefixes() -> None:
    tracked = decide.prefixes("app")
    assert tracked == ("app:data:", "app:cache:")
    assert decide.tracking(3, tracked, None, "app:near") == [
        ("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "app:data:", "PREFIX", "app:cache:"),
        ("SUBSCRIBE", "app:near")]
    assert decide.tracking(2, tracked, 17, "app:near") == [
        ("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "app:data:", "PREFIX", "app:cache:",
         "REDIRECT", 17), ("SUBSCRIBE", "__redis__:invalidate")]


@pytest.mark.parametrize(("reply", "refused"), [
    pytest.param(hiredis.ReplyError("ERR unknown command 'CLIENT', with args beginning with: "
                                    "'TRACKING'"), True, id="client-renamed"),
    pytest.param(hiredis.ReplyError("NOPERM User ann has no permissions to run the "
                                    "'client|tracking' command"), True, id="acl"),
    pytest.param(hiredis.ReplyError("ERR syntax error"), True, id="no-bcast-or-prefix"),
    pytest.param(hiredis.ReplyError("LOADING Redis is loading the dataset in memory"), False,
                 id="loading-after-a-restart"),
    pytest.param(hiredis.ReplyError("BUSY Redis is busy running a script"), False, id="busy"),
    pytest.param(hiredis.ReplyError("MASTERDOWN Link with MASTER is down"), False,
                 id="masterdown"),
    pytest.param(ConnectionResetError(), False, id="a-connection-error"),
    pytest.param(b"OK", False, id="accepted"),
])
def test_which_replies_turn_the_near_cache_off(reply: Any, refused: bool) -> None:
    assert decide.refusal(reply) is refused


@pytest.mark.parametrize(("reply", "resp2"), [
    pytest.param(hiredis.ReplyError("ERR unknown command 'HELLO'"), True, id="hello-unknown"),
    pytest.param(hiredis.ReplyError("NOPROTO unsupported protocol version"), True,
                 id="noproto"),
    pytest.param(hiredis.ReplyError("WRONGPASS invalid username-password pair"), False,
                 id="bad-credentials"),
])
def test_which_hello_refusals_mean_resp2(reply: Any, resp2: bool) -> None:
    assert decide.hello_refused(reply) is resp2


# -- the response cache with a near cache ---------------------------------------------------------
class MemoryNear:
    """A near cache with the memory alone (serving while ``up``), as the cores see it."""

    def __init__(self) -> None:
        self.store = NearStore(1000, 1 << 20, 60)
        self.up = True
        self.clock = 0.0  # monotonic time of the store

    def get(self, key: str) -> Any:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not self.up:
            return [MISS] * len(keys)
        return [thaw(k) if (k := self.store.get(key, self.clock)) is not MISS else MISS
                for key in keys]

    def ticket(self, key: str) -> Ticket | None:
        return self.store.begin(key) if self.up else None

    def put(self, ticket: Ticket | None, value: Any, size: int, ttl_ms: float | None = None,
            copy: bool = True) -> bool:
        if ticket is None:
            return False
        return self.store.store(ticket, freeze(value) if copy else value, size, self.clock,
                                None if ttl_ms is None else ttl_ms / 1000)

    def drop(self, ticket: Ticket | None) -> None:
        if ticket is not None:
            self.store.abandon(ticket)

    def forget(self, *keys: str) -> None:
        self.store.invalidate(keys)


def near_core() -> tuple[CacheCore, MemoryNear]:
    c = CacheCore(settings(cache_routes={"/x": 60}))
    near = c.near = MemoryNear()
    return c, near


def cache_plan(c: CacheCore, headers: tuple[tuple[str, str], ...] = (("host", "a.test"),)
               ) -> CachePlan:
    found = c.plan(request("GET", "/x", headers=headers))
    assert found is not None
    return found


def entry(fresh_for: float) -> Entry:
    return Entry(200, (("Content-Type", "text/plain"),), b"hello", NOW - 5, NOW + fresh_for,
                 0.0, 0, 0, False, False)


def test_a_lookup_keeps_the_names_and_the_fresh_entry_then_needs_no_round_trip() -> None:
    c, near = near_core()
    p = cache_plan(c)
    seen, first = batches(c.lookup_flow(p, NOW), [[[b"", entry(10).encode(), 0]]])
    assert [commands(b) for b in seen] == [["EVALSHA"]]
    assert first.entry is not None and len(near.store) == 2
    seen, second = batches(c.lookup_flow(p, NOW + 1), [])
    assert seen == [] and second.entry == first.entry and not second.locked
    assert c.next_step(p, second, second.at) == "serve"


def test_a_stale_entry_goes_to_redis_which_decides_the_guard() -> None:
    c, _ = near_core()
    p = cache_plan(c)
    batches(c.lookup_flow(p, NOW), [[[b"", entry(10).encode(), 0]]])
    seen, lookup = batches(c.lookup_flow(p, NOW + 11), [[[b"", entry(10).encode(), 1]]])
    assert [commands(b) for b in seen] == [["EVALSHA"]] and lookup.locked


def test_a_stale_entry_is_not_kept() -> None:
    c, near = near_core()
    p = cache_plan(c)
    batches(c.lookup_flow(p, NOW), [[[b"", entry(-1).encode(), 1]]])
    assert len(near.store) == 1  # the vary names alone


def test_a_missing_entry_is_not_kept_and_the_next_lookup_asks_again() -> None:
    c, _ = near_core()
    p = cache_plan(c)
    batches(c.lookup_flow(p, NOW), [[[b"", False, 1]]])
    seen, _ = batches(c.lookup_flow(p, NOW), [[[b"", False, 0]]])
    assert len(seen) == 1


def test_request_directives_narrow_a_near_hit_too() -> None:
    """5.2.1.3: min-fresh asks for more freshness than the entry has: Redis decides."""
    c, _ = near_core()
    batches(c.lookup_flow(cache_plan(c), NOW), [[[b"", entry(10).encode(), 0]]])
    p = cache_plan(c, (("host", "a.test"), ("cache-control", "min-fresh=20")))
    seen, _ = batches(c.lookup_flow(p, NOW), [[[b"", entry(10).encode(), 0]]])
    assert len(seen) == 1


def test_an_entry_changed_while_it_was_read_is_not_kept() -> None:
    c, near = near_core()
    p = cache_plan(c)
    flow = c.lookup_flow(p, NOW)
    next(flow)
    near.forget(c.keys.cache_vary(p.url), *[k for k in near.store._reading])  # a write
    with pytest.raises(StopIteration):
        flow.send([[b"", entry(10).encode(), 0]])
    assert len(near.store) == 0


def test_new_vary_names_are_kept_and_the_entry_of_the_old_ones_is_not() -> None:
    c, near = near_core()
    p = cache_plan(c)
    seen, lookup = batches(c.lookup_flow(p, NOW), [[[b"accept", False, 0]],
                                                  [[b"accept", entry(10).encode(), 0]]])
    assert len(seen) == 2 and lookup.entry is not None
    assert near.get(c.keys.cache_vary(p.url)) == "accept"
    assert len(batches(c.lookup_flow(p, NOW), [])[0]) == 0


def test_a_failed_lookup_leaves_no_open_read() -> None:
    from redis_middleware.errors import RedisUnavailableError

    c, near = near_core()
    flow = c.lookup_flow(cache_plan(c), NOW)
    next(flow)
    with pytest.raises(RedisUnavailableError):
        flow.throw(RedisUnavailableError("down"))
    assert near.store._reading == {}


def test_a_near_cache_that_does_not_serve_changes_nothing() -> None:
    c, near = near_core()
    near.up = False
    p = cache_plan(c)
    for _ in range(2):
        seen, _ = batches(c.lookup_flow(p, NOW), [[[b"", entry(10).encode(), 0]]])
        assert len(seen) == 1
    assert len(near.store) == 0


@pytest.mark.parametrize("write", ["store", "invalidate", "purge"])
def test_this_process_forgets_what_it_writes(write: str) -> None:
    c, near = near_core()
    p = cache_plan(c)
    _, lookup = batches(c.lookup_flow(p, NOW), [[[b"", entry(10).encode(), 0]]])
    assert len(near.store) == 2
    if write == "store":
        verdict = c.verdict(p, 200, [("Cache-Control", "max-age=30")], False, NOW, NOW)
        new = c.entry_of(verdict, 200, [("Cache-Control", "max-age=30")], b"new", NOW)
        run_pure(c.store_flow(p, lookup, verdict, new, NOW), [[1, 1, 1, 1]])
    elif write == "invalidate":
        run_pure(c.invalidate_flow(p.url), [[1]])
    else:
        run_pure(c.purge_urls_flow([p.url]), [[1, 1]])
    assert near.get(c.keys.cache_vary(p.url)) is MISS
    assert len(batches(c.lookup_flow(p, NOW), [[[b"", False, 0]]])[0]) == 1
