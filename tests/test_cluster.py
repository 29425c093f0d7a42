"""The middleware scenario suite, again, on a real three-master Redis Cluster
(``redis+cluster://``), ASGI and WSGI: no CROSSSLOT anywhere, scripts included."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redis_middleware._redis.connections import connections_for

from .conftest import Clients, RedisServer, make_settings, raw_client, start_redis_cluster
from .test_cache import (  # noqa: F401 - collected again here, on the cluster
    test_a_disconnected_stream_is_not_stored,
    test_age_grows,
    test_concurrent_cold_misses_run_the_app_once,
    test_head_is_answered_from_the_get_entry,
    test_host_is_part_of_the_key_and_can_be_allow_listed,
    test_if_none_match_gets_304,
    test_large_and_streaming_bodies,
    test_never_stored,
    test_purge_indexes_hold_only_live_urls,
    test_purge_url_tag_and_all,
    test_query_order_is_normalised,
    test_request_rules,
    test_second_get_is_a_hit_restored_exactly,
    test_session_touching_responses_are_not_stored,
    test_stale_if_error_serves_stale_on_failure,
    test_stale_while_revalidate,
    test_ttl_is_shortened_by_max_age,
    test_uncached_routes_are_untouched,
    test_unsafe_methods_are_not_cached_and_invalidate,
    test_vary_separates_entries,
)
from .test_presence import (  # noqa: F401 - collected again here, on the cluster
    events,
    fast,
    test_coming_back_before_the_sweep_publishes_both_transitions,
    test_counts_and_lists_at_ten_thousand_users,
    test_event_helpers,
    test_explicit_remove_is_offline_at_once,
    test_online_after_a_request_offline_after_ttl,
    test_rooms_are_separate,
    test_throttling_costs_one_write_per_interval,
    test_two_devices_and_two_sweepers_publish_once,
    test_websocket_leases_and_reload_grace,
)
from .test_ratelimit import (  # noqa: F401 - collected again here, on the cluster
    test_a_rejected_request_consumes_nothing,
    test_draft_headers,
    test_dry_run_limits_nothing,
    test_headers_on_errors_and_streams,
    test_high_concurrency_admits_exactly_n,
    test_ipv6_clients_are_grouped_by_64,
    test_limits_library_strategies,
    test_one_round_trip_for_any_number_of_limits,
    test_rules_exempt_cost_and_methods,
    test_sixth_request_of_five_per_minute,
    test_spoofed_forwarded_for_is_ignored_from_untrusted_peers,
    test_trusted_proxy_chain_resolves_the_client,
    test_usage_and_reset_api,
    test_user_limits_follow_the_user_across_addresses,
    test_websocket_connect_is_limited,
)
from .test_sessions import (  # noqa: F401 - collected again here, on the cluster
    test_absolute_lifetime,
    test_bad_cookies_are_no_session_and_cost_nothing,
    test_clear_deletes_the_hash_and_expires_the_cookie,
    test_concurrent_requests_keep_both_changes,
    test_cookie_attributes,
    test_idle_timeout,
    test_json_values_round_trip_exactly,
    test_log_out_everywhere,
    test_logout_racing_a_slow_write_leaves_no_session,
    test_only_changed_fields_are_written,
    test_regenerate_moves_data_and_kills_the_old_cookie,
    test_revoke_one_session,
    test_round_trips_per_request,
    test_secret_rotation_keeps_sessions_and_resigns,
    test_size_limits,
    test_unknown_id_is_never_adopted,
    test_untouched_and_empty_sessions_set_nothing,
)
from .test_stack import (  # noqa: F401 - collected again here, on the cluster
    test_cache_hits_are_counted_unless_configured,
    test_components_can_be_switched_off,
    test_flask_stack,
    test_options_are_validated,
    test_order_user_limits_and_cache,
    test_round_trip_budget,
    test_session_writes_and_cache_in_one_stack,
    test_stale_if_error_in_the_stack,
)

pytestmark = pytest.mark.real_redis


@pytest.fixture
def backend_url(redis_cluster: Any) -> str:
    """Every scenario above runs on the cluster instead of the default backends."""
    return str(redis_cluster.url)


def _role(server: RedisServer) -> str:
    with server.client() as c:
        return str(c.info("replication")["role"])


def _eventually(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _master_of(servers: list[RedisServer], key: str) -> RedisServer:
    with servers[0].client() as c:
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        ranges = c.execute_command("CLUSTER", "SLOTS")
    port = next(r[2][1] for r in ranges if r[0] <= slot <= r[1])
    return next(s for s in servers if s.port == port)


@pytest.mark.slow
def test_apps_follow_cluster_failovers(tmp_path: Path) -> None:
    """Three masters with a replica each. A manual failover of every master (``CLUSTER
    FAILOVER`` on each replica) loses no session data; then the master holding a session
    is killed outright and its replica takes over. ASGI and WSGI apps follow both, with a
    503 at worst while a master is missing, never a 500."""
    cluster = start_redis_cluster(tmp_path, replicas=1, node_timeout_ms=1000)
    settings = make_settings(cluster.url, breaker_cooldown=0.2)
    asgi, wsgi = Clients("asgi", settings), Clients("wsgi", settings)
    statuses: list[int] = []

    def write_until_ok(client: Any, payload: dict[str, int]) -> None:
        def ok() -> bool:
            statuses.append(client.post("/set", json=payload).status_code)
            return statuses[-1] == 200
        _eventually(ok, "the app did not follow the new master")

    try:
        clients = [asgi("RedisMiddleware", limit="10000/minute"),
                   wsgi("RedisMiddleware", limit="10000/minute")]
        for client in clients:
            write_until_ok(client, {"before": 1})
        replicas = [s for s in cluster.servers if _role(s) == "slave"]
        for replica in replicas:
            with replica.client() as c:
                c.execute_command("CLUSTER", "FAILOVER")
        _eventually(lambda: all(_role(r) == "master" for r in replicas), "no failover")
        for client in clients:
            write_until_ok(client, {"after": 2})
            assert client.get("/get").json() == {"before": 1, "after": 2}

        admin = raw_client(settings)
        session_key = next(k.decode() for k in admin.scan_iter(
            match=f"{settings.key_prefix}:session:*", target_nodes="primaries")
            if admin.type(k) == b"hash")
        admin.close()
        victim = _master_of(cluster.servers, session_key)
        # redis-py's sync cluster client asks one "default" node for script keys; make it
        # the victim, so that every run also covers losing that node.
        sync_client = connections_for(settings).sync_client()
        sync_client.set_default_node(sync_client.get_node("127.0.0.1", victim.port))
        victim.proc.kill()
        victim.proc.wait()
        for client in clients:
            write_until_ok(client, {"after_kill": 3})
            assert client.get("/get").status_code == 200
        assert set(statuses) <= {200, 503}, statuses
    finally:
        asgi.close()
        wsgi.close()
        cluster.stop()
