"""Rate limiting, decided without I/O: which rule applies and what the answer is (whose
bucket a request is counted in: :mod:`.identity`; its address: :mod:`.client_ip`).

Fixed window (the default) costs one round trip for any number of limits: one
script checks every limit of the rule, increments all or none (a rejected
request consumes nothing), sets the TTL of the keys it creates and returns
count and time-to-reset per limit, so the headers cost nothing more. Counters
live at ``<prefix>:ratelimit:{<identity>}:<rule>:<amount>-<seconds>``; the
counters of one identity share a Cluster hash slot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..._memo import Memo
from ...config.identity import kind_of
from ...config.patterns import PathPattern, RouteTable
from ...config.rates import Rate, parse_limits
from ...config.rules import RuleSpec
from ...config.settings import Settings
from ...keys import KeySpace, escape
from .. import metrics
from ..flow import Call, Flow, Script
from ..incidents import log_failure
from ..request import RequestInfo
from .client_ip import ProxyTrust
from .identity import IdentityResolver, identity_kind

__all__ = ["Check", "Decision", "RateLimitCore", "Rule", "Usage"]

logger = logging.getLogger("redis_middleware.ratelimit")

# KEYS: one counter per limit. ARGV: cost, then (amount, window ms) per limit.
# Returns {breached limit (1-based; 0: none), counts..., ms to reset...}. All or nothing:
# a request over any limit counts against none. One limit (the common case) is counted
# first and taken back when over, so that an allowed request runs two commands (INCRBY,
# then PTTL, or PEXPIRE when the window starts) rather than three.
_FIXED_WINDOW = Script("""
local cost, n = tonumber(ARGV[1]), #KEYS
if n == 1 then
  local c = redis.call('INCRBY', KEYS[1], cost)
  local ttl
  if c == cost then
    ttl = tonumber(ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ttl)
  else
    ttl = redis.call('PTTL', KEYS[1])
    if ttl < 0 then
      ttl = tonumber(ARGV[3])
      redis.call('PEXPIRE', KEYS[1], ttl)
    end
  end
  if c > tonumber(ARGV[2]) then
    redis.call('DECRBY', KEYS[1], cost)
    return {1, c - cost, ttl}
  end
  return {0, c, ttl}
end
local counts, ttls, breached = {}, {}, 0
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  counts[i] = c
  ttls[i] = redis.call('PTTL', KEYS[i])
  if breached == 0 and c + cost > tonumber(ARGV[2 * i]) then breached = i end
end
if breached == 0 then
  for i = 1, n do
    counts[i] = redis.call('INCRBY', KEYS[i], cost)
    if ttls[i] < 0 then
      ttls[i] = tonumber(ARGV[2 * i + 1])
      redis.call('PEXPIRE', KEYS[i], ttls[i])
    end
  end
end
local out = {breached}
for i = 1, n do out[#out + 1] = counts[i] end
for i = 1, n do out[#out + 1] = ttls[i] end
return out
""")


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule: its name (pattern or ``default``), limits, cost, methods, failure mode."""

    name: str
    items: tuple[Rate, ...]
    cost: int
    methods: frozenset[str] | None
    fail_closed: bool
    key: str | None = None  # the rule's own identity kind (None: the default)
    # Per limit, the rule whose counter it uses and its index there (default: this rule's
    # own). A route rule with the default stacked on it counts the default's counters.
    sources: tuple[tuple[str, int], ...] = ()
    # Decided once per rule, not per request: window seconds, the fixed-window script's
    # arguments, and the draft headers' names and policy.
    windows: tuple[int, ...] = field(init=False, compare=False, repr=False)
    script_args: tuple[int, ...] = field(init=False, compare=False, repr=False)
    draft_names: tuple[str, ...] = field(init=False, compare=False, repr=False)
    draft_policy: str = field(init=False, compare=False, repr=False)
    amounts: tuple[str, ...] = field(init=False, compare=False, repr=False)  # as sent

    def __post_init__(self) -> None:
        if not self.sources:
            object.__setattr__(self, "sources", tuple((self.name, i)
                                                      for i in range(len(self.items))))
        windows = tuple(item.seconds for item in self.items)
        names = tuple(f'"{item.amount}-per-{w}s"' for item, w in zip(self.items, windows,
                                                                       strict=True))
        args: list[int] = [self.cost]
        for item, w in zip(self.items, windows, strict=True):
            args += [item.amount, w * 1000]
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "script_args", tuple(args))
        object.__setattr__(self, "draft_names", names)
        object.__setattr__(self, "amounts", tuple(str(item.amount) for item in self.items))
        object.__setattr__(self, "draft_policy", ", ".join(
            f"{n};q={item.amount};w={w}" for n, item, w in zip(names, self.items, windows,
                                                                 strict=True)))

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method in self.methods


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
class Check:
    """A request that must be counted: by which rule, for whom, at which keys."""

    rule: Rule
    identity: str
    keys: tuple[str, ...]
    scope: str = ""  # the method, when counters are kept per method


@dataclass(frozen=True, slots=True)
class Usage:
    """The state of one limit for one identity."""

    limit: str
    amount: int
    used: int
    remaining: int
    reset_after: int


@dataclass(slots=True)
class Decision:
    """The answer: allowed or not, and the headers to send either way."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]
    retry_after: int = 0
    detail: str = ""
    status: int = 429


class RateLimitCore:
    """Every rate-limit decision; the ASGI and WSGI adapters only run its flows."""

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.keys = KeySpace(s.key_prefix)
        self.trust = ProxyTrust(s.trusted_proxies, s.ipv6_prefix)
        fail_closed = s.ratelimit_fail == "closed"
        self.default = None
        default_items = parse_limits(s.ratelimit_limit)
        if default_items:
            self.default = Rule("default", default_items, 1, None, fail_closed)
        stack = self.default if s.ratelimit_default_stacks else None
        self.rules: RouteTable[Rule] = RouteTable(
            (pattern, self._compile(pattern, spec, fail_closed, stack))
            for pattern, spec in s.ratelimit_rules
        )
        self.per_method = s.ratelimit_per_method
        self.exempt = [PathPattern.compile(p) for p in s.ratelimit_exempt]
        self.key_func: Callable[[RequestInfo], Any] | None = (
            s.ratelimit_key if callable(s.ratelimit_key) else None
        )
        self.key_kind: str = "custom" if self.key_func else s.ratelimit_key
        self.identities = IdentityResolver(self.trust, self.key_func)
        # The kinds this core counts by that need the user, decided once (not per request).
        named = {self.key_kind, *(rule.key for rule in self.rules.values() if rule.key)}
        self.user_kinds = frozenset(k for k in named if (kind := kind_of(k)) is not None
                                    and kind.needs_user)
        self.legacy = s.ratelimit_headers in ("legacy", "both")
        self.epoch_reset = s.ratelimit_reset == "epoch"
        self.draft = s.ratelimit_headers in ("draft", "both")
        self.dry_run = s.ratelimit_dry_run
        # Fixed windows are counted by our own script, in the shared round trips; the
        # other strategies by the limits library (``_redis.strategies``).
        self.fixed_window = s.ratelimit_strategy == "fixed-window"
        self._key_cache: dict[tuple[str, str, str], tuple[str, ...]] = {}
        # (method, path) -> its rule, the identity kind it counts by, and whether that
        # kind needs the user: asked twice per signed-in request (whether the bucket
        # needs the user, then the check itself); paths come from clients, so the memo
        # is bounded.
        self._routes: Memo[tuple[str, str], tuple[Rule | None, str, bool]] = Memo(4096)
        # (method, path, peer) -> the check of a request counted by its address when no
        # proxy is trusted: then nothing else (no header, no user) changes it, and it
        # is built once rather than by six calls per request (rule, identity, bucket,
        # keys). Checks are never changed once built, so requests share them.
        self._by_peer: Memo[tuple[str, str, str | None], Check] = Memo(4096)
        self._peer_only = not self.trust.anyone

    @staticmethod
    def _compile(pattern: str, spec: RuleSpec, fail_closed: bool, stack: Rule | None
                 ) -> Rule:
        """A route rule; with ``stack``, the default's limits counted on top of its own
        (Flask-Limiter's ``override_defaults=False``)."""
        items = parse_limits(spec.limit)
        sources = tuple((pattern, i) for i in range(len(items)))
        if stack is not None:
            items, sources = (*items, *stack.items), (*sources, *stack.sources)
        return Rule(
            name=pattern,
            items=tuple(items),
            cost=spec.cost,
            methods=frozenset(spec.methods) if spec.methods else None,
            fail_closed=fail_closed if spec.fail is None else spec.fail == "closed",
            key=spec.key,
            sources=tuple(sources),
        )

    # -- what applies -----------------------------------------------------------
    def rule_for(self, method: str, path: str) -> Rule | None:
        """The rule that counts this request (None: nothing limits it)."""
        return self._route(method, path)[0]

    def _route(self, method: str, path: str) -> tuple[Rule | None, str, bool]:
        """The rule of a request, the kind it counts by, and whether that needs the user."""
        found = self._routes.get((method, path))
        if found is None:
            rule = self._find_rule(method, path)
            kind = self.kind_for(rule)
            found = self._routes.put((method, path), (
                rule, kind, rule is not None and kind in self.user_kinds))
        return found

    def _find_rule(self, method: str, path: str) -> Rule | None:
        if any(p.matches(path) for p in self.exempt):
            return None
        for _, rule in self.rules.matches(path):
            if rule.applies_to(method):
                return rule
        return self.default

    def kind_for(self, rule: Rule | None) -> str:
        """The identity kind a rule counts by (``config.identity``; ``custom`` for a
        callable)."""
        return rule.key if rule is not None and rule.key else self.key_kind

    def needs_user(self, request: RequestInfo) -> bool:
        """Whether this request's bucket depends on who the user is."""
        return self._route(request.method, request.path)[2]

    def identity(self, request: RequestInfo, user: Callable[[], str | None],
                 kind: str | None = None) -> str | None:
        """Whose bucket: ``ip:...``, ``user:...``, ``bearer:...``, ... (None: not limited)."""
        return self.identities.resolve(kind or self.key_kind, request, user)

    def prepare(self, request: RequestInfo, user: Callable[[], str | None]) -> Check | None:
        """The check this request needs, or None when nothing limits it."""
        if not self.settings.ratelimit_enabled:
            return None
        if self._peer_only:
            known = self._by_peer.get((request.method, request.path, request.peer))
            if known is not None:
                return known
        rule, kind, _ = self._route(request.method, request.path)
        if rule is None:
            return None
        identity = self.identities.resolve(kind, request, user)
        if identity is None:
            return None
        scope = request.method if self.per_method else ""
        check = Check(rule, identity, self.counter_keys(rule, identity, scope), scope)
        if self._peer_only and kind == "ip":
            self._by_peer.put((request.method, request.path, request.peer), check)
        return check

    def counter_keys(self, rule: Rule, identity: str, scope: str = "") -> tuple[str, ...]:
        """The counters of ``rule`` for ``identity`` (``scope``: the method, per method)."""
        cached = self._key_cache.get((rule.name, identity, scope))
        if cached is None:
            if len(self._key_cache) >= 10_000:  # bounded: forget the oldest
                self._key_cache.pop(next(iter(self._key_cache)))
            cached = self._key_cache[(rule.name, identity, scope)] = tuple(
                self.keys.ratelimit(identity, counter_name(source, scope),
                                    f"{item.amount}-{item.seconds}")
                for item, (source, _) in zip(rule.items, rule.sources, strict=True)
            )
        return cached

    def _scopes(self) -> tuple[str, ...]:
        """Every scope a counter may have (the methods, when counted per method)."""
        return _METHODS if self.per_method else ("",)

    # -- counting (fixed window) ----------------------------------------------------
    def fixed_window_flow(self, check: Check) -> Flow[Decision]:
        """One round trip: check and count every limit of the rule, all or nothing."""
        (reply,) = yield (_FIXED_WINDOW(check.keys, check.rule.script_args),)
        n = len(check.rule.items)
        if n == 1:  # the common case, without building lists by comprehension
            return self.decide(check, int(reply[0]) - 1, [int(reply[1])],
                               [max(0, int(reply[2])) / 1000])
        counts = [int(c) for c in reply[1:1 + n]]
        resets = [max(0, int(t)) / 1000 for t in reply[1 + n:1 + 2 * n]]
        return self.decide(check, int(reply[0]) - 1, counts, resets)

    def decide(
        self, check: Check, breached: int, counts: list[int], resets: list[float]
    ) -> Decision:
        """Headers and verdict from per-limit counts and seconds-until-reset.

        ``breached`` is the index of a limit the request would exceed, or -1.
        """
        if metrics.hook is not None:
            metrics.hook.ratelimit("limited" if breached >= 0 and not self.dry_run else
                                   "allowed", check.rule.name, identity_kind(check.identity))
        items = check.rule.items
        if len(items) == 1 and breached < 0:  # the common case: one limit, not reached
            return Decision(True, self._headers(check, 0, max(0, items[0].amount - counts[0]),
                                                max(1, math.ceil(resets[0]))))
        if len(items) == 1:  # without building lists by comprehension
            remaining = [max(0, items[0].amount - counts[0])]
            reset_s = [max(1, math.ceil(resets[0]))]
        else:
            remaining = [max(0, item.amount - c) for item, c in zip(items, counts, strict=True)]
            reset_s = [max(1, math.ceil(r)) for r in resets]
        if breached >= 0:
            # Retry when every limit that is too full now has reset.
            over = [i for i, item in enumerate(items) if counts[i] + check.rule.cost > item.amount]
            # A strategy of the limits library reads its counts after its test: a window
            # that moved on in between may show room under the limit it refused.
            over = over or [breached]
            retry = max(reset_s[i] for i in over)
            worst = max(over, key=lambda i: reset_s[i])
            headers = self._headers(check, worst, 0, retry)
            headers += (("Retry-After", str(retry)),)
            detail = f"Rate limit exceeded: {items[worst].text}"
            if self.dry_run:
                logger.warning("dry run: would limit %s on %s (%s)", check.identity,
                               check.rule.name, detail)
                return Decision(True, headers[:-1])
            return Decision(False, headers, retry, detail)
        worst = min(range(len(items)), key=lambda i: (remaining[i], -reset_s[i]))
        return Decision(True, self._headers(check, worst, remaining[worst], reset_s[worst]))

    def _headers(self, check: Check, worst: int, left: int, reset: int
                 ) -> tuple[tuple[str, str], ...]:
        """The headers of a verdict: the ``worst`` limit's, ``left`` requests remaining,
        ``reset`` seconds until it resets."""
        rule = check.rule
        legacy: tuple[tuple[str, str], ...] = ()
        if self.legacy:
            at = math.ceil(time.time()) + reset if self.epoch_reset else reset
            legacy = (("X-RateLimit-Limit", rule.amounts[worst]),
                      ("X-RateLimit-Remaining", str(left)), ("X-RateLimit-Reset", str(at)))
        if self.draft:  # draft-ietf-httpapi-ratelimit-headers: structured fields
            return (*legacy, ("RateLimit-Policy", rule.draft_policy),
                    ("RateLimit", f"{rule.draft_names[worst]};r={left};t={reset}"))
        return legacy

    def unavailable(self, check: Check, exc: Exception | None = None) -> Decision | None:
        """Redis failed: None lets the request through (fail open), else a 503 decision.
        A refused command is logged here, once per incident; an outage is logged once by
        the circuit breaker for every component."""
        closed = check.rule.fail_closed
        if metrics.hook is not None:
            metrics.hook.ratelimit("error", check.rule.name, identity_kind(check.identity))
        if exc is not None:
            action = "answered 503" if closed else "request let through"
            log_failure("ratelimit", f"rate limit not counted ({action}): %s", exc)
        if not closed:
            return None
        return Decision(False, (("Retry-After", "1"),), 1, "Rate limiter unavailable", 503)

    # -- usage API -----------------------------------------------------------------
    def _all_rules(self) -> list[Rule]:
        rules = self.rules.values()
        return rules + ([self.default] if self.default else [])

    def usage_flow(self, identity: str) -> Flow[dict[str, list[Usage]]]:
        """Every rule's counters for ``identity`` (fixed window)."""
        rules = [(rule, scope) for rule in self._all_rules() for scope in self._scopes()]
        ops = []
        for rule, scope in rules:
            for key in self.counter_keys(rule, identity, scope):
                ops += [Call.of("GET", key), Call.of("PTTL", key)]
        answers = yield tuple(ops)
        out: dict[str, list[Usage]] = {}
        i = 0
        for rule, scope in rules:
            for item in rule.items:
                used = int(answers[i] or 0)
                ttl = int(answers[i + 1])
                i += 2
                if scope and not used:
                    continue  # a method never used: nothing to show
                out.setdefault(counter_name(rule.name, scope), []).append(Usage(
                    item.text, item.amount, used, max(0, item.amount - used),
                    max(0, math.ceil(ttl / 1000)) if ttl > 0 else 0))
        return out

    def reset_flow(self, identity: str) -> Flow[int]:
        """Delete every counter of ``identity``; returns how many existed."""
        keys = list(dict.fromkeys(k for rule in self._all_rules() for scope in self._scopes()
                                  for k in self.counter_keys(rule, identity, scope)))
        if not keys:
            return 0
        answers = yield tuple(Call.of("DEL", k) for k in keys)  # one per key: Cluster slots
        return sum(int(a) for a in answers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def counter_name(rule: str, scope: str) -> str:
    """The name a rule's counters carry: the rule's, plus the method when per method."""
    return f"{rule} {scope}" if scope else rule


def limits_key(check: Check, item_index: int) -> tuple[str, ...]:
    """Identifiers for the ``limits`` strategies: escaped, so keys stay in our namespace."""
    source, index = check.rule.sources[item_index]
    return escape(check.identity), escape(counter_name(source, check.scope)), str(index)
