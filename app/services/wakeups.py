"""Wake a long-polling agent when a task is assigned to it.

Routing assigns each task to one agent; once that commits, one token is pushed on the
agent's Redis list and its waiting claim pops it (BLPOP) and takes the task. Tokens only
nudge: the database still decides who gets what, so a lost, stale or extra token (or a
flushed or absent Redis) costs at most a wasted or delayed claim, never a task.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "ains:wake:agent:"
# Tokens nobody popped are trimmed and expire, so an idle agent's list stays small.
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

    def notify_agents(self, agent_ids: Iterable[str]) -> None:
        """One token per task assigned to each agent (pass one entry per task)."""
        if self.redis is None:
            return
        counts = Counter(agent_ids)
        if not counts:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for agent_id, n in counts.items():
                key = KEY_PREFIX + agent_id
                pipe.lpush(key, *([b"1"] * min(n, MAX_TOKENS)))
                pipe.ltrim(key, 0, MAX_TOKENS - 1)
                pipe.expire(key, TOKEN_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("wake-up not sent (claimers fall back to their timeout): %s", exc)

    def clear(self, agent_id: str) -> None:
        """Drop the agent's tokens (stale once the database has been read)."""
        if self.redis is None:
            return
        try:
            self.redis.delete(KEY_PREFIX + agent_id)
        except redis.RedisError as exc:
            log.warning("wake-up tokens not cleared: %s", exc)

    def wait(self, agent_id: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a token; True if one was taken."""
        if timeout <= 0:
            return False
        if self.redis is None:
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS))
            return False
        try:
            # BLPOP's timeout has a resolution of seconds on old servers; keep it >= 0.01.
            return self.redis.blpop([KEY_PREFIX + agent_id], timeout=max(timeout, 0.01)) is not None
        except redis.RedisError as exc:
            log.warning("wake-up wait failed (polling instead): %s", exc)
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS))
            return False


wakeups = Wakeups()
