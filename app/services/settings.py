"""Queue settings the services read, filled from the app config at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class DispatchSettings:
    """Tunables of submit, claim and heartbeat."""

    aging_seconds_per_level: int = 60
    heartbeat_interval_seconds: int = 10
    heartbeat_misses_allowed: int = 3
    claim_max_wait_seconds: int = 30
    retry_jitter: str = "full"
    retry_max_delay_seconds: int = 3600
    cancel_grace_seconds: int = 30
    idempotency_ttl_seconds: int = 86400
    schedule_misfire_grace_seconds: int = 15
    poison_agent_count: int = 3
    routing_default_strategy: str = "round_robin"
    routing_claim_timeout_seconds: int = 30
    routing_probe_rate: float = 0.1
    routing_very_low_trust: str = "last_resort"

    def configure(self, config: Mapping[str, Any]) -> None:
        self.aging_seconds_per_level = config["AGING_SECONDS_PER_LEVEL"]
        self.heartbeat_interval_seconds = config["HEARTBEAT_INTERVAL_SECONDS"]
        self.heartbeat_misses_allowed = config["HEARTBEAT_MISSES_ALLOWED"]
        self.claim_max_wait_seconds = config["CLAIM_MAX_WAIT_SECONDS"]
        self.retry_jitter = config["RETRY_JITTER"]
        self.retry_max_delay_seconds = config["RETRY_MAX_DELAY_SECONDS"]
        self.cancel_grace_seconds = config["CANCEL_GRACE_SECONDS"]
        self.idempotency_ttl_seconds = config["IDEMPOTENCY_TTL_SECONDS"]
        self.schedule_misfire_grace_seconds = config["SCHEDULE_MISFIRE_GRACE_SECONDS"]
        self.poison_agent_count = config["POISON_AGENT_COUNT"]
        self.routing_default_strategy = config["ROUTING_DEFAULT_STRATEGY"]
        self.routing_claim_timeout_seconds = config["ROUTING_CLAIM_TIMEOUT_SECONDS"]
        self.routing_probe_rate = config["ROUTING_PROBE_PERCENT"] / 100
        self.routing_very_low_trust = config["ROUTING_VERY_LOW_TRUST"]

    @property
    def lease_seconds(self) -> int:
        """A claim's lease: renewed by heartbeats and progress, lost after this silence."""
        return self.heartbeat_interval_seconds * self.heartbeat_misses_allowed

    @property
    def stop_notice_seconds(self) -> int:
        """How long an agent keeps being told to stop a task the server ended."""
        return max(60, 2 * self.lease_seconds)


settings = DispatchSettings()
