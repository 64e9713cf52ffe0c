"""Operator accounts (admins only): add one, change its role, deactivate it, reset its
password or sign it out everywhere.

A generated password is shown once, on the page the POST answers with (not kept in the
session, not redirected to); the page is not cached (``Cache-Control: no-store``).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response as BaseResponse
from wtforms import EmailField, PasswordField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional

from app.models import OperatorRole, User
from app.services import users
from app.services.errors import Conflict, InvalidInput
from app.ui import bp
from app.ui.access import requires
from app.ui.filters import stripped
from app.ui.forms import ServiceForm

ROLES = {
    OperatorRole.VIEWER: "Viewer: reads everything",
    OperatorRole.OPERATOR: "Operator: runs tasks, agents, schedules, templates, webhooks",
    OperatorRole.ADMIN: "Admin: also users, API keys, trust, routing defaults, audit",
}
ROLE_CHOICES = [SelectChoice(value, label) for value, label in ROLES.items()]


class NewUserForm(ServiceForm):
    email = EmailField(
        "Email",
        filters=[stripped],
        validators=[InputRequired(message="type the operator's email"), Length(max=320)],
    )
    role = SelectField("Role", choices=ROLE_CHOICES, default=OperatorRole.VIEWER)
    password = PasswordField(
        "Password",
        validators=[
            Optional(),
            Length(min=8, max=1024, message="at least 8 characters, at most 1,024"),
        ],
    )


class RoleForm(ServiceForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


def render_users(
    form: NewUserForm, status: int = 200, shown: dict[str, str] | None = None
) -> tuple[str, int]:
    return (
        render_template(
            "ui/users/index.html",
            accounts=users.list_users(),
            form=form,
            role_form=RoleForm,
            shown=shown,
            roles=ROLES,
        ),
        status,
    )


@bp.get("/users")
@requires(OperatorRole.ADMIN)
def users_page() -> tuple[str, int]:
    return render_users(NewUserForm())


@bp.post("/users")
@requires(OperatorRole.ADMIN)
def create_user() -> tuple[str, int]:
    form = NewUserForm()
    if not form.validate_on_submit():
        return render_users(form, 422)
    try:
        user, generated = users.create_user(
            form.email.data or "", form.role.data, form.password.data or None
        )
    except InvalidInput as exc:
        form.take_errors(exc)
        return render_users(form, 422)
    flash(f"Added {user.email} as {user.role}.", "success")
    shown = {"email": user.email, "password": generated} if generated else None
    return render_users(NewUserForm(formdata=None), 201, shown)


@bp.post("/users/<int:user_id>/role")
@requires(OperatorRole.ADMIN)
def change_user_role(user_id: int) -> BaseResponse:
    form = RoleForm()
    if form.validate_on_submit():
        act(lambda: users.change_role(user_id, form.role.data), "Role changed to {role}.")
    else:
        flash("Pick one of the roles.", "error")
    return redirect(url_for("ui.users_page"))


@bp.post("/users/<int:user_id>/<any(activate, deactivate):action>")
@requires(OperatorRole.ADMIN)
def set_user_active(user_id: int, action: str) -> BaseResponse:
    done = "{email} can sign in again." if action == "activate" else "{email} is deactivated."
    act(lambda: users.set_active(user_id, action == "activate"), done)
    return redirect(url_for("ui.users_page"))


@bp.post("/users/<int:user_id>/sign-out")
@requires(OperatorRole.ADMIN)
def sign_out_user(user_id: int) -> BaseResponse:
    user = act(lambda: users.sign_out_everywhere(user_id), "{email} is signed out everywhere.")
    if user is not None and user.id == current_user.id:
        logout_user()
        return redirect(url_for("ui.login"))
    return redirect(url_for("ui.users_page"))


@bp.post("/users/<int:user_id>/reset-password")
@requires(OperatorRole.ADMIN)
def reset_user_password(user_id: int) -> tuple[str, int]:
    """A new generated password, shown on the page this answers with; old sessions end."""
    user, password = users.reset_password(user_id)
    flash(f"{user.email} has a new password and is signed out everywhere.", "success")
    return render_users(
        NewUserForm(formdata=None), 200, {"email": user.email, "password": password}
    )


def act(change: Callable[[], User], done: str) -> User | None:
    """Run an account change; flash what happened or why it was refused."""
    try:
        user = change()
    except (Conflict, InvalidInput) as exc:
        flash(exc.message, "error")
        return None
    flash(done.format(email=user.email, role=user.role), "success")
    return user
