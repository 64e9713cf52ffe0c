"""A secret shown once, on the page the browser lands on after it was made.

The page is reached by a redirect, so the clear value travels there sealed in the session
cookie (Fernet, under SECRET_KEY); the page that shows it takes it out of the session, and
is not cached (``Cache-Control: no-store``). One not picked up within a few minutes is
dropped unseen. Webhook secrets and API keys use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app, session

from app.lib.sealing import Sealer, Unsealable

# A value not picked up by its page this soon after it was made is dropped unseen.
SHOWN_WITHIN_SECONDS = 600


@dataclass(frozen=True)
class Shown:
    value: str
    rotated: bool


def sealer() -> Sealer:
    config = current_app.config
    return Sealer([config["SECRET_KEY"], *config.get("SECRET_KEY_FALLBACKS", [])])


def keep(slot: str, owner_id: str, value: str, *, rotated: bool) -> None:
    """Keep ``value``, sealed, for the next view of ``owner_id``'s page."""
    session[slot] = {
        "owner_id": owner_id,
        "sealed": sealer().seal(value),
        "rotated": rotated,
        "at": time.time(),
    }


def take(slot: str, owner_id: str) -> Shown | None:
    """The value made for this owner's page just now, if any; gone from the session after."""
    kept = session.get(slot)
    if not isinstance(kept, dict) or kept.get("owner_id") != owner_id:
        return None
    session.pop(slot)
    if time.time() - float(kept.get("at", 0)) > SHOWN_WITHIN_SECONDS:
        return None
    try:
        value = sealer().open(str(kept["sealed"]))
    except (KeyError, Unsealable):  # SECRET_KEY changed meanwhile
        return None
    return Shown(value=value, rotated=bool(kept.get("rotated")))
