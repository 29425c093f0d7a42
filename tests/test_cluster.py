"""The middleware scenarios, again, on a real three-master Redis Cluster
(``redis+cluster://``), ASGI and WSGI: no CROSSSLOT anywhere, scripts included."""

from __future__ import annotations

from typing import Any

import pytest

from .test_cache import (  # noqa: F401 - collected again here, on the cluster
    test_concurrent_cold_misses_run_the_app_once,
    test_purge_url_tag_and_all,
    test_second_get_is_a_hit_restored_exactly,
    test_unsafe_methods_are_not_cached_and_invalidate,
    test_vary_separates_entries,
)
from .test_presence import (  # noqa: F401
    test_counts_and_lists_at_ten_thousand_users,
    test_rooms_are_separate,
)
from .test_ratelimit import (  # noqa: F401
    test_a_rejected_request_consumes_nothing,
    test_rules_exempt_cost_and_methods,
    test_sixth_request_of_five_per_minute,
    test_usage_and_reset_api,
    test_user_limits_follow_the_user_across_addresses,
)
from .test_sessions import (  # noqa: F401
    test_clear_deletes_the_hash_and_expires_the_cookie,
    test_concurrent_requests_keep_both_changes,
    test_json_values_round_trip_exactly,
    test_log_out_everywhere,
    test_logout_racing_a_slow_write_leaves_no_session,
    test_only_changed_fields_are_written,
    test_regenerate_moves_data_and_kills_the_old_cookie,
)
from .test_stack import (  # noqa: F401
    test_order_user_limits_and_cache,
    test_round_trip_budget,
    test_session_writes_and_cache_in_one_stack,
)

pytestmark = pytest.mark.real_redis


@pytest.fixture
def backend_url(redis_cluster: Any) -> str:
    """Every scenario above runs on the cluster instead of the default backends."""
    return str(redis_cluster.url)
