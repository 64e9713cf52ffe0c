"""Flask CLI: keys, users, and ``serve`` (web + worker + clock [+ sample agent])."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from app.lib.clock import isoformat, utcnow
from app.models import Role
from app.services import audit, auth
from app.services.errors import DomainError, InvalidInput
from app.services.principal import Principal

# Whoever runs the command line administers the server: recorded as the keys' creator.
COMMAND_LINE = Principal(role=Role.ADMIN, name="cli")


def recorded(action: str, target_type: str, target_id: str, **summary: object) -> None:
    """An audit row for a change made from the command line (never a secret)."""
    audit.record(
        actor=f"cli:{os.environ.get('USER') or 'unknown'}",
        actor_role=Role.ADMIN,
        action=action,
        target_type=target_type,
        target_id=target_id,
        summary={"after": summary} if summary else None,
        method="CLI",
    )


def register_cli(app: Flask) -> None:
    app.cli.add_command(keys)
    app.cli.add_command(users)
    app.cli.add_command(serve)


@click.group(cls=AppGroup, help="API keys.")
def keys() -> None:
    pass


@keys.command("create", help="Create an API key; the key is printed alone on the last line.")
@click.option("--role", type=click.Choice(Role.ALL), required=True)
@click.option("--name", required=True)
@click.option("--client-id", default=None, help="required for --role client")
@click.option(
    "--expires-in-days", type=click.IntRange(1, 3650), default=None, help="default: never"
)
def create_key(role: str, name: str, client_id: str | None, expires_in_days: int | None) -> None:
    now = utcnow()
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        key, raw = auth.create_api_key(
            name=name,
            role=role,
            client_id=client_id,
            expires_at=expires_at,
            created_by=COMMAND_LINE,
            now=now,
        )
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    recorded("api_key.create", "api_key", key.id, role=role, name=key.name, client_id=client_id)
    click.echo(f"Created {role} key {key.id} ({name}); it is shown once:", err=True)
    click.echo(raw)


@keys.command(
    "rotate", help="Give a key a new secret, printed alone on the last line; the key keeps its id."
)
@click.argument("key_id")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0, auth.MAX_ROTATION_GRACE_SECONDS),
    default=None,
    help="how long the old secret keeps working (default: API_KEY_ROTATION_GRACE_SECONDS)",
)
def rotate_key(key_id: str, grace_seconds: int | None) -> None:
    if grace_seconds is None:
        grace_seconds = current_app.config["API_KEY_ROTATION_GRACE_SECONDS"]
    try:
        key, raw = auth.rotate_api_key(COMMAND_LINE, key_id, grace_seconds)
    except DomainError as exc:
        raise click.UsageError(exc.message) from None
    until = isoformat(key.previous_expires_at) or "now"
    recorded("api_key.rotate", "api_key", key.id, previous_expires_at=until)
    click.echo(f"Rotated key {key.id}; the old secret works until {until}. New key:", err=True)
    click.echo(raw)


@keys.command("revoke", help="Revoke a key: its current and previous secrets stop working.")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    try:
        key = auth.revoke_api_key(COMMAND_LINE, key_id)
    except DomainError as exc:
        raise click.UsageError(exc.message) from None
    recorded("api_key.revoke", "api_key", key.id)
    click.echo(f"Revoked key {key.id} at {isoformat(key.revoked_at)}")


@click.group(cls=AppGroup, help="Operator accounts.")
def users() -> None:
    pass


@users.command("create", help="Create an operator account.")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), default="admin")
def create_user(email: str, password: str, role: str) -> None:
    try:
        user = auth.create_user(email, password, role=role)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    recorded("user.create", "user", str(user.id), email=user.email, role=user.role)
    click.echo(f"Created {user.role} {user.email}")


@users.command("set-password", help="Set an operator's password.")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def set_password(email: str, password: str) -> None:
    try:
        user = auth.set_password(email, password)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    recorded("user.set_password", "user", str(user.id), email=user.email)
    click.echo(f"Password changed for {email}")


@users.command("ensure-admin", help="Create the first operator unless one exists.")
def ensure_admin() -> None:
    config = current_app.config
    user, generated = auth.ensure_admin(config["ADMIN_EMAIL"], config["ADMIN_PASSWORD"])
    if generated:
        click.echo("=" * 60)
        click.echo("Operator account created. Sign in at the UI with:")
        click.echo(f"  email:    {user.email}")
        click.echo(f"  password: {generated}")
        click.echo("It is shown once; change it with `flask --app wsgi users set-password`.")
        click.echo("=" * 60)
    else:
        click.echo(f"Operator account: {user.email}")


@click.command(help="Run web, worker and clock from the Procfile (and a sample agent).")
@click.option("--with-agent/--no-agent", default=True, help="also run one sample agent")
@click.option("--capability", default="report-v1", show_default=True)
@with_appcontext
def serve(with_agent: bool, capability: str) -> None:
    from honcho.manager import Manager

    from app.lib.procfile import read_procfile

    env = dict(os.environ)
    # Every process must share the one Redis this app resolved (maybe the embedded one).
    env["REDIS_URL"] = current_app.config["REDIS_URL"]
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Procfile commands (gunicorn, python) resolve to this virtualenv's executables.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    manager = Manager()
    for name, command in read_procfile("Procfile").items():
        if name != "release":
            manager.add_process(name, command, env=env)
    if with_agent:
        _, raw = auth.create_api_key(name="sample agent (make run)", role=Role.AGENT)
        port = current_app.config["PORT"]
        # The key travels in the environment, not the command line, so `ps` does not show it.
        manager.add_process(
            "agent",
            f"{sys.executable} -m agent_client.sample_agent --api http://127.0.0.1:{port} "
            f"--capability {capability}",
            env={**env, "AINS_API_KEY": raw},
        )
    click.echo(f"AINS UI: http://localhost:{current_app.config['PORT']}/")
    manager.loop()
    sys.exit(manager.returncode)
