"""Periodic maintenance, enqueued every second by the clock."""

from __future__ import annotations

import logging
import os
import socket

from app.services import lifecycle
from jobs.context import app_context

log = logging.getLogger(__name__)


def tick() -> dict[str, int]:
    """Expire leases, retire silent agents, wake claimers of due retries; note the worker."""
    with app_context():
        result = lifecycle.sweep()
        lifecycle.record_process_beat("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    if any(result.values()):
        log.info("maintenance: %s", result)
    return result
