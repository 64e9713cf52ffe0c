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

    def configure(self, config: Mapping[str, Any]) -> None:
        self.aging_seconds_per_level = config["AGING_SECONDS_PER_LEVEL"]
        self.heartbeat_interval_seconds = config["HEARTBEAT_INTERVAL_SECONDS"]
        self.heartbeat_misses_allowed = config["HEARTBEAT_MISSES_ALLOWED"]
        self.claim_max_wait_seconds = config["CLAIM_MAX_WAIT_SECONDS"]


settings = DispatchSettings()
