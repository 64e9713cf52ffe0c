"""API keys and operator accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.lib.passwords import hash_password, verify_password
from app.models.base import UTCDateTime


class Role:
    ADMIN = "admin"
    CLIENT = "client"
    AGENT = "agent"
    ALL = (ADMIN, CLIENT, AGENT)


class OperatorRole:
    """Console accounts: admins manage users and keys, operators run the work, viewers read."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    ALL = (ADMIN, OPERATOR, VIEWER)


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str | None] = mapped_column(String(200))
    # Set on the key returned by agent registration: it acts for that agent only.
    agent_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # After a rotation the replaced secret keeps working until previous_expires_at (the
    # grace period), so holders can switch without downtime; the key keeps its id, and with
    # it the agents it registered.
    previous_prefix: Mapped[str | None] = mapped_column(String(16), unique=True)
    previous_key_hash: Mapped[str | None] = mapped_column(String(64))
    previous_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(200))

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role,
            "client_id": self.client_id,
            "agent_id": self.agent_id,
            "created_at": isoformat(self.created_at),
            "last_used_at": isoformat(self.last_used_at),
            "expires_at": isoformat(self.expires_at),
            "revoked_at": isoformat(self.revoked_at),
        }


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="admin")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Part of the session cookie's user id: raising it signs the user out everywhere.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active

    def get_id(self) -> str:  # Flask-Login: what the session and remember cookies hold
        return f"{self.id}:{self.session_version or 0}"

    def set_password(self, password: str) -> None:
        self.password_hash = hash_password(password)

    def check_password(self, password: str) -> bool:
        return verify_password(self.password_hash, password)
