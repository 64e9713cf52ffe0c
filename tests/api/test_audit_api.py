"""The audit trail of the API: a row for every state-changing request, refused ones too;
the agent work loop only when asked; no secrets; and GET /ains/audit-events for admins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app.api.audit import AuditPageOut
from app.extensions import db
from app.models import AuditEvent
from app.services.audit import audit_settings
from tests.api.support import assert_error
from tests.conftest import Api, Personas

EVENTS = "/ains/audit-events"
SCHEDULES = "/aitp/tasks/schedule"


def audit_rows(app: Flask, **where: Any) -> list[dict[str, Any]]:
    """The audit rows (oldest first) whose columns equal ``where``."""
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


@pytest.fixture
def agent_work_audited() -> Iterator[None]:
    """AUDIT_AGENT_WORK=true for one test (the setting the app read from its config)."""
    saved = audit_settings.agent_work
    audit_settings.agent_work = True
    yield
    audit_settings.agent_work = saved


def test_it_audits_a_submit_and_a_cancel_with_who_what_and_where(
    app: Flask, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)
    submitted = only_row(app, action="task.submit")
    assert submitted["actor"] == "client:client-1"
    assert submitted["actor_role"] == "client"
    assert submitted["key_id"] and submitted["key_id"].startswith("key_")
    assert (submitted["target_type"], submitted["target_id"]) == ("task", task["task_id"])
    assert (submitted["status_code"], submitted["outcome"]) == (201, "ok")
    assert (submitted["method"], submitted["path"]) == ("POST", "/ains/tasks")
    assert submitted["address"] == "127.0.0.1"

    response = api.post(f"/ains/tasks/{task['task_id']}/cancel", personas.client, json={})
    assert response.status_code == 200
    cancelled = only_row(app, action="task.cancel")
    assert (cancelled["target_type"], cancelled["target_id"]) == ("task", task["task_id"])
    assert cancelled["outcome"] == "ok"
    assert cancelled["summary"]["before"]["status"] == "PENDING"
    assert cancelled["summary"]["after"]["status"] == "CANCELLED"
    # Reads are not audited.
    assert api.get(f"/ains/tasks/{task['task_id']}", personas.client).status_code == 200
    assert len(audit_rows(app)) == 2


def test_refused_requests_are_audited_with_the_reason(
    app: Flask, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)
    bad_key = "ains_0123456789ab_not-the-secret"
    assert_error(
        api.post("/ains/tasks", None, json={}, headers={"Authorization": f"Bearer {bad_key}"}), 401
    )
    unauthenticated = only_row(app, status_code=401)
    assert unauthenticated["actor"] == "anonymous"
    assert unauthenticated["outcome"] == "refused"
    assert unauthenticated["summary"] == {"error": "unauthorized", "key_prefix": "0123456789ab"}
    assert "not-the-secret" not in json.dumps(unauthenticated)

    # 403: a client may not adjust trust.
    agent_id, _ = api.register_agent(personas.fleet)
    forbidden = api.post(
        f"/ains/agents/{agent_id}/trust/adjust", personas.client, json={"delta": 0.1, "reason": "x"}
    )
    assert_error(forbidden, 403)
    row = only_row(app, status_code=403)
    assert (row["actor"], row["action"], row["outcome"]) == (
        "client:client-1",
        "trust.adjust",
        "refused",
    )
    assert (row["target_type"], row["target_id"]) == ("agent", agent_id)
    assert row["summary"] == {"error": "forbidden"}

    # 404: another client's task (ids do not leak, but the attempt shows).
    cancel = api.post(f"/ains/tasks/{task['task_id']}/cancel", personas.other_client, json={})
    assert_error(cancel, 404)
    row = only_row(app, status_code=404)
    assert (row["actor"], row["action"]) == ("client:client-2", "task.cancel")
    assert row["target_id"] == task["task_id"]
    assert row["summary"] is None or "before" not in row["summary"]

    # 409 and 422.
    api.post(f"/ains/tasks/{task['task_id']}/cancel", personas.client, json={})
    assert_error(api.post(f"/ains/tasks/{task['task_id']}/cancel", personas.client, json={}), 409)
    assert only_row(app, status_code=409)["summary"] == {"error": "conflict"}
    assert_error(api.post("/ains/tasks", personas.client, json={"priority": "high"}), 422)
    assert only_row(app, status_code=422)["action"] == "task.submit"

    # A write to no route at all.
    assert api.post("/ains/no-such-thing", personas.client, json={}).status_code == 404
    row = audit_rows(app, path="/ains/no-such-thing")[0]
    assert (row["action"], row["outcome"]) == ("http.post", "refused")


def test_the_agent_work_loop_is_not_audited_but_refusals_on_it_are(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, key = api.register_agent(personas.fleet)
    task = api.submit(personas.client)
    heartbeat = api.post(f"/ains/agents/{agent_id}/heartbeat", key, json={"status": "ACTIVE"})
    assert heartbeat.status_code == 200
    assert [t["task_id"] for t in api.claim(agent_id, key)] == [task["task_id"]]
    progress = api.post(f"/ains/tasks/{task['task_id']}/progress", key, json={"progress": 50})
    assert progress.status_code == 200
    done = api.post(f"/ains/tasks/{task['task_id']}/complete", key, json={"result_data": {"a": 1}})
    assert done.status_code == 200
    assert [r["action"] for r in audit_rows(app)] == ["agent.register", "task.submit"]

    # Attacks on the loop show up: a bad key, and another fleet's agent.
    assert_error(
        api.post(f"/ains/agents/{agent_id}/heartbeat", None, json={"status": "ACTIVE"}), 401
    )
    foreign = api.post(
        f"/ains/agents/{agent_id}/heartbeat", personas.other_fleet, json={"status": "ACTIVE"}
    )
    assert_error(foreign, 404)
    refused = audit_rows(app, action="agent.heartbeat")
    assert [(r["status_code"], r["actor"]) for r in refused] == [
        (401, "anonymous"),
        (404, "agent:fleet two"),
    ]


@pytest.mark.usefixtures("agent_work_audited")
def test_the_agent_work_loop_is_audited_with_audit_agent_work(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, key = api.register_agent(personas.fleet)
    task = api.submit(personas.client)
    api.post(f"/ains/agents/{agent_id}/heartbeat", key, json={"status": "ACTIVE"})
    api.claim(agent_id, key)
    api.post(f"/ains/tasks/{task['task_id']}/complete", key, json={"result_data": {"secret": "x"}})
    actions = [r["action"] for r in audit_rows(app)]
    assert actions == [
        "agent.register",
        "task.submit",
        "agent.heartbeat",
        "task.claim",
        "task.complete",
    ]
    complete = only_row(app, action="task.complete")
    assert complete["actor"] == f"agent:{agent_id}"
    assert complete["summary"] is None  # never the result body


def test_trust_adjustments_record_the_score_before_and_after(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    response = api.post(
        f"/ains/agents/{agent_id}/trust/adjust",
        personas.admin,
        json={"delta": 0.1, "reason": "reviewed its work"},
    )
    assert response.status_code == 201, response.get_json()
    row = only_row(app, action="trust.adjust")
    assert row["actor"] == "admin:admin"
    assert (row["target_type"], row["target_id"]) == ("agent", agent_id)
    assert row["summary"] == {
        "before": {"trust_score": 0.5},
        "after": {"trust_score": 0.6, "reason": "reviewed its work"},
    }


def test_schedule_edits_record_what_changed(app: Flask, api: Api, personas: Personas) -> None:
    created = api.post(
        SCHEDULES,
        personas.client,
        json={
            "task_type": "report",
            "capability_required": "report-v1",
            "cron_expression": "0 * * * *",
            "input_data": {"payload": "private words"},
        },
    )
    assert created.status_code == 201, created.get_json()
    schedule_id = created.get_json()["schedule_id"]
    row = only_row(app, action="schedule.create")
    assert (row["target_type"], row["target_id"]) == ("schedule", schedule_id)
    assert row["summary"]["before"] is None
    assert row["summary"]["after"]["cron_expression"] == "0 * * * *"
    assert row["summary"]["after"]["input_data"] == "[changed]"

    edit = api.call(
        "PUT", f"{SCHEDULES}/{schedule_id}", personas.client, json={"cron_expression": "30 2 * * *"}
    )
    assert edit.status_code == 200, edit.get_json()
    row = only_row(app, action="schedule.update")
    assert row["summary"]["before"]["cron_expression"] == "0 * * * *"
    assert row["summary"]["after"]["cron_expression"] == "30 2 * * *"
    assert "next_run_at" in row["summary"]["after"]
    assert "task_type" not in row["summary"]["after"]  # unchanged fields stay out

    assert api.post(f"{SCHEDULES}/{schedule_id}/pause", personas.client).status_code == 200
    row = only_row(app, action="schedule.pause")
    assert row["summary"]["before"]["status"] == "ACTIVE"
    assert row["summary"]["after"]["status"] == "PAUSED"
    assert api.call("DELETE", f"{SCHEDULES}/{schedule_id}", personas.client).status_code == 200
    row = only_row(app, action="schedule.delete")
    assert row["summary"]["after"]["status"] == "DELETED"
    assert "private words" not in json.dumps(audit_rows(app))


def test_no_secret_reaches_the_audit_log(app: Flask, api: Api, personas: Personas) -> None:
    key = api.post(
        "/ains/api-keys", personas.admin, json={"name": "ci", "role": "client", "client_id": "ci"}
    )
    assert key.status_code == 201, key.get_json()
    raw_key = key.get_json()["api_key"]
    hook = api.post(
        "/ains/webhooks",
        personas.admin,
        json={"url": "https://hooks.example.com/in?token=url-token-123", "secret": "s" * 40},
    )
    assert hook.status_code == 201, hook.get_json()
    hook_id = hook.get_json()["webhook_id"]
    rotated = api.post(
        f"/ains/webhooks/{hook_id}/rotate-secret", personas.admin, json={"secret": "t" * 40}
    )
    assert rotated.status_code == 200, rotated.get_json()
    generated = api.post(f"/ains/webhooks/{hook_id}/rotate-secret", personas.admin, json={})
    generated_secret = generated.get_json()["secret"]
    # Someone pastes a key where it does not belong.
    api.post("/ains/tasks", None, json={}, headers={"Authorization": f"Bearer {raw_key}x"})

    rows = audit_rows(app)
    assert {"api_key.create", "webhook.create", "webhook.rotate_secret"} <= {
        r["action"] for r in rows
    }
    dump = json.dumps(rows)
    for secret in (raw_key, raw_key.split("_", 2)[2], "s" * 40, "t" * 40, generated_secret):
        assert secret not in dump
    assert "url-token-123" not in dump
    created = only_row(app, action="webhook.create")
    assert created["summary"]["after"]["url"] == "https://hooks.example.com/in"
    assert created["summary"]["after"]["secret_sealed"] == "[changed]"
    first_rotation = audit_rows(app, action="webhook.rotate_secret")[0]
    assert first_rotation["summary"]["after"]["secret_sealed"] == "[changed]"
    assert first_rotation["target_id"] == hook_id


def test_admins_read_the_audit_log_filtered_and_paged(
    app: Flask, api: Api, personas: Personas
) -> None:
    tasks = [api.submit(personas.client)["task_id"] for _ in range(3)]
    api.submit(personas.other_client)
    api.post(f"/ains/tasks/{tasks[0]}/cancel", personas.other_client, json={})  # 404

    response = api.get(
        EVENTS, personas.admin, query_string={"actor": "client:client-1", "limit": 2}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    AuditPageOut.model_validate(body)
    assert [e["target_id"] for e in body["events"]] == [tasks[2], tasks[1]]
    more = api.get(
        EVENTS,
        personas.admin,
        query_string={"actor": "client:client-1", "limit": 2, "cursor": body["next_cursor"]},
    ).get_json()
    assert [e["target_id"] for e in more["events"]] == [tasks[0]]
    assert more["next_cursor"] is None

    refused = api.get(EVENTS, personas.admin, query_string={"outcome": "refused"}).get_json()
    assert [(e["actor"], e["status_code"]) for e in refused["events"]] == [("client:client-2", 404)]
    prefix = api.get(EVENTS, personas.admin, query_string={"actor": "client:*"}).get_json()
    assert len(prefix["events"]) == 5
    by_target = api.get(
        EVENTS, personas.admin, query_string={"target_type": "task", "target_id": tasks[0]}
    ).get_json()
    assert [e["action"] for e in by_target["events"]] == ["task.cancel", "task.submit"]

    assert_error(api.get(EVENTS, personas.admin, query_string={"outcome": "maybe"}), 422)
    assert_error(api.get(EVENTS, personas.admin, query_string={"cursor": "nonsense"}), 422)
    assert_error(api.get(EVENTS, personas.client), 403)
    assert_error(api.get(EVENTS, personas.fleet), 403)
    assert_error(api.get(EVENTS), 401)
