"""API keys and operator accounts."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_

from app.extensions import db
from app.lib.clock import as_utc, isoformat, utcnow
from app.lib.passwords import needs_rehash, verify_password
from app.lib.tokens import generate_api_key, hash_api_key, new_id, same_hash, split_api_key
from app.models import ApiKey, OperatorRole, Role, User
from app.services import audit
from app.services.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    invalid,
)
from app.services.principal import Principal

# last_used_at is written at most this often per key, so reads stay read-only.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_PASSWORD_LENGTH = 1024


# API keys ------------------------------------------------------------------------------

MAX_KEY_NAME_LENGTH = 200  # the name column
MAX_CLIENT_ID_LENGTH = 200
# Rotation keeps the replaced secret alive at most this long: a leaked old secret must die.
MAX_ROTATION_GRACE_SECONDS = 30 * 86400
# A key expiring this soon shows as "expiring", so an admin rotates or renews it in time.
EXPIRING_WITHIN = timedelta(days=7)


class KeyStatus:
    """A key's state as lists and filters show it; exactly one applies at a time.

    ``active`` keys are usable and not expiring within EXPIRING_WITHIN, ``expiring`` ones
    are usable but will expire within it.
    """

    ACTIVE = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"
    ALL = (ACTIVE, EXPIRING, EXPIRED, REVOKED)


def key_status(key: ApiKey, now: datetime) -> str:
    """Whether the key is active, expiring soon, expired or revoked at ``now``."""
    if key.revoked_at is not None:
        return KeyStatus.REVOKED
    if key.expires_at is not None and key.expires_at <= now:
        return KeyStatus.EXPIRED
    if key.expires_at is not None and key.expires_at <= now + EXPIRING_WITHIN:
        return KeyStatus.EXPIRING
    return KeyStatus.ACTIVE


def previous_secret_alive(key: ApiKey, now: datetime) -> bool:
    """Whether the secret a rotation replaced still works (its grace period has not ended)."""
    return (
        key.previous_key_hash is not None
        and key.previous_expires_at is not None
        and now < key.previous_expires_at
    )


def api_key_dict(key: ApiKey, now: datetime) -> dict[str, object]:
    """A key as the API shows it: never the secret, with its status and rotation state."""
    return key.to_dict() | {
        "created_by": key.created_by,
        "rotated_at": isoformat(key.rotated_at),
        "previous_expires_at": isoformat(key.previous_expires_at),
        "status": key_status(key, now),
    }


def checked_text(field: str, value: str | None, limit: int) -> str | None:
    """``value`` stripped (None when empty), refused when too long or not printable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > limit:
        raise invalid(field, f"must be at most {limit} characters, got {len(value)}")
    if not value.isprintable():
        raise invalid(field, "must not contain control characters")
    return value


def create_api_key(
    *,
    name: str,
    role: str,
    client_id: str | None = None,
    agent_id: str | None = None,
    expires_at: datetime | None = None,
    created_by: Principal | None = None,
    now: datetime | None = None,
    commit: bool = True,
) -> tuple[ApiKey, str]:
    """Create a key and return it with the clear-text secret, which is never stored.

    ``created_by`` is who asks (None: the system or the command line, trusted): only admins
    may make admin keys. ``agent_id`` binds an agent key to one agent (agent registration).
    """
    now = now or utcnow()
    if role not in Role.ALL:
        raise invalid("role", f"must be one of {', '.join(Role.ALL)}, got {role!r}")
    if role == Role.ADMIN and created_by is not None and not created_by.is_admin:
        raise NotPermitted("only admins may create admin keys")
    checked_name = checked_text("name", name, MAX_KEY_NAME_LENGTH)
    if checked_name is None:
        raise invalid("name", "must not be empty")
    client_id = checked_text("client_id", client_id, MAX_CLIENT_ID_LENGTH)
    if role == Role.CLIENT and not client_id:
        raise invalid("client_id", "a client key needs a client_id")
    if role != Role.CLIENT and client_id:
        raise invalid("client_id", f"only client keys are bound to a client_id, not {role} keys")
    if agent_id is not None and role != Role.AGENT:
        raise invalid("agent_id", "only agent keys are bound to an agent")
    expires_at = as_utc(expires_at)
    if expires_at is not None and expires_at <= now:
        raise invalid("expires_at", f"must be in the future, got {isoformat(expires_at)}")
    raw, prefix = generate_api_key()
    key = ApiKey(
        id=new_id("key"),
        name=checked_name,
        prefix=prefix,
        key_hash=hash_api_key(raw),
        role=role,
        client_id=client_id,
        agent_id=agent_id,
        expires_at=expires_at,
        created_at=now,
        created_by=created_by.actor if created_by is not None else None,
    )
    db.session.add(key)
    if created_by is not None:  # a key made by someone (not registration's agent key)
        audit.note(
            target_type="api_key",
            target_id=key.id,
            after={
                "name": key.name,
                "role": role,
                "client_id": client_id,
                "agent_id": agent_id,
                "expires_at": isoformat(expires_at),
            },
        )
    if commit:
        db.session.commit()
    return key, raw


@dataclass(frozen=True)
class CachedKey:
    """What authenticating a secret found, kept for KeyCache.ttl seconds."""

    principal: Principal
    expires_at: datetime | None  # the key's, or the grace end for a rotated-out secret
    last_used_at: datetime
    cached_at: float  # time.monotonic()


class KeyCache:
    """Secrets this process authenticated recently (SHA-256 of the secret → principal).

    A hit skips the key's database read. Bounds: a revocation or rotation made in this
    process clears the cache at once; one made in another process (another gunicorn worker,
    the CLI) takes effect here within ``ttl`` seconds (AUTH_KEY_CACHE_SECONDS). Expiry and
    the end of a rotation grace period are checked on every hit, exactly; last_used_at keeps
    its LAST_USED_RESOLUTION (a hit older than that reads the key again and writes it).
    Only usable secrets are cached; a wrong or unknown secret always reads the database.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self.ttl = 0.0
        self._entries: dict[str, CachedKey] = {}
        self._lock = threading.Lock()
        # Bumped by every clear(): a read that began before a revocation cannot put back
        # what it found once the revocation has cleared the cache.
        self.generation = 0

    def configure(self, ttl_seconds: float) -> None:
        self.ttl = float(ttl_seconds)
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def get(self, digest: str, now: datetime) -> Principal | None:
        """The principal of a cached secret still usable at ``now``, else None."""
        if self.ttl <= 0:
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if (
            time.monotonic() - entry.cached_at >= self.ttl
            or (entry.expires_at is not None and entry.expires_at <= now)
            or now - entry.last_used_at > LAST_USED_RESOLUTION
        ):
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry.principal

    def put(self, digest: str, entry: CachedKey, generation: int) -> None:
        """Keep ``entry``, unless the cache was cleared since ``generation`` was read
        (before the database read that found it)."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = entry


key_cache = KeyCache()


def authenticate_key(raw: str | None, now: datetime | None = None) -> Principal:
    """Resolve a bearer key to a Principal, or raise NotAuthenticated.

    A key's current secret works until the key expires or is revoked; the secret a rotation
    replaced works too, until its grace period ends (``previous_expires_at``). Recently
    authenticated secrets are served from ``key_cache`` (see KeyCache for the bounds).
    """
    now = now or utcnow()
    if not raw:
        raise NotAuthenticated("missing API key: send 'Authorization: Bearer <key>'")
    digest = hash_api_key(raw)
    cached = key_cache.get(digest, now)
    if cached is not None:
        return cached
    generation = key_cache.generation
    prefix = split_api_key(raw)
    key = (
        db.session.scalars(
            db.select(ApiKey).where(or_(ApiKey.prefix == prefix, ApiKey.previous_prefix == prefix))
        ).first()
        if prefix
        else None
    )
    previous = key is not None and key.prefix != prefix
    expected = (key.previous_key_hash if previous else key.key_hash) if key else None
    # Compare a hash even when the prefix is unknown, so timing does not reveal prefixes.
    if not same_hash(expected or hash_api_key(""), digest) or key is None:
        raise NotAuthenticated("invalid API key")
    if not key.is_usable(now):
        raise NotAuthenticated("API key is revoked or expired")
    if previous and not previous_secret_alive(key, now):
        raise NotAuthenticated("API key was rotated and its grace period has ended")
    principal = Principal(
        role=key.role, name=key.name, key_id=key.id, client_id=key.client_id, agent_id=key.agent_id
    )
    expires_at = min(
        (at for at in (key.expires_at, previous and key.previous_expires_at) if at),
        default=None,
    )
    last_used_at = key.last_used_at
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = last_used_at = now
        db.session.commit()  # expires the key: nothing below reads it again
    key_cache.put(
        digest,
        CachedKey(
            principal=principal,
            expires_at=expires_at,
            last_used_at=last_used_at,
            cached_at=time.monotonic(),
        ),
        generation,
    )
    return principal


def get_api_key(principal: Principal, key_id: str, *, lock: bool = False) -> ApiKey:
    """One key, for admins; an unknown id is NotFound."""
    principal.require_role(Role.ADMIN)
    query = db.select(ApiKey).where(ApiKey.id == key_id)
    if lock:
        query = query.with_for_update()
    key = db.session.scalars(query).first()
    if key is None:
        raise NotFound(f"API key {key_id!r} not found")
    return key


@dataclass(frozen=True)
class KeyFilters:
    role: str | None = None
    client_id: str | None = None
    agent_id: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class KeyPage:
    keys: list[ApiKey]
    total: int


def list_api_keys(
    principal: Principal,
    filters: KeyFilters | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> KeyPage:
    """Keys matching the filters, newest first, for admins."""
    principal.require_role(Role.ADMIN)
    filters = filters or KeyFilters()
    now = now or utcnow()
    query = db.select(ApiKey)
    if filters.role:
        query = query.where(ApiKey.role == filters.role)
    if filters.client_id:
        query = query.where(ApiKey.client_id == filters.client_id)
    if filters.agent_id:
        query = query.where(ApiKey.agent_id == filters.agent_id)
    if filters.status:
        query = query.where(*status_conditions(filters.status, now))
    total = db.session.scalar(db.select(func.count()).select_from(query.subquery())) or 0
    found = db.session.scalars(
        query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit).offset(offset)
    )
    return KeyPage(list(found), total)


def status_conditions(status: str, now: datetime) -> list[object]:
    """SQL conditions matching what key_status() says, for one status."""
    live = ApiKey.revoked_at.is_(None)
    soon = now + EXPIRING_WITHIN
    if status == KeyStatus.REVOKED:
        return [ApiKey.revoked_at.is_not(None)]
    if status == KeyStatus.EXPIRED:
        return [live, ApiKey.expires_at <= now]
    if status == KeyStatus.EXPIRING:
        return [live, ApiKey.expires_at > now, ApiKey.expires_at <= soon]
    if status == KeyStatus.ACTIVE:
        return [live, or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > soon)]
    raise invalid("status", f"must be one of {', '.join(KeyStatus.ALL)}, got {status!r}")


def revoke_api_key(principal: Principal, key_id: str, now: datetime | None = None) -> ApiKey:
    """Revoke a key: its current and previous secrets stop working at once.

    Idempotent: revoking a revoked key changes nothing and keeps the first revocation time.
    """
    key = get_api_key(principal, key_id, lock=True)
    audit.track(key, "api_key", fields=("name", "revoked_at"))
    if key.revoked_at is None:
        key.revoked_at = now or utcnow()
        db.session.commit()
    key_cache.clear()  # other processes: within AUTH_KEY_CACHE_SECONDS
    return key


def check_grace(grace_seconds: int) -> int:
    if isinstance(grace_seconds, bool) or not 0 <= grace_seconds <= MAX_ROTATION_GRACE_SECONDS:
        raise invalid(
            "grace_seconds",
            f"must be 0..{MAX_ROTATION_GRACE_SECONDS} (30 days), got {grace_seconds!r}",
        )
    return grace_seconds


def rotate_api_key(
    principal: Principal, key_id: str, grace_seconds: int, now: datetime | None = None
) -> tuple[ApiKey, str]:
    """Give a key a new secret and return it in clear, once; the key keeps its id.

    The id, role, client, agent binding and the agents it registered stay the key's. The
    replaced secret keeps working for ``grace_seconds`` (0: it dies now), so holders can
    switch without downtime. A key has at most one previous secret: rotating again during a
    grace period ends the older secret at once, and the one just replaced gets the new grace.
    """
    now = now or utcnow()
    check_grace(grace_seconds)
    # Locked: two rotations at once would each keep a "previous" secret the other dropped.
    key = get_api_key(principal, key_id, lock=True)
    if key.revoked_at is not None:
        raise Conflict(f"API key {key_id} is revoked; create a new key instead")
    if key.expires_at is not None and key.expires_at <= now:
        raise Conflict(f"API key {key_id} has expired; create a new key instead")
    audit.track(key, "api_key", fields=("name", "prefix", "rotated_at", "previous_expires_at"))
    raw, prefix = generate_api_key()
    if grace_seconds > 0:
        key.previous_prefix, key.previous_key_hash = key.prefix, key.key_hash
        key.previous_expires_at = now + timedelta(seconds=grace_seconds)
    else:
        key.previous_prefix = key.previous_key_hash = key.previous_expires_at = None
    key.prefix, key.key_hash = prefix, hash_api_key(raw)
    key.rotated_at = now
    db.session.commit()
    key_cache.clear()  # a secret's grace may have ended: other processes within the TTL
    return key, raw


# Operator accounts ---------------------------------------------------------------------


def create_user(email: str, password: str, *, role: str = "admin") -> User:
    """Create an operator account."""
    email = email.strip().lower()
    if role not in OperatorRole.ALL:
        raise InvalidInput(f"role must be one of {', '.join(OperatorRole.ALL)}, got {role!r}")
    if "@" not in email or len(email) > 320:
        raise InvalidInput(f"email must be an address, got {email!r}")
    check_password_rules(password)
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
    check_password_rules(password)
    user.set_password(password)
    user.session_version = (user.session_version or 0) + 1  # sessions made before end
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
    """Return the active user with this email and password, else None.

    An unknown email costs one hash check too, so timing does not tell which emails have
    accounts. Hashes made with older schemes or weaker parameters are upgraded here, the
    one moment the password is known.
    """
    user = db.session.scalars(db.select(User).where(User.email == email.strip().lower())).first()
    if not verify_password(user.password_hash if user else None, password):
        return None
    if user is None or not user.active:
        return None
    if needs_rehash(user.password_hash):
        user.set_password(password)
    user.last_login_at = now or utcnow()
    db.session.commit()
    return user


def check_password_rules(password: str) -> None:
    """At least 8 characters; at most 1,024 (hashing a megabyte is a cheap denial of service)."""
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
