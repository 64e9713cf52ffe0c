"""Signing in and out; every other page requires an operator."""

from __future__ import annotations

from flask import Response, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from app.extensions import login_manager
from app.lib import ratelimit
from app.lib.clock import utcnow
from app.models import OperatorRole, User
from app.services import users
from app.services.auth import authenticate_user
from app.services.principal import Principal, operator
from app.ui import bp
from app.ui.access import requires
from app.ui.htmx import is_htmx

login_manager.login_view = "ui.login"
login_manager.login_message = "Please sign in to continue."
login_manager.login_message_category = "info"


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in on this device")


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return users.load_session_user(user_id)


@login_manager.unauthorized_handler
def unauthorized() -> BaseResponse:
    """Send the browser to the login page, and back here afterwards."""
    here = request.full_path if request.query_string else request.path
    target = url_for("ui.login", next=here)
    flash(login_manager.login_message, login_manager.login_message_category)
    if is_htmx():
        # A plain redirect would be followed inside the XHR and the login page swapped
        # into a fragment's place; HX-Redirect makes htmx navigate the whole window.
        response = Response(status=401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None (no open redirects).

    Browsers read '//host', '/\\host' and paths with tabs or newlines in them as other
    sites, so only a single leading slash followed by printable characters passes.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if any(c == "\\" or c.isspace() or not c.isprintable() for c in target):
        return None
    return target


def acting_operator() -> Principal:
    """The signed-in operator as the services' Principal."""
    return operator(current_user.email)


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | tuple[str, int, dict[str, str]]:
    next_url = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(next_url or url_for("ui.dashboard"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email, address = form.email.data or "", request.remote_addr or "unknown"
        # Over budget, the password is not even checked: refusals cannot be used to guess.
        wait = ratelimit.begin_sign_in(email, address)
        if wait is not None:
            flash(
                "Too many failed sign-ins for this account or from this address. "
                f"Try again in {ratelimit.in_words(wait)}.",
                "error",
            )
            page = render_template("ui/auth/login.html", form=form, next_url=next_url)
            return page, 429, {"Retry-After": str(wait)}
        user = authenticate_user(email, form.password.data or "", now=utcnow())
        if user is not None:
            ratelimit.sign_in_succeeded(email, address)
            login_user(user, remember=bool(form.remember.data))
            return redirect(next_url or url_for("ui.dashboard"))
        flash("That email and password do not match an operator account.", "error")
        status = 401
    elif form.is_submitted():
        status = 422
    return render_template("ui/auth/login.html", form=form, next_url=next_url), status


@bp.post("/logout")
@login_required
@requires(OperatorRole.VIEWER)
def logout() -> BaseResponse:
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("ui.login"))


@bp.post("/logout/everywhere")
@login_required
@requires(OperatorRole.VIEWER)
def logout_everywhere() -> BaseResponse:
    """End this account's sessions on every device, this one included."""
    users.sign_out_everywhere(current_user.id)
    logout_user()
    flash("You are signed out on every device.", "info")
    return redirect(url_for("ui.login"))
