"""Liveness of the background processes, written by the jobs they run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import JSONType, UTCDateTime


class ProcessBeat(db.Model):
    __tablename__ = "process_beats"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
