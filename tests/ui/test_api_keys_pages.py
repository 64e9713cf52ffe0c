"""API key pages, for admins only: the list with its filters and create form, one key's page
with rotate and revoke, and the new key shown once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.lib.clock import utcnow
from app.models import ApiKey, OperatorRole
from app.services import auth
from app.services.principal import operator as operator_principal
from tests.conftest import Api, Persona
from tests.ui.conftest import HTMX, form_token, sign_in, text

SECRET = re.compile(r"<code class=\"secret-value\" data-secret>([^<]+)</code>")
ROW = re.compile(r'<tr data-key-id="([^"]+)"')
SEED = operator_principal("seed@example.com")


def make_key(app: Flask, name: str = "seeded", **fields: object) -> tuple[str, str]:
    """A client key made through the service: its id and clear key."""
    with app.app_context():
        args: dict[str, object] = {"role": "client", "client_id": "client-1", **fields}
        key, raw = auth.create_api_key(name=name, created_by=SEED, **args)  # type: ignore[arg-type]
        key_id = key.id
        db.session.remove()
    return key_id, raw


def stored(app: Flask, key_id: str) -> ApiKey:
    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        assert key is not None
        db.session.expunge(key)
        db.session.remove()
        return key


def works(api: Api, raw: str) -> bool:
    """Whether the key is accepted by the API."""
    return api.get("/ains/tasks", Persona(raw, "client")).status_code == 200


def signed_in_as(app: Flask, client: FlaskClient, role: str) -> FlaskClient:
    with app.app_context():
        auth.create_user(f"{role}@example.com", "correct horse battery", role=role)
        db.session.remove()
    response = sign_in(client, f"{role}@example.com", "correct horse battery")
    assert response.status_code == 302
    return client


@pytest.mark.parametrize("role", [OperatorRole.VIEWER, OperatorRole.OPERATOR])
def test_viewers_and_operators_are_refused_every_key_page(
    app: Flask, client: FlaskClient, role: str, api: Api
) -> None:
    key_id, raw = make_key(app)
    signed_in_as(app, client, role)
    home = text(client.get("/"))
    assert 'href="/api-keys"' not in home
    token = form_token(client, "/")
    assert client.get("/api-keys").status_code == 403
    assert client.get(f"/api-keys/{key_id}").status_code == 403
    posts = {
        "/api-keys": {"name": "x", "role": "admin"},
        f"/api-keys/{key_id}/rotate": {"grace_seconds": "0"},
        f"/api-keys/{key_id}/revoke": {},
    }
    for path, data in posts.items():
        response = client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 403, path
        assert "needs the admin role" in text(response)
    assert works(api, raw)
    assert stored(app, key_id).revoked_at is None
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ApiKey)) == 1
        db.session.remove()


def test_an_admin_creates_a_key_and_sees_it_once(
    app: Flask, console: FlaskClient, api: Api
) -> None:
    assert '<a href="/api-keys">API keys' in text(console.get("/"))  # the admin's nav link
    assert console.get("/api-keys").status_code == 200
    response = console.post(
        "/api-keys",
        data={
            "csrf_token": form_token(console, "/api-keys"),
            "name": "billing <service>",
            "role": "client",
            "client_id": "client-7",
            "expires": "90",
        },
    )
    assert response.status_code == 303
    detail = console.get(response.headers["Location"])
    assert detail.status_code == 200
    assert detail.headers["Cache-Control"] == "no-store"
    html = text(detail)
    [raw] = SECRET.findall(html)
    assert "billing &lt;service&gt;" in html and "<service>" not in html
    assert "copy" in html.lower()
    assert works(api, raw)
    key_id = response.headers["Location"].rsplit("/", 1)[1]
    key = stored(app, key_id)
    assert (key.role, key.client_id, key.created_by) == (
        "client",
        "client-7",
        "admin:operator@example.com",
    )
    assert key.expires_at is not None
    assert timedelta(days=89) < key.expires_at - utcnow() <= timedelta(days=90)
    # Shown once: not on the next view, nor in the list.
    again = text(console.get(f"/api-keys/{key_id}"))
    assert raw not in again and not SECRET.search(again)
    listed = text(console.get("/api-keys"))
    assert raw not in listed and ROW.findall(listed) == [key_id]
    assert f"ains_{key.prefix}_" in listed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"role": "client", "client_id": ""}, "a client key needs the client id"),
        ({"name": ""}, "name the key after who holds it"),
        ({"name": "x" * 201}, "200 characters"),
        ({"role": "owner"}, "Not a valid choice"),
        ({"expires": "date", "expires_at": ""}, "pick the date"),
        ({"expires": "date", "expires_at": "2020-01-01T10:00"}, "must be in the future"),
    ],
)
def test_it_refuses_a_bad_form_with_the_field_marked(
    app: Flask, console: FlaskClient, data: dict[str, str], message: str
) -> None:
    fields = {"name": "k", "role": "client", "client_id": "client-1", "expires": "", **data}
    response = console.post(
        "/api-keys", data={"csrf_token": form_token(console, "/api-keys"), **fields}
    )
    assert response.status_code == 422
    html = text(response)
    assert "The key was not created" in html and message in html
    with app.app_context():
        assert db.session.scalars(db.select(ApiKey)).all() == []
        db.session.remove()


def test_an_admin_rotates_with_a_grace_period_and_sees_the_new_key_once(
    app: Flask, console: FlaskClient, api: Api
) -> None:
    key_id, old = make_key(app)
    page = text(console.get(f"/api-keys/{key_id}"))
    assert 'name="grace_seconds"' in page and "1 day (default)" in page
    with time_machine.travel(utcnow(), tick=False) as clock:
        response = console.post(
            f"/api-keys/{key_id}/rotate",
            data={"csrf_token": form_token(console, "/api-keys"), "grace_seconds": "3600"},
        )
        assert response.status_code == 303
        assert response.headers["Location"].endswith(f"/api-keys/{key_id}")
        detail = console.get(response.headers["Location"])
        html = text(detail)
        [new] = SECRET.findall(html)
        assert "The new key" in html and "keeps working for 1 hour" in html
        assert 'id="grace-notice"' in html
        assert works(api, new) and works(api, old)
        clock.shift(timedelta(hours=1, seconds=1))
        assert works(api, new) and not works(api, old)
    assert new not in text(console.get(f"/api-keys/{key_id}"))


def test_rotating_with_no_grace_ends_the_old_key_now(
    app: Flask, console: FlaskClient, api: Api
) -> None:
    key_id, old = make_key(app)
    response = console.post(
        f"/api-keys/{key_id}/rotate",
        data={"csrf_token": form_token(console, "/api-keys"), "grace_seconds": "0"},
    )
    [new] = SECRET.findall(text(console.get(response.headers["Location"])))
    assert works(api, new) and not works(api, old)


def test_a_grace_period_not_offered_is_refused(app: Flask, console: FlaskClient, api: Api) -> None:
    key_id, old = make_key(app)
    response = console.post(
        f"/api-keys/{key_id}/rotate",
        data={"csrf_token": form_token(console, "/api-keys"), "grace_seconds": "99999999"},
    )
    assert response.status_code == 422
    assert "The key was not rotated" in text(response)
    assert stored(app, key_id).rotated_at is None and works(api, old)


def test_an_admin_revokes_a_key_after_confirming(
    app: Flask, console: FlaskClient, api: Api
) -> None:
    key_id, raw = make_key(app)
    page = text(console.get(f"/api-keys/{key_id}"))
    assert "Revoke this key?" in page and 'id="revoke-form"' in page
    token = form_token(console, "/api-keys")
    response = console.post(f"/api-keys/{key_id}/revoke", data={"csrf_token": token})
    assert response.status_code == 303
    html = text(console.get(response.headers["Location"]))
    assert "Key revoked" in html and 'data-status="revoked"' in html
    assert 'id="rotate-form"' not in html and 'id="revoke-form"' not in html
    assert not works(api, raw)
    revoked_at = stored(app, key_id).revoked_at
    again = console.post(f"/api-keys/{key_id}/revoke", data={"csrf_token": token})
    assert "already revoked" in text(console.get(again.headers["Location"]))
    assert stored(app, key_id).revoked_at == revoked_at
    rotate = console.post(
        f"/api-keys/{key_id}/rotate", data={"csrf_token": token, "grace_seconds": "0"}
    )
    assert "Not rotated" in text(console.get(rotate.headers["Location"]))


def test_a_post_without_the_csrf_token_changes_nothing(
    app: Flask, console: FlaskClient, api: Api
) -> None:
    key_id, raw = make_key(app)
    assert console.post(f"/api-keys/{key_id}/revoke").status_code == 400
    assert console.post("/api-keys", data={"name": "x", "role": "admin"}).status_code == 400
    assert works(api, raw)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ApiKey)) == 1
        db.session.remove()


def test_the_list_filters_by_status_and_answers_htmx_with_its_region(
    app: Flask, console: FlaskClient
) -> None:
    kept, _ = make_key(app, "kept")
    gone, _ = make_key(app, "gone")
    soon, _ = make_key(app, "soon", expires_at=utcnow() + timedelta(days=2))
    with app.app_context():
        auth.revoke_api_key(SEED, gone)
        db.session.remove()
    assert ROW.findall(text(console.get("/api-keys", query_string={"status": "revoked"}))) == [gone]
    active = console.get("/api-keys", query_string={"status": "active"})
    assert ROW.findall(text(active)) == [kept]
    fragment = console.get("/api-keys", query_string={"status": "expiring"}, headers=HTMX)
    html = text(fragment)
    assert html.lstrip().startswith('<section id="api-key-results"')
    assert ROW.findall(html) == [soon] and "HX-Request" in fragment.headers["Vary"]
    bad = console.get("/api-keys", query_string={"status": "lost"})
    assert bad.status_code == 422 and "cannot be applied" in text(bad)


def test_an_unknown_key_is_404(console: FlaskClient) -> None:
    assert console.get("/api-keys/key_nope").status_code == 404
