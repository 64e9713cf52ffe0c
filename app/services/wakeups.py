"""Wake long-polling claimers when work for their capabilities appears.

Each new task pushes one token on its capability's Redis list and a waiting claimer pops
one (BLPOP), so a task wakes one claimer rather than every agent polling that capability.
Tokens only nudge: the database still decides who gets what, so a lost, stale or extra
token (or a flushed or absent Redis) costs at most a wasted or delayed claim, never a task.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "ains:wake:"
# Tokens nobody popped are trimmed and expire, so an idle capability stays small.
MAX_TOKENS = 1000
TOKEN_TTL_SECONDS = 60
# Without Redis, a long poll re-checks the database this often.
FALLBACK_POLL_SECONDS = 0.5


class Wakeups:
    """Pushes and awaits per-capability wake-up tokens."""

    def __init__(self) -> None:
        self.redis: redis.Redis | None = None

    def configure(self, client: redis.Redis | None) -> None:
        self.redis = client

    def notify(self, capabilities: Iterable[str]) -> None:
        """One token per new task of each capability (pass one entry per task)."""
        if self.redis is None:
            return
        counts = Counter(capabilities)
        if not counts:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for capability, n in counts.items():
                key = KEY_PREFIX + capability
                pipe.lpush(key, *([b"1"] * min(n, MAX_TOKENS)))
                pipe.ltrim(key, 0, MAX_TOKENS - 1)
                pipe.expire(key, TOKEN_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("wake-up not sent (claimers fall back to their timeout): %s", exc)

    def clear(self, capabilities: Iterable[str]) -> None:
        """Drop the tokens of these capabilities (stale once the database has been read)."""
        keys = [KEY_PREFIX + c for c in capabilities]
        if self.redis is None or not keys:
            return
        try:
            self.redis.delete(*keys)
        except redis.RedisError as exc:
            log.warning("wake-up tokens not cleared: %s", exc)

    def wait(self, capabilities: Iterable[str], timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a token; True if one was taken."""
        keys = [KEY_PREFIX + c for c in capabilities]
        if timeout <= 0 or not keys:
            return False
        if self.redis is None:
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS))
            return False
        try:
            # BLPOP's timeout has a resolution of seconds on old servers; keep it >= 0.01.
            return self.redis.blpop(keys, timeout=max(timeout, 0.01)) is not None
        except redis.RedisError as exc:
            log.warning("wake-up wait failed (polling instead): %s", exc)
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS))
            return False


wakeups = Wakeups()
