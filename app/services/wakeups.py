"""Wake a long-polling agent when a task is assigned to it.

Routing assigns each task to one agent; once that commits, one token is pushed on the
agent's Redis list and its waiting claim pops it (BLPOP) and takes the task. (A routing
pass skipped because another router held the capability wakes one agent that might take
the work instead: its claim routes what waits.) Tokens only
nudge: the database still decides who gets what, so a lost, stale or extra token (or a
flushed or absent Redis) costs at most a wasted or delayed claim, never a task.

A web process that is stopping (gunicorn's SIGTERM; see gunicorn.conf.py) calls
``shut_down``: every long poll waiting in this process wakes at once and answers with what
it has, so in-flight requests finish within the platform's grace period instead of holding
the shutdown for up to a claim's 30 s.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "ains:wake:agent:"
# One list per web process: a token on it wakes one of that process's waiting long polls.
SHUTDOWN_PREFIX = "ains:wake:shutdown:"
# Tokens nobody popped are trimmed and expire, so an idle agent's list stays small.
MAX_TOKENS = 1000
TOKEN_TTL_SECONDS = 60
# Without Redis, a long poll re-checks the database this often.
FALLBACK_POLL_SECONDS = 0.5


class Wakeups:
    """Pushes and awaits per-capability wake-up tokens."""

    def __init__(self) -> None:
        self.redis: redis.Redis | None = None
        # Set once this process is shutting down: waits return at once from then on.
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._waiting = 0
        self._nonce = secrets.token_hex(4)

    @property
    def _shutdown_key(self) -> str:
        # The pid is read when used: with gunicorn's preload, workers share this object.
        return f"{SHUTDOWN_PREFIX}{os.getpid()}:{self._nonce}"

    def configure(self, client: redis.Redis | None) -> None:
        self.redis = client

    def notify_agents(self, agent_ids: Iterable[str]) -> None:
        """One token per entry: per task assigned to the agent, or per pass it is to do."""
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
        """Block up to ``timeout`` seconds for a token; True if one was taken.

        Returns False at once, without waiting, once the process is shutting down.
        """
        if timeout <= 0:
            return False
        # Counted before ``closing`` is looked at: ``shut_down`` either sees this wait and
        # pushes a token for it, or has set ``closing`` already and the wait is skipped.
        with self._lock:
            if self.closing.is_set():
                return False
            self._waiting += 1
        try:
            return self._wait(agent_id, timeout)
        finally:
            with self._lock:
                self._waiting -= 1

    def _wait(self, agent_id: str, timeout: float) -> bool:
        if self.redis is None:
            self.closing.wait(min(timeout, FALLBACK_POLL_SECONDS))
            return False
        try:
            # BLPOP's timeout has a resolution of seconds on old servers; keep it >= 0.01.
            popped = self.redis.blpop(
                [KEY_PREFIX + agent_id, self._shutdown_key], timeout=max(timeout, 0.01)
            )
        except redis.RedisError as exc:
            log.warning("wake-up wait failed (polling instead): %s", exc)
            self.closing.wait(min(timeout, FALLBACK_POLL_SECONDS))
            return False
        return popped is not None and not self.closing.is_set()

    def shut_down(self) -> int:
        """Wake every long poll waiting in this process; later waits return at once.

        Returns how many waits were woken. Safe to call more than once.
        """
        with self._lock:
            self.closing.set()
            waiting = self._waiting
        if self.redis is None or waiting == 0:
            return waiting
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(self._shutdown_key, *([b"1"] * waiting))
            pipe.expire(self._shutdown_key, TOKEN_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("long polls not woken for shutdown (they end at their timeout): %s", exc)
        return waiting


wakeups = Wakeups()
