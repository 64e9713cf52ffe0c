"""The audit log in the console: sign-ins and console actions recorded, the admin-only page
with its filters and paging, and the CSV export (formula injection guarded)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.lib.clock import utcnow
from app.models import AuditEvent
from app.services import audit
from app.services.auth import create_user
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, form_token, sign_in, text

ROW = re.compile(r'<tr data-audit-id="(\d+)" data-action="([^"]+)" data-outcome="([a-z]+)">')
PASSWORD = "correct horse battery"


def audit_rows(app: Flask, **where: Any) -> list[dict[str, Any]]:
    with app.app_context():
        query = db.select(AuditEvent).order_by(AuditEvent.id)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        rows = [event.to_dict() for event in db.session.scalars(query)]
        db.session.remove()
    return rows


def only_row(app: Flask, **where: Any) -> dict[str, Any]:
    rows = audit_rows(app, **where)
    assert len(rows) == 1, rows
    return rows[0]


def seed(app: Flask, count: int, **fields: Any) -> None:
    """``count`` audit rows, one second apart, the last one newest."""
    now = utcnow()
    with app.app_context():
        for i in range(count):
            values = {"actor": "client:seed", "action": "task.submit", **fields}
            audit.record(**values, now=now - timedelta(seconds=count - i), commit=False)
        db.session.commit()
        db.session.remove()


def signed_in_as(app: Flask, client: FlaskClient, role: str) -> FlaskClient:
    email = f"{role}@example.com"
    with app.app_context():
        create_user(email, PASSWORD, role=role)
        db.session.remove()
    assert sign_in(client, email, PASSWORD).status_code == 302
    return client


# ---------------------------------------------------------------------------------------
# What the console writes
# ---------------------------------------------------------------------------------------


def test_sign_ins_failed_sign_ins_and_sign_outs_are_recorded(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    failed = sign_in(client, "Operator@Example.com", "a wrong password")
    assert failed.status_code == 401
    row = only_row(app, action="user.login_failed")
    assert (row["actor"], row["outcome"], row["status_code"]) == (
        "operator:operator@example.com",
        "refused",
        401,
    )
    assert row["user_id"] is None and row["address"] == "127.0.0.1"

    assert sign_in(client, operator["email"], operator["password"]).status_code == 302
    login = only_row(app, action="user.login")
    assert login["actor"] == "operator:operator@example.com"
    assert login["actor_role"] == "admin" and login["user_id"] is not None
    assert (login["outcome"], login["method"], login["path"]) == ("ok", "POST", "/login")

    token = form_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    logout = only_row(app, action="user.logout")
    assert (logout["actor"], logout["user_id"]) == (login["actor"], login["user_id"])

    dump = json.dumps(audit_rows(app))
    assert "a wrong password" not in dump and PASSWORD not in dump


def test_console_actions_are_recorded_with_the_operator_and_the_change(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)
    token = form_token(console, f"/tasks/{task['task_id']}")
    response = console.post(
        f"/tasks/{task['task_id']}/cancel", data={"csrf_token": token, "reason": "not needed"}
    )
    assert response.status_code == 302
    row = only_row(app, action="task.cancel")
    assert row["actor"] == "operator:operator@example.com"
    assert row["user_id"] is not None and row["key_id"] is None
    assert (row["target_type"], row["target_id"]) == ("task", task["task_id"])
    assert row["summary"]["before"]["status"] == "PENDING"
    assert row["summary"]["after"] == {
        "status": "CANCELLED",
        "cancellation_reason": "not needed",
    }

    agent_id, _ = api.register_agent(personas.fleet)
    token = form_token(console, f"/agents/{agent_id}")
    adjusted = console.post(
        f"/agents/{agent_id}/trust", data={"csrf_token": token, "delta": "-0.2", "reason": "late"}
    )
    assert adjusted.status_code in (200, 302, 303), text(adjusted)
    row = only_row(app, action="trust.adjust")
    assert row["summary"]["before"] == {"trust_score": 0.5}
    assert row["summary"]["after"]["trust_score"] == pytest.approx(0.3)


def test_refused_console_writes_are_recorded(
    app: Flask, client: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)
    token = form_token(client, "/login")  # a valid form, but nobody signed in
    anonymous = client.post(f"/tasks/{task['task_id']}/cancel", data={"csrf_token": token})
    assert anonymous.status_code == 302 and anonymous.location.startswith("/login")
    row = only_row(app, action="task.cancel")
    assert (row["actor"], row["outcome"]) == ("anonymous", "refused")
    assert row["summary"] == {"error": "not_signed_in"}

    viewer = signed_in_as(app, client, "viewer")
    refused = viewer.post(
        f"/tasks/{task['task_id']}/cancel", data={"csrf_token": form_token(viewer)}
    )
    assert refused.status_code == 403
    row = audit_rows(app, action="task.cancel")[-1]
    assert (row["actor"], row["actor_role"], row["outcome"], row["status_code"]) == (
        "operator:viewer@example.com",
        "viewer",
        "refused",
        403,
    )
    no_csrf = viewer.post("/logout", data={})
    assert no_csrf.status_code == 400
    assert only_row(app, action="user.logout")["outcome"] == "refused"


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_see_the_audit_log(app: Flask, client: FlaskClient, role: str) -> None:
    signed_in_as(app, client, role)
    assert client.get("/audit").status_code == 403
    assert client.get("/audit.csv").status_code == 403
    assert 'href="/audit"' not in text(client.get("/"))


def test_the_page_lists_newest_first_with_filters_in_the_url(
    app: Flask, console: FlaskClient
) -> None:
    seed(app, 3, actor="client:acme", action="task.submit", target_type="task", target_id="t1")
    seed(app, 2, actor="client:other", action="schedule.update", outcome="refused", status_code=409)
    page = console.get("/audit")
    assert page.status_code == 200
    assert 'href="/audit"' in text(page)  # the nav link, for admins
    actions = [action for _, action, _ in ROW.findall(text(page))]
    # Newest first: the sign-in, then the seeded rows (stamped in the seconds before it).
    assert actions == [
        "user.login",
        "schedule.update",
        "task.submit",
        "schedule.update",
        "task.submit",
        "task.submit",
    ]

    refused = console.get("/audit", query_string={"outcome": "refused"})
    assert [o for _, _, o in ROW.findall(text(refused))] == ["refused", "refused"]
    by_actor = console.get("/audit", query_string={"actor": "client:*", "action": "task.*"})
    assert len(ROW.findall(text(by_actor))) == 3
    assert "actor: client:*" in text(by_actor)
    assert 'href="/audit.csv?actor=client:*&amp;action=task.*"' in text(by_actor)
    by_target = console.get("/audit", query_string={"target_type": "task", "target_id": "t1"})
    assert len(ROW.findall(text(by_target))) == 3
    fragment = console.get("/audit", query_string={"address": "10.0.0.1"}, headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in text(fragment)
    assert "No events match these filters." in text(fragment)

    bad = console.get("/audit", query_string={"outcome": "maybe", "since": "yesterday"})
    assert bad.status_code == 422
    assert "These filters cannot be applied" in text(bad)


def test_the_page_filters_by_time_and_pages_by_cursor(app: Flask, console: FlaskClient) -> None:
    seed(app, 60, actor="client:acme")
    first = console.get("/audit", query_string={"actor": "client:acme"})
    ids = [int(i) for i, _, _ in ROW.findall(text(first))]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = re.search(r'<a class="button" rel="next" href="([^"]+)"', text(first))
    assert older, "no link to the older page"
    second = console.get(older.group(1).replace("&amp;", "&"))
    more = [int(i) for i, _, _ in ROW.findall(text(second))]
    assert len(more) == 10 and max(more) < min(ids)

    now = utcnow()
    window = console.get(
        "/audit",
        query_string={
            "actor": "client:acme",
            "since": (now - timedelta(seconds=10.5)).strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    assert 9 <= len(ROW.findall(text(window))) <= 11
    assert console.get("/audit", query_string={"cursor": "garbage"}).status_code == 422


def test_summaries_and_actors_are_shown_escaped(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    seed(app, 1, summary={"after": {"description": "<script>alert(1)</script>"}})
    failed = sign_in(client, "<img src=x onerror=alert(2)>@example.com", "whatever it is")
    assert failed.status_code == 401
    assert sign_in(client, operator["email"], operator["password"]).status_code == 302
    body = text(client.get("/audit"))
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(2)&gt;" in body


# ---------------------------------------------------------------------------------------
# CSV export
# ---------------------------------------------------------------------------------------


def read_csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200, text(response)
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.reader(io.StringIO(text(response))))


def test_the_export_has_a_header_and_the_filtered_rows(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)
    api.post(f"/ains/tasks/{task['task_id']}/cancel", personas.client, json={"reason": "done"})
    rows = read_csv(console.get("/audit.csv", query_string={"actor": "client:client-1"}))
    header, *data = rows
    assert header == list(audit.CSV_COLUMNS)
    record = [dict(zip(header, row, strict=True)) for row in data]
    assert [r["action"] for r in record] == ["task.cancel", "task.submit"]
    assert record[1]["target_id"] == task["task_id"]
    assert record[1]["status_code"] == "201" and record[1]["outcome"] == "ok"
    assert json.loads(record[0]["summary"])["after"]["status"] == "CANCELLED"

    everything = read_csv(console.get("/audit.csv"))
    assert len(everything) == 1 + len(audit_rows(app))
    assert console.get("/audit.csv", query_string={"outcome": "maybe"}).status_code == 422


def test_the_export_defuses_spreadsheet_formulas(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    for hostile in ("=1+2", "+SUM(A1)", "-2+3", "@cmd"):
        api.post(f"/ains/tasks/{hostile}/cancel", personas.client, json={})
    seed(app, 1, actor='=HYPERLINK("http://evil")', action="task.submit")
    header, *data = read_csv(console.get("/audit.csv"))
    cells = [cell for row in data for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
    targets = {dict(zip(header, row, strict=True))["target_id"] for row in data}
    assert {"'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd"} <= targets
    assert '\'=HYPERLINK("http://evil")' in cells
