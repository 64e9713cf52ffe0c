"""Webhook delivery jobs: queued after the commit that wrote the outbox rows, and again by
the maintenance sweep for retries and for jobs Redis lost."""

from __future__ import annotations

import logging

from app.services import webhooks
from jobs.context import app_context

log = logging.getLogger(__name__)


def deliver(delivery_id: str) -> str | None:
    """Send one delivery if it is still due and nobody else holds it."""
    with app_context():
        outcome = webhooks.deliver(delivery_id)
    if outcome not in (None, "delivered"):
        log.info("webhook delivery %s: %s", delivery_id, outcome)
    return outcome
