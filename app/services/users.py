"""Managing operator accounts: roles, activation, password resets, signing out everywhere.

Only admins manage accounts (the console checks the role). The last active admin cannot
be demoted or deactivated, so the console can never lock itself out.
"""

from __future__ import annotations

import secrets

from app.extensions import db
from app.models import OperatorRole, User
from app.services import audit, auth
from app.services.errors import Conflict, InvalidInput, NotFound


def list_users() -> list[User]:
    return list(db.session.scalars(db.select(User).order_by(User.email)))


def get_user(user_id: int) -> User:
    # users.id is a 32-bit integer: larger ids cannot exist (and overflow the driver).
    user = db.session.get(User, user_id) if 0 < user_id < 2**31 else None
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def load_session_user(session_id: str) -> User | None:
    """The user a session cookie names (``<id>:<session version>``), if still valid.

    A version older than the account's means the user signed out everywhere, changed
    password, or was deactivated since: the cookie no longer signs anyone in.
    """
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or (user.session_version or 0) != int(version):
        return None
    return user


def create_user(email: str, role: str, password: str | None = None) -> tuple[User, str | None]:
    """Create an account; without a password one is generated and returned (shown once)."""
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    user = auth.create_user(email, password, role=role)
    audit.note(target_type="user", target_id=str(user.id), after=account_summary(user))
    return user, generated


def account_summary(user: User) -> dict[str, object]:
    """What the audit log keeps of an account: never its password or hash."""
    return {"email": user.email, "role": user.role, "active": user.active}


def active_admins() -> int:
    """Counted with the admin rows locked, so two concurrent demotions cannot both pass."""
    query = db.select(User.id).where(User.role == OperatorRole.ADMIN, User.active.is_(True))
    return len(db.session.scalars(query.with_for_update()).all())


def keep_an_admin(user: User, *, role: str | None = None, active: bool | None = None) -> None:
    """Refuse a change that would leave no active admin."""
    losing = user.role == OperatorRole.ADMIN and user.active
    still_active = user.active if active is None else active
    stays = (role or user.role) == OperatorRole.ADMIN and still_active
    if losing and not stays and active_admins() <= 1:
        raise Conflict(f"{user.email} is the last active admin: make another admin first")


def change_role(user_id: int, role: str) -> User:
    if role not in OperatorRole.ALL:
        raise InvalidInput(f"role must be one of {', '.join(OperatorRole.ALL)}, got {role!r}")
    user = get_user(user_id)
    keep_an_admin(user, role=role)
    audit.track(user, "user", fields=("email", "role"))
    user.role = role
    db.session.commit()
    return user


def set_active(user_id: int, active: bool) -> User:
    """Deactivate (signed out at once, cannot sign in) or reactivate an account."""
    user = get_user(user_id)
    keep_an_admin(user, active=active)
    audit.track(user, "user", fields=("email", "active"))
    user.active = active
    if not active:
        user.session_version = (user.session_version or 0) + 1
    db.session.commit()
    return user


def reset_password(user_id: int) -> tuple[User, str]:
    """Give the account a new generated password (shown once) and end its sessions."""
    user = get_user(user_id)
    audit.note(target_type="user", target_id=str(user.id), after={"email": user.email})
    password = secrets.token_urlsafe(12)
    auth.set_password(user.email, password)
    return user, password


def sign_out_everywhere(user_id: int) -> User:
    """End every session and remember-me cookie of the account, on every device."""
    user = get_user(user_id)
    audit.note(target_type="user", target_id=str(user.id), after={"email": user.email})
    user.session_version = (user.session_version or 0) + 1
    db.session.commit()
    return user
