"""Sending a delivery in-process: API tests run no worker (the receiver is shared)."""

from __future__ import annotations

from flask import Flask

from app.extensions import db
from app.services import webhooks
from tests.webhook_receiver import receiver

__all__ = ["receiver", "send_now"]


def send_now(app: Flask, delivery_id: str) -> str | None:
    """Send one delivery as the worker's job would; returns the attempt's outcome."""
    with app.app_context():
        outcome = webhooks.deliver(delivery_id)
        db.session.remove()
    return outcome
