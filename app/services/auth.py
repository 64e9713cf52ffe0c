"""API keys and operator accounts."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from app.extensions import db
from app.lib.clock import utcnow
from app.lib.tokens import generate_api_key, hash_api_key, new_id, same_hash, split_api_key
from app.models import ApiKey, Role, User
from app.services.errors import InvalidInput, NotAuthenticated
from app.services.principal import Principal

# last_used_at is written at most this often per key, so reads stay read-only.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def create_api_key(
    *,
    name: str,
    role: str,
    client_id: str | None = None,
    agent_id: str | None = None,
    expires_at: datetime | None = None,
    commit: bool = True,
) -> tuple[ApiKey, str]:
    """Create a key and return it with the clear-text secret, which is never stored."""
    if role not in Role.ALL:
        raise InvalidInput(f"role must be one of {', '.join(Role.ALL)}, got {role!r}")
    if role == Role.CLIENT and not client_id:
        raise InvalidInput("a client key needs a client_id")
    if role != Role.CLIENT and client_id:
        raise InvalidInput("only client keys are bound to a client_id")
    if not name.strip():
        raise InvalidInput("name must not be empty")
    raw, prefix = generate_api_key()
    key = ApiKey(
        id=new_id("key"),
        name=name.strip(),
        prefix=prefix,
        key_hash=hash_api_key(raw),
        role=role,
        client_id=client_id,
        agent_id=agent_id,
        expires_at=expires_at,
    )
    db.session.add(key)
    if commit:
        db.session.commit()
    return key, raw


def authenticate_key(raw: str | None, now: datetime | None = None) -> Principal:
    """Resolve a bearer key to a Principal, or raise NotAuthenticated."""
    now = now or utcnow()
    if not raw:
        raise NotAuthenticated("missing API key: send 'Authorization: Bearer <key>'")
    prefix = split_api_key(raw)
    key = (
        db.session.scalars(db.select(ApiKey).where(ApiKey.prefix == prefix)).first()
        if prefix
        else None
    )
    # Compare a hash even when the prefix is unknown, so timing does not reveal prefixes.
    expected = key.key_hash if key else hash_api_key("")
    if not same_hash(expected, hash_api_key(raw)) or key is None:
        raise NotAuthenticated("invalid API key")
    if not key.is_usable(now):
        raise NotAuthenticated("API key is revoked or expired")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        db.session.commit()
    return Principal(
        role=key.role, name=key.name, key_id=key.id, client_id=key.client_id, agent_id=key.agent_id
    )


def create_user(email: str, password: str, *, role: str = "admin") -> User:
    """Create an operator account."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidInput(f"email must be an address, got {email!r}")
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters")
    if db.session.scalars(db.select(User).where(User.email == email)).first():
        raise InvalidInput(f"a user with email {email!r} already exists")
    user = User(email=email, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def set_password(email: str, password: str) -> User:
    """Change an operator's password."""
    user = db.session.scalars(db.select(User).where(User.email == email.strip().lower())).first()
    if user is None:
        raise InvalidInput(f"no user with email {email!r}")
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters")
    user.set_password(password)
    db.session.commit()
    return user


def ensure_admin(email: str | None, password: str | None) -> tuple[User, str | None]:
    """Make sure an operator exists; return it and the generated password, if one was made."""
    existing = db.session.scalars(db.select(User).order_by(User.id)).first()
    if existing is not None and (email is None or existing.email == email.strip().lower()):
        return existing, None
    email = email or "admin@example.com"
    generated = None
    if password is None:
        generated = password = secrets.token_urlsafe(12)
    return create_user(email, password), generated


def authenticate_user(email: str, password: str, now: datetime | None = None) -> User | None:
    """Return the active user with this email and password, else None."""
    user = db.session.scalars(db.select(User).where(User.email == email.strip().lower())).first()
    if user is None or not user.active or not user.check_password(password):
        return None
    user.last_login_at = now or utcnow()
    db.session.commit()
    return user
