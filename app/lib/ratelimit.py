"""Rate limits: the JSON API's budgets through Flask-Limiter, and sign-in throttling.

Flask-Limiter (``limiter`` in app.extensions) counts fixed windows in Redis. On the ``api``
blueprint it applies two shared limits whose rates come from the config: the API key's
budget for the kind of call (submit, agent work, read, write; the key is named by its
public prefix, never the secret) and the address's budget, shared by all its calls.
Probes and docs are exempt and no other blueprint is limited. The console's sign-in
throttle counts with the same limiter's fixed-window strategy, over the same storage.

The storage is limits' ``RedisStorage`` with three changes (``GuardedRedisStorage``):

- it fails open: while Redis does not answer, every counter admits, with one warning per
  outage, and Redis is asked again only every ``OUTAGE_RECHECK_SECONDS``, so a dead or hung
  Redis costs one attempt per interval, not one per request. (Flask-Limiter's
  ``swallow_errors``, also on, would retry and log a traceback on every request; its
  in-memory fallback would quietly turn the limits into per-process ones: not used.)
- a hit answers its window's end along with its count, in the same round trip, so the
  X-RateLimit-* and Retry-After headers need no further call and are exact to the
  millisecond (Flask-Limiter's own headers cost two more calls per request and round
  Retry-After down, to 0 in the last second of a window).
- ``refund``: a refused call gives back what it took from the limits it passed, so
  hammering a spent budget does not use up the others.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import redis
from flask import Blueprint, Flask, Response, current_app, request
from flask_limiter import RequestLimit
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.extensions import limiter
from app.lib.tokens import split_api_key

log = logging.getLogger(__name__)

# The four API budgets; an endpoint not named below is a read (GET) or a write.
SUBMIT, AGENT, READ, WRITE = "submit", "agent", "read", "write"
ADDRESS = "address"  # the scope of the per-address budget
# What puts tasks in the queue: new tasks, batches, chains, template and schedule runs.
SUBMIT_ENDPOINTS = frozenset(
    {
        "submit_task",
        "submit_batch",
        "submit_from_template",
        "create_chain",
        "run_schedule_now",
        "requeue_dead_letter",
    }
)
# An agent's work loop.
AGENT_ENDPOINTS = frozenset(
    {"claim", "heartbeat", "report_progress", "complete_task", "complete_batch", "fail_task"}
)
# Probes and documentation: a load balancer or a scraper must never be refused.
UNLIMITED_ENDPOINTS = frozenset({"health", "health_ready", "openapi_json", "docs"})

EXTENSION = "ains_rate_limits"  # the app's Budgets, in app.extensions

# After Redis failed, counters admit everything this long before it is asked again, so an
# outage costs one connection attempt per interval, not one per request.
OUTAGE_RECHECK_SECONDS = 5.0
# A limiter that waits on a hung Redis would stall the queue it protects: at most two
# tries (the second on a fresh connection, for one dropped while idle) of this long each.
REDIS_TIMEOUT_SECONDS = 0.5
STORAGE_OPTIONS: dict[str, Any] = {
    "key_prefix": "ains-limits",
    "socket_timeout": REDIS_TIMEOUT_SECONDS,
    "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    "retry": Retry(NoBackoff(), 1),
}
# Storage URIs name GuardedRedisStorage by this prefix ("ains+redis://host:6379/0").
SCHEME = "ains+"

# KEYS[1]: a counter; ARGV: its window (seconds), the cost. Takes the cost, starts the
# window at the first hit (as limits' own script does; also for a counter that somehow
# lost its expiry) and answers {count, milliseconds until the window ends}.
HIT_SCRIPT = """
local count = redis.call("incrby", KEYS[1], ARGV[2])
local ttl = redis.call("pttl", KEYS[1])
if ttl < 0 then
  redis.call("expire", KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1]) * 1000
end
return {count, ttl}
"""

# KEYS: counters; ARGV[1]: the cost. Gives back what HIT_SCRIPT took, never below zero and
# never reviving a counter whose window has ended.
REFUND_SCRIPT = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call("get", key) or "0")
  if count > 0 then redis.call("decrby", key, math.min(count, tonumber(ARGV[1]))) end
end
return 0
"""


class Window(NamedTuple):
    """A counter as its last hit left it: how much is used and when the window ends."""

    count: int
    resets_at: float  # epoch seconds

    def retry_after(self) -> int:
        """Whole seconds until the window ends (at least 1)."""
        return max(1, math.ceil(self.resets_at - time.time()))


class _Seen(threading.local):
    """The windows this thread's hits saw, by counter key, until a request takes them."""

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}


class GuardedRedisStorage(RedisStorage):
    """limits' Redis storage, failing open while Redis is unreachable (see the module doc)."""

    STORAGE_SCHEME = [SCHEME + s for s in ("redis", "rediss", "redis+unix", "unix")]

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(SCHEME), **options)
        client = self.get_connection()
        self._hit = client.register_script(HIT_SCRIPT)
        self._refund = client.register_script(REFUND_SCRIPT)
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic time; 0 while Redis answers
        self._seen = _Seen()

    # What limits' strategies and Flask-Limiter call.

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        if self._down_until and self._skipping():
            return 0  # admitted: 0 is within every limit
        try:
            count, ttl = self._hit(keys=[self.prefixed_key(key)], args=[expiry, amount])
        except redis.RedisError as exc:
            self._failed(exc)
            return 0
        if self._down_until:
            self._answered()
        seen = self._seen.windows
        if len(seen) > 64:  # each request takes its own; this only bounds a leak
            seen.clear()
        seen[key] = Window(int(count), time.time() + max(int(ttl), 0) / 1000)
        return int(count)

    def get(self, key: str) -> int:
        if self._down_until and self._skipping():
            return 0
        try:
            count = super().get(key)
        except redis.RedisError as exc:
            self._failed(exc)
            return 0
        self._answered()
        return count

    def get_expiry(self, key: str) -> float:
        if self._down_until and self._skipping():
            return time.time()
        try:
            ttl = self.get_connection().pttl(self.prefixed_key(key))
        except redis.RedisError as exc:
            self._failed(exc)
            return time.time()
        self._answered()
        return time.time() + max(ttl, 0) / 1000

    def clear(self, key: str) -> None:
        if self._down_until and self._skipping():
            return
        try:
            super().clear(key)
        except redis.RedisError as exc:
            self._failed(exc)
            return
        self._answered()
        self._seen.windows.pop(key, None)

    # Ours.

    def refund(self, keys: list[str], amount: int = 1) -> None:
        """Give back what the last hits on ``keys`` took (e.g. a refused call's)."""
        if not keys or (self._down_until and self._skipping()):
            return
        try:
            self._refund(keys=[self.prefixed_key(k) for k in keys], args=[amount])
        except redis.RedisError as exc:
            self._failed(exc)
            return
        self._answered()
        seen = self._seen.windows
        for key in keys:
            if key in seen:
                seen[key] = seen[key]._replace(count=max(0, seen[key].count - amount))

    def window(self, key: str) -> Window | None:
        """The window this thread's last hit on ``key`` saw; None if it did not reach Redis."""
        return self._seen.windows.get(key)

    def forget_windows(self) -> None:
        """The request is over: drop what its hits saw."""
        self._seen.windows.clear()

    # The outage switch.

    def _skipping(self) -> bool:
        return self._down_until > 0 and time.monotonic() < self._down_until

    def _failed(self, exc: redis.RedisError) -> None:
        with self._lock:
            first = self._down_until == 0
            self._down_until = time.monotonic() + OUTAGE_RECHECK_SECONDS
        if first:
            log.warning(
                "rate limits are not enforced: their Redis did not answer (%s); requests "
                "pass unchecked until it does",
                exc,
            )

    def _answered(self) -> None:
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
            log.info("rate limits are enforced again: their Redis answers")


@dataclass(frozen=True)
class Counter:
    """One limit applied to one identity, e.g. 5 per 15 minutes for one account."""

    item: RateLimitItem
    identity: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.item.key_for(*self.identity)


class Budgets:
    """The app's rates, read from its config once."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.per_key = {
            budget: config[f"RATE_LIMIT_{budget.upper()}"]
            for budget in (SUBMIT, AGENT, READ, WRITE)
        }
        self.per_address: str = config["RATE_LIMIT_PER_ADDRESS"]
        self.sign_in_account = parse_many(config["RATE_LIMIT_SIGN_IN_PER_ACCOUNT"])
        self.sign_in_address = parse_many(config["RATE_LIMIT_SIGN_IN_PER_ADDRESS"])


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused, as the API's 429 tells it."""

    message: str
    retry_after: int
    details: list[dict[str, Any]]


def budgets() -> Budgets:
    return current_app.extensions[EXTENSION]


def storage() -> GuardedRedisStorage:
    return limiter.storage  # type: ignore[return-value]


def active() -> bool:
    """Whether the limiter counts (RATE_LIMIT_ENABLED, and bound to an app)."""
    return limiter.enabled and limiter.initialized


# Who and what a call is counted as.


@lru_cache(maxsize=512)
def budget_of(endpoint: str, method: str) -> str | None:
    """The API budget an endpoint spends (``api.claim`` → agent), None when unlimited."""
    name = endpoint.rpartition(".")[2]
    if name in UNLIMITED_ENDPOINTS:
        return None
    if name in SUBMIT_ENDPOINTS:
        return SUBMIT
    if name in AGENT_ENDPOINTS:
        return AGENT
    return READ if method in ("GET", "HEAD") else WRITE


def key_prefix_of(authorization: str) -> str | None:
    """The lookup prefix of a well-formed bearer key (never the secret), else None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return split_api_key(token.strip())


def api_key_prefix() -> str:
    """The per-key limit's identity: the caller's key prefix ("" without one: exempt)."""
    return key_prefix_of(request.headers.get("Authorization", "")) or ""


def without_key() -> bool:
    """A call without a well-formed key has only the address budget."""
    return not api_key_prefix()


def client_address() -> str:
    # The connection's peer, or the address ProxyFix took from trusted proxies' headers.
    return request.remote_addr or "unknown"


def per_key_rate() -> str:
    return budgets().per_key[per_key_scope(request.endpoint or "")]


def per_key_scope(endpoint: str) -> str:
    return budget_of(endpoint, request.method) or READ


def per_address_rate() -> str:
    return budgets().per_address


def unlimited() -> bool:
    """Flask-Limiter's request filter: probes and docs are never limited."""
    return request.endpoint in _unlimited_endpoints


# Refusals.


def give_back(_breached: RequestLimit) -> None:
    """On a breach (Flask-Limiter's ``on_breach``): the refused call spends nothing.

    Flask-Limiter took one from each limit it checked up to the one that refused (they are
    checked one after the other, shortest window first); give them all back.
    """
    storage().refund([lim.key for lim in limiter.current_limits])


def counter_name(lim: RequestLimit) -> str:
    scope = lim.request_args[-1]
    return ADDRESS if scope == ADDRESS else f"{scope} per key"


def window_of(lim: RequestLimit) -> Window:
    seen = storage().window(lim.key)
    if seen is not None:
        return seen  # always, in practice: the refusing hit has just seen it
    return Window(lim.limit.amount, storage().get_expiry(lim.key))


def refusal() -> Refusal:
    """For Flask-Limiter's RateLimitExceeded: the 429's message, Retry-After and details."""
    breached = [lim for lim in limiter.current_limits if lim.breached]
    windows = [(lim, window_of(lim)) for lim in breached]
    retry_after = max(w.retry_after() for _, w in windows) if windows else 1
    budget = budget_of(request.endpoint or "", request.method) or READ
    details = [
        {
            "field": None,
            "message": f"{counter_name(lim)}: {lim.limit.amount} requests per "
            f"{window_words(lim.limit)}, used up; resets in {in_words(w.retry_after())}",
        }
        for lim, w in windows
    ]
    return Refusal(
        f"rate limit exceeded for {budget} requests; retry in {in_words(retry_after)}",
        retry_after,
        details,
    )


def rate_limit_headers(response: Response) -> Response:
    """After an API view: X-RateLimit-* of the budget closest to running out."""
    checked = limiter.current_limits
    if not checked:
        return response
    store = storage()
    tightest: tuple[int, float, RateLimitItem] | None = None
    for lim in checked:
        window = store.window(lim.key)
        if window is None:  # Redis is down: nothing was counted
            continue
        remaining = max(0, lim.limit.amount - window.count)
        if tightest is None or (remaining, -window.resets_at) < (tightest[0], -tightest[1]):
            tightest = (remaining, window.resets_at, lim.limit)
    store.forget_windows()
    if tightest is not None:
        remaining, resets_at, item = tightest
        response.headers["X-RateLimit-Limit"] = str(item.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(resets_at))
    return response


# Sign-in.


def account_id(email: str) -> str:
    """A sign-in email as a counter identity: normalised, hashed (no addresses in Redis)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def sign_in_counters(email: str, address: str) -> tuple[list[Counter], list[Counter]]:
    limits = budgets()
    account = [
        Counter(item, ("sign-in", "account", account_id(email))) for item in limits.sign_in_account
    ]
    by_address = [Counter(item, ("sign-in", "address", address)) for item in limits.sign_in_address]
    return account, by_address


def begin_sign_in(email: str, address: str) -> int | None:
    """Count a sign-in attempt; the seconds to wait when this account or address is spent.

    Counting first (and refunding a success) keeps parallel guesses from all passing a
    check made before any of them was counted. A refused attempt takes nothing.
    """
    if not active():
        return None
    account, by_address = sign_in_counters(email, address)
    counters = account + by_address
    strategy, store = limiter.limiter, storage()
    refused = [c for c in counters if not strategy.hit(c.item, *c.identity)]
    if not refused:
        store.forget_windows()
        return None
    store.refund([c.key for c in counters])
    waits = [w.retry_after() for c in refused if (w := store.window(c.key)) is not None]
    store.forget_windows()
    return max(waits, default=1)


def sign_in_succeeded(email: str, address: str) -> None:
    """A right password: the attempt was no failure, and the account starts afresh."""
    if not active():
        return
    account, by_address = sign_in_counters(email, address)
    store = storage()
    store.refund([c.key for c in by_address])
    for counter in account:
        store.clear(counter.key)
    store.forget_windows()


# Words.


def in_words(seconds: int) -> str:
    """``in_words(45)`` → "45 seconds", ``in_words(600)`` → "10 minutes"."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def window_words(item: RateLimitItem) -> str:
    """``600 per 1 minute`` → "minute", ``5 per 15 minutes`` → "15 minutes"."""
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


# Binding.

_limited_blueprints: set[str] = set()
_unlimited_endpoints: set[str] = set()  # "api.health"...


def limit_blueprint(blueprint: Blueprint) -> None:
    """Give the blueprint's views the per-key and per-address limits (once per process).

    Flask-Limiter keeps them by blueprint name, so the blueprint object, shared by every
    app the process builds, is not changed. Their rates are looked up per request in the
    app's Budgets, so a new config takes effect on ``init_app``.
    """
    if blueprint.name in _limited_blueprints:
        return
    if not _limited_blueprints:
        limiter.request_filter(unlimited)
    _limited_blueprints.add(blueprint.name)
    _unlimited_endpoints.update(f"{blueprint.name}.{name}" for name in UNLIMITED_ENDPOINTS)
    per_key = limiter.shared_limit(
        per_key_rate,
        scope=per_key_scope,
        key_func=api_key_prefix,
        exempt_when=without_key,
        on_breach=give_back,
    )
    per_address = limiter.shared_limit(
        per_address_rate, scope=ADDRESS, key_func=client_address, on_breach=give_back
    )
    # Checked shortest window first; among equal windows, the key's before the address's.
    per_key(blueprint)
    per_address(blueprint)


def init_app(app: Flask, blueprint: str = "api") -> None:
    """Bind the limiter to ``app`` with the RATE_LIMIT_* settings; again to re-read them.

    The storage is Redis (RATE_LIMIT_REDIS_URL, else REDIS_URL) through
    GuardedRedisStorage; only ``blueprint`` is limited, and the ui's sign-in throttle uses
    the same storage.
    """
    config = app.config
    app.extensions[EXTENSION] = Budgets(config)
    config["RATELIMIT_ENABLED"] = config["RATE_LIMIT_ENABLED"]
    config["RATELIMIT_STORAGE_URI"] = SCHEME + (
        config.get("RATE_LIMIT_REDIS_URL") or config["REDIS_URL"]
    )
    config["RATELIMIT_STORAGE_OPTIONS"] = STORAGE_OPTIONS
    limiter.init_app(app)
    limit_blueprint(app.blueprints[blueprint])
    hooks = app.after_request_funcs.setdefault(blueprint, [])
    if rate_limit_headers not in hooks:
        hooks.append(rate_limit_headers)
