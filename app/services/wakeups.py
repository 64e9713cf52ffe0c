"""Wake long-polling claimers when work for their capabilities appears.

Redis pub/sub carries only the nudge; the database still decides who gets what, so a lost
message (or a flushed or absent Redis) costs at most a short fallback poll, never a task.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "ains:wake:"
# Without Redis, a long poll re-checks the database this often.
FALLBACK_POLL_SECONDS = 0.5


class Wakeups:
    """Publishes and awaits per-capability wake-up messages."""

    def __init__(self) -> None:
        self.redis: redis.Redis | None = None

    def configure(self, client: redis.Redis | None) -> None:
        self.redis = client

    def notify(self, capabilities: Iterable[str]) -> None:
        """Tell waiting claimers that these capabilities have new work."""
        if self.redis is None:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for capability in set(capabilities):
                pipe.publish(CHANNEL_PREFIX + capability, b"1")
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("wake-up not published (claimers fall back to polling): %s", exc)

    def subscribe(self, capabilities: Iterable[str]) -> Subscription:
        """Start listening before checking the database, so no wake-up is missed."""
        return Subscription(self.redis, [CHANNEL_PREFIX + c for c in capabilities])


class Subscription:
    """A short-lived subscription used by one long poll."""

    def __init__(self, client: redis.Redis | None, channels: list[str]) -> None:
        self.pubsub = None
        if client is not None and channels:
            try:
                self.pubsub = client.pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(*channels)
            except redis.RedisError as exc:
                log.warning("wake-up subscription failed (polling instead): %s", exc)
                self.close()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a wake-up arrived."""
        if timeout <= 0:
            return False
        if self.pubsub is None:
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS))
            return False
        try:
            return self.pubsub.get_message(timeout=timeout) is not None
        except redis.RedisError as exc:
            log.warning("wake-up wait failed (polling instead): %s", exc)
            self.close()
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS))
            return False

    def close(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()
            self.pubsub = None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


wakeups = Wakeups()
