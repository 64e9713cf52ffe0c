"""Periodic maintenance, enqueued every second by the clock."""

from __future__ import annotations

import logging
import os
import socket

from app.services import lifecycle, scheduling
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


def fire_schedules() -> dict[str, int]:
    """Fire the schedules due by now (the clock enqueues this every second in tick mode)."""
    with app_context():
        result = scheduling.fire_due().as_dict()
    if result["fired"] or result["skipped"]:
        log.info("schedules: %s", result)
    return result
