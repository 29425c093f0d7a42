"""The one hook through which every component reports what it did, for metrics.

Nothing is reported until a recorder is installed (``redis_middleware.prometheus``
installs one): each report site is ``if metrics.hook is not None: ...``, one attribute
read, so the cost without metrics is nil (``docs/benchmarks.md`` measures it). Label
values are bounded: route patterns and rule names from the configuration, fixed sets of
outcomes and reasons, identity *kinds* (never a path as sent, a user id or an address).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Recorder", "hook", "install"]


class Recorder(Protocol):
    """What a metrics backend receives."""

    def cache(self, outcome: str, route: str, reason: str) -> None:
        """A cached route answered: ``hit``, ``stale``, ``revalidated``,
        ``stale-if-error``, ``miss`` (``reason``: why not stored, or ``stored``) or
        ``bypass`` (``reason``: why)."""

    def ratelimit(self, decision: str, rule: str, identity: str) -> None:
        """``allowed``, ``limited`` or ``error`` by rule name and identity kind."""

    def session(self, operation: str) -> None:
        """``load``, ``write``, ``regenerate``, ``conflict`` (a write refused: deleted
        meanwhile), ``size-refused``, ``unavailable``."""

    def presence(self, event: str, count: int = 1) -> None:
        """``heartbeat``, ``online`` (came online), ``offline`` (swept or removed)."""

    def data(self, event: str, function: str, seconds: float = 0.0) -> None:
        """The data cache, per cached function (its qualified name, or the ``name=`` of a
        ``get_or_set``, else ``get_or_set``/``get``): a lookup's outcome (``hit``,
        ``stale``: served while one caller refreshes it, ``miss``, ``bypass``: Redis
        failed), ``load`` (the loader ran ``seconds``) or ``wait`` (a caller waited
        ``seconds`` for another's load: the stampede guard at work)."""

    def near(self, event: str, reason: str = "", count: int = 1) -> None:
        """The near cache: a lookup's ``hit`` or ``miss`` (while it serves), entries
        dropped by an ``invalidation`` (Redis said their key changed, or this process
        wrote it) or an ``eviction`` (over its bounds), a ``flush`` (``reason``:
        ``disconnect``, ``failover``, ``breaker``, ``flushdb``), or ``off`` (``reason``:
        ``refused``, ``memory``, ``url``)."""

    def redis(self, seconds: float, commands: int, error: str | None) -> None:
        """One round trip: its duration, its commands, and its failure class if any."""

    def breaker(self, target: str, is_open: bool) -> None:
        """The circuit breaker of ``target`` opened or closed."""


hook: Recorder | None = None


def install(recorder: Recorder | None) -> None:
    """Send every report to ``recorder`` from now on (None: stop reporting)."""
    global hook
    hook = recorder
