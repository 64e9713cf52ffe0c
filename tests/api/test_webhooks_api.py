"""Webhooks through the JSON API: agents', clients' and global subscriptions, who sees
which, the secret shown once, and the delivery history (with redeliver and test ping).

Nothing sends in these tests unless ``send_now`` is called: the RQ worker is not running.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import Webhook, WebhookDelivery, WebhookEvents
from app.services.webhooks import webhook_settings
from tests.api.support import T0, assert_error, load
from tests.api.webhook_support import receiver, send_now
from tests.conftest import Api, Persona, Personas

HOOKS = "/ains/webhooks"
DELIVERIES = "/ains/webhook-deliveries"
URL = "http://127.0.0.1:9/hook"  # nothing listens: no test here sends to it
SECRET = "s3cret-value-1234"


def agent_hooks(agent_id: str) -> str:
    return f"/ains/agents/{agent_id}/webhooks"


def create(api: Api, persona: Persona, path: str = HOOKS, **fields: Any) -> dict[str, Any]:
    response = api.post(path, persona, json={"url": URL, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(api: Api, persona: Persona, path: str = HOOKS) -> list[str]:
    response = api.get(path, persona)
    assert response.status_code == 200, response.get_json()
    return [h["webhook_id"] for h in response.get_json()["webhooks"]]


def deliveries(api: Api, persona: Persona, webhook_id: str, **query: Any) -> dict[str, Any]:
    response = api.get(f"{HOOKS}/{webhook_id}/deliveries", persona, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ping(api: Api, persona: Persona, webhook_id: str) -> dict[str, Any]:
    response = api.post(f"{HOOKS}/{webhook_id}/test", persona)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def webhook_count(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(Webhook))
        db.session.remove()
    return count or 0


# --- Agents' webhooks (seed 004) --------------------------------------------------------


def test_it_creates_lists_and_deletes_an_agent_webhook_with_the_agents_own_key(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    events = ["task.completed", "task.failed"]
    hook = create(api, agent, agent_hooks(agent_id), events=events, secret=SECRET)
    assert hook["webhook_id"].startswith("wh")
    assert hook["agent_id"] == agent_id and hook["client_id"] is None
    assert hook["owner"] == f"agent:{agent_id}"
    assert (hook["url"], hook["events"], hook["active"]) == (URL, events, True)
    assert hook["created_at"] and hook["created_by"] == f"agent:{agent_id}"
    assert hook["secret"] == SECRET and hook["secret_hint"] == "…1234"
    assert hook["deliveries"] == {"pending": 0, "delivered": 0, "failed": 0}

    [listed_hook] = api.get(agent_hooks(agent_id), agent).get_json()["webhooks"]
    assert listed_hook["webhook_id"] == hook["webhook_id"] and "secret" not in listed_hook
    assert listed(api, agent) == [hook["webhook_id"]]
    assert api.get(f"{HOOKS}/{hook['webhook_id']}", agent).get_json()["url"] == URL
    row = load(app, Webhook, hook["webhook_id"])
    assert SECRET not in row.secret_sealed  # sealed at rest

    response = api.call("DELETE", f"{HOOKS}/{hook['webhook_id']}", agent)
    assert response.status_code == 200
    assert response.get_json() == {
        "webhook_id": hook["webhook_id"],
        "deleted": True,
        "message": "Webhook deleted",
    }
    assert_error(api.get(f"{HOOKS}/{hook['webhook_id']}", agent), 404, "not_found")
    assert listed(api, agent, agent_hooks(agent_id)) == []
    assert webhook_count(app) == 0


def test_it_lets_an_admin_and_the_registering_key_manage_an_agents_webhooks(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    hook = create(api, personas.admin, agent_hooks(agent_id), events=["agent.offline"])
    assert hook["agent_id"] == agent_id and hook["created_by"] == "admin:admin"
    assert listed(api, personas.fleet, agent_hooks(agent_id)) == [hook["webhook_id"]]
    assert listed(api, personas.fleet) == [hook["webhook_id"]]
    assert listed(api, personas.admin, agent_hooks(agent_id)) == [hook["webhook_id"]]
    assert api.call("DELETE", f"{HOOKS}/{hook['webhook_id']}", personas.fleet).status_code == 200
    assert webhook_count(app) == 0
    assert_error(api.post(agent_hooks("agent_nope"), personas.admin, json={"url": URL}), 404)


def test_it_refuses_client_keys_on_agents_webhooks(api: Api, personas: Personas) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    assert_error(api.post(agent_hooks(agent_id), personas.client, json={"url": URL}), 403)
    assert_error(api.get(agent_hooks(agent_id), personas.client), 403)


# --- Clients' and global webhooks -------------------------------------------------------


def test_it_creates_a_client_webhook_with_a_generated_secret_for_every_event(
    api: Api, personas: Personas
) -> None:
    hook = create(api, personas.client, description="  billing  ")
    assert hook["client_id"] == "client-1" and hook["agent_id"] is None
    assert hook["owner"] == "client:client-1"
    assert hook["events"] == list(WebhookEvents.ALL)
    assert hook["description"] == "billing"
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(secret) >= 32
    assert hook["secret_hint"] == f"…{secret[-4:]}"
    again = create(api, personas.client, client_id="client-1")
    assert again["secret"] != secret  # each webhook its own
    assert listed(api, personas.client) == [again["webhook_id"], hook["webhook_id"]]
    error = assert_error(
        api.post(HOOKS, personas.client, json={"url": URL, "client_id": "client-2"}), 403
    )
    assert "own client" in error["message"]


def test_it_lets_an_admin_create_global_webhooks_and_webhooks_for_a_client(
    api: Api, personas: Personas
) -> None:
    overall = create(api, personas.admin, events=["task.failed"])
    assert overall["owner"] == "global"
    assert overall["client_id"] is None and overall["agent_id"] is None
    for_client = create(api, personas.admin, client_id="client-2")
    assert for_client["owner"] == "client:client-2"
    assert listed(api, personas.other_client) == [for_client["webhook_id"]]
    assert listed(api, personas.client) == []
    assert listed(api, personas.fleet) == []
    assert listed(api, personas.admin) == [for_client["webhook_id"], overall["webhook_id"]]
    other = api.get(f"{HOOKS}/{for_client['webhook_id']}", personas.other_client)
    assert other.status_code == 200
    assert_error(api.get(f"{HOOKS}/{overall['webhook_id']}", personas.other_client), 404)


@pytest.mark.parametrize("persona", ["fleet", "agent"])
def test_it_refuses_agent_keys_on_the_client_webhook_route(
    app: Flask, api: Api, personas: Personas, persona: str
) -> None:
    _, agent = api.register_agent(personas.fleet)
    key = agent if persona == "agent" else personas.fleet
    assert_error(api.post(HOOKS, key, json={"url": URL}), 403, "forbidden")
    assert webhook_count(app) == 0


def test_it_shows_the_secret_in_the_create_and_rotate_responses_only(
    app: Flask, api: Api, personas: Personas, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = create(api, personas.client, secret=SECRET)
    webhook_id = hook["webhook_id"]
    rotated = api.post(f"{HOOKS}/{webhook_id}/rotate-secret", personas.client).get_json()
    new_secret = rotated["secret"]
    reads = [
        api.get(HOOKS, personas.client),
        api.get(f"{HOOKS}/{webhook_id}", personas.client),
        api.patch(f"{HOOKS}/{webhook_id}", personas.client, json={"description": "x"}),
        api.get(f"{HOOKS}/{webhook_id}/deliveries", personas.client),
    ]
    for response in reads:
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert SECRET not in text and new_secret not in text and '"secret"' not in text
    short = api.post(f"{HOOKS}/{webhook_id}/rotate-secret", personas.client, json={"secret": "x"})
    assert_error(short, 422, field="secret")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and new_secret not in logged


# --- Validation -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["client", "agent"])
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "http://user:pass@127.0.0.1/hook"}, "url"),
        ({"url": "http:///no-host"}, "url"),
        ({"url": "http://exa mple.com/hook"}, "url"),
        ({"url": "http://127.0.0.1/a\tb"}, "url"),
        ({"url": URL, "secret": "fifteen-chars!!"}, "secret"),
        ({"url": ""}, "url"),
        ({"url": "http://x/" + "a" * 2000}, "url"),
        ({}, "url"),
        ({"url": URL, "events": ["task.exploded"]}, "events"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": "task.created"}, "events"),
        ({"url": URL, "secret": "short"}, "secret"),
        ({"url": URL, "secret": "x" * 201}, "secret"),
        ({"url": URL, "description": "d" * 201}, "description"),
        ({"url": URL, "colour": "red"}, "colour"),
    ],
)
def test_it_refuses_invalid_webhooks(
    app: Flask,
    api: Api,
    personas: Personas,
    route: str,
    fields: dict[str, Any],
    field: str,
) -> None:
    if route == "agent":
        agent_id, persona = api.register_agent(personas.fleet)
        path = agent_hooks(agent_id)
    else:
        path, persona = HOOKS, personas.client
    assert_error(api.post(path, persona, json=fields), 422, "validation_error", field)
    assert webhook_count(app) == 0


@pytest.fixture
def private_refused() -> Iterator[None]:
    """Production's rule: no private, loopback or link-local receivers."""
    before = webhook_settings.allow_private
    webhook_settings.allow_private = False
    try:
        yield
    finally:
        webhook_settings.allow_private = before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://localhost:8000/hook",
        "https://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
    ],
)
def test_it_refuses_private_addresses_unless_allowed(
    app: Flask, api: Api, personas: Personas, private_refused: None, url: str
) -> None:
    error = assert_error(api.post(HOOKS, personas.client, json={"url": url}), 422, field="url")
    assert "WEBHOOK_ALLOW_PRIVATE" in error["message"]
    assert webhook_count(app) == 0


def test_it_refuses_moving_a_webhook_to_a_private_address(
    api: Api, personas: Personas, private_refused: None
) -> None:
    hook = create(api, personas.client, url="https://93.184.215.14/hook")
    moved = api.patch(f"{HOOKS}/{hook['webhook_id']}", personas.client, json={"url": URL})
    assert_error(moved, 422, field="url")
    assert api.get(f"{HOOKS}/{hook['webhook_id']}", personas.client).get_json()["url"] == (
        "https://93.184.215.14/hook"
    )


# --- Isolation --------------------------------------------------------------------------


def probes(api: Api, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    """Every call on one webhook and its delivery, as a function of the caller."""
    hook = f"{HOOKS}/{webhook_id}"
    return {
        "get": lambda p: api.get(hook, p),
        "patch": lambda p: api.patch(hook, p, json={"url": "http://127.0.0.1:1/x"}),
        "rotate": lambda p: api.post(f"{hook}/rotate-secret", p),
        "test": lambda p: api.post(f"{hook}/test", p),
        "deliveries": lambda p: api.get(f"{hook}/deliveries", p),
        "delivery": lambda p: api.get(f"{DELIVERIES}/{delivery_id}", p),
        "redeliver": lambda p: api.post(f"{DELIVERIES}/{delivery_id}/redeliver", p),
        "delete": lambda p: api.call("DELETE", hook, p),
    }


def test_it_hides_a_clients_webhook_from_other_clients_and_agents(
    app: Flask, api: Api, personas: Personas
) -> None:
    hook = create(api, personas.client, secret=SECRET)
    delivery = ping(api, personas.client, hook["webhook_id"])
    _, agent = api.register_agent(personas.fleet)
    for persona in (personas.other_client, personas.other_fleet, personas.fleet, agent):
        for name, call in probes(api, hook["webhook_id"], delivery["delivery_id"]).items():
            response = call(persona)
            assert response.status_code == 404, (name, persona.role, response.get_json())
            assert_error(response, 404, "not_found")
        assert listed(api, persona) == []
    row = load(app, Webhook, hook["webhook_id"])
    assert (row.url, row.secret_hint) == (URL, "1234")
    assert deliveries(api, personas.client, hook["webhook_id"])["deliveries"] == [
        {**delivery, "attempts": []}
    ]


def test_it_hides_an_agents_webhook_from_other_fleets_and_clients(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    hook = create(api, agent, agent_hooks(agent_id))
    delivery = ping(api, agent, hook["webhook_id"])
    other_id, other_agent = api.register_agent(personas.fleet, name="sibling")
    strangers = (personas.other_fleet, personas.client, personas.other_client, other_agent)
    for persona in strangers:
        for name, call in probes(api, hook["webhook_id"], delivery["delivery_id"]).items():
            response = call(persona)
            assert response.status_code == 404, (name, persona.role, response.get_json())
            assert_error(response, 404, "not_found")
        assert hook["webhook_id"] not in listed(api, persona)
    # A sibling agent's own key does not reach it either, through the agent's route.
    assert_error(api.get(agent_hooks(agent_id), other_agent), 404)
    assert_error(api.post(agent_hooks(agent_id), other_agent, json={"url": URL}), 404)
    assert_error(api.get(agent_hooks(agent_id), personas.other_fleet), 404)
    assert listed(api, agent, agent_hooks(agent_id)) == [hook["webhook_id"]]
    assert listed(api, other_agent, agent_hooks(other_id)) == []
    assert webhook_count(app) == 1


# --- Changing a webhook -----------------------------------------------------------------


def test_it_changes_url_events_description_and_pauses_and_resumes(
    app: Flask, api: Api, personas: Personas
) -> None:
    hook = create(api, personas.client, events=["task.created"], description="old")
    path = f"{HOOKS}/{hook['webhook_id']}"
    changed = api.patch(
        path,
        personas.client,
        json={
            "url": "http://127.0.0.1:10/new",
            "events": ["task.completed", "task.failed", "task.completed"],
            "description": None,
        },
    ).get_json()
    assert changed["url"] == "http://127.0.0.1:10/new"
    assert changed["events"] == ["task.completed", "task.failed"]
    assert changed["description"] is None and changed["active"] is True

    paused = api.patch(path, personas.client, json={"active": False}).get_json()
    assert paused["active"] is False
    assert paused["disabled_reason"] == "paused by client:client-1"
    assert paused["disabled_at"] is not None
    resumed = api.patch(path, personas.client, json={"active": True}).get_json()
    assert resumed["active"] is True
    assert resumed["disabled_reason"] is None and resumed["disabled_at"] is None

    row = load(app, Webhook, hook["webhook_id"])
    assert row.url == "http://127.0.0.1:10/new" and row.active is True


def test_it_clears_an_automatic_disable_when_re_enabled(
    app: Flask, api: Api, personas: Personas
) -> None:
    hook = create(api, personas.client)
    with app.app_context():  # as the sender leaves it after 20 failures in a row
        row = db.session.get(Webhook, hook["webhook_id"])
        assert row is not None
        row.active, row.consecutive_failures = False, 20
        row.disabled_reason = "20 deliveries in a row failed; the last: HTTP 500"
        row.disabled_at = row.updated_at
        db.session.commit()
        db.session.remove()
    shown = api.get(f"{HOOKS}/{hook['webhook_id']}", personas.client).get_json()
    assert shown["active"] is False and shown["disabled_reason"].startswith("20 deliveries")
    resumed = api.patch(f"{HOOKS}/{hook['webhook_id']}", personas.client, json={"active": True})
    body = resumed.get_json()
    assert body["active"] is True and body["disabled_reason"] is None
    assert body["consecutive_failures"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": None}, "url"),
        ({"events": None}, "events"),
        ({"active": None}, "active"),
        ({"active": "yes"}, "active"),
        ({"url": "ftp://example.com/"}, "url"),
        ({"events": []}, "events"),
        ({"events": ["task.exploded"]}, "events"),
        ({"secret": SECRET}, "secret"),
    ],
)
def test_it_refuses_invalid_changes(
    app: Flask, api: Api, personas: Personas, change: dict[str, Any], field: str
) -> None:
    hook = create(api, personas.client, events=["task.created"])
    response = api.patch(f"{HOOKS}/{hook['webhook_id']}", personas.client, json=change)
    assert_error(response, 422, "validation_error", field)
    row = load(app, Webhook, hook["webhook_id"])
    assert (row.url, row.events, row.active) == (URL, ["task.created"], True)


def test_it_rotates_the_secret(app: Flask, api: Api, personas: Personas) -> None:
    hook = create(api, personas.client, secret=SECRET)
    path = f"{HOOKS}/{hook['webhook_id']}/rotate-secret"
    generated = api.post(path, personas.client)
    assert generated.status_code == 200
    body = generated.get_json()
    assert body["secret"] != SECRET and body["secret"].startswith("whsec_")
    assert body["secret_hint"] == f"…{body['secret'][-4:]}"
    with app.app_context():
        row = db.session.get(Webhook, hook["webhook_id"])
        assert row is not None
        assert webhook_settings.open(row.secret_sealed) == body["secret"]
        db.session.remove()
    chosen = api.post(path, personas.client, json={"secret": "my-own-secret-9876"}).get_json()
    assert chosen["secret"] == "my-own-secret-9876" and chosen["secret_hint"] == "…9876"


# --- Deliveries -------------------------------------------------------------------------


def test_it_lists_the_delivery_a_task_event_wrote(app: Flask, api: Api, personas: Personas) -> None:
    hook = create(api, personas.client, events=["task.created"])
    task = api.submit(personas.client)
    page = deliveries(api, personas.client, hook["webhook_id"])
    assert page["next_cursor"] is None and page["limit"] == 50
    [delivery] = page["deliveries"]
    assert delivery["event"] == "task.created" and delivery["status"] == "pending"
    assert delivery["attempt"] == 0 and delivery["attempts"] == []
    assert delivery["status_code"] is None and delivery["error"] is None
    assert delivery["redelivery_of"] is None and delivery["next_attempt_at"] is not None

    detail = api.get(f"{DELIVERIES}/{delivery['delivery_id']}", personas.client).get_json()
    sent = json.loads(detail["body"])
    assert sent["event"] == "task.created" and sent["task_id"] == task["task_id"]
    assert sent["event_id"] == detail["event_id"] == delivery["event_id"]
    assert sent["data"]["client_id"] == "client-1"
    shown = api.get(f"{HOOKS}/{hook['webhook_id']}", personas.client).get_json()
    assert shown["deliveries"] == {"pending": 1, "delivered": 0, "failed": 0}

    def ids(**query: Any) -> list[str]:
        page = deliveries(api, personas.client, hook["webhook_id"], **query)
        return [d["delivery_id"] for d in page["deliveries"]]

    assert ids(status="pending", event="task.created") == [delivery["delivery_id"]]
    assert ids(status="delivered") == []
    assert ids(event="task.completed") == []


def test_it_shows_each_attempt_of_a_delivery(app: Flask, api: Api, personas: Personas) -> None:
    with receiver(status=503, body=b"thanks") as failing:
        hook = create(api, personas.client, url=failing.url, events=["task.created"])
        api.submit(personas.client)
        [delivery] = deliveries(api, personas.client, hook["webhook_id"])["deliveries"]
        assert send_now(app, delivery["delivery_id"]) == "retry"
    [request] = failing.requests
    assert request.headers["X-Webhook-Attempt"] == "1"
    assert request.headers["X-Webhook-Id"] == delivery["event_id"]
    [after] = deliveries(api, personas.client, hook["webhook_id"])["deliveries"]
    assert after["status"] == "pending" and after["attempt"] == 1
    assert (after["status_code"], after["error"]) == (503, "HTTP 503")
    assert after["duration_ms"] is not None and after["duration_ms"] >= 0
    [attempt] = after["attempts"]
    assert attempt["attempt"] == 1 and attempt["outcome"] == "retry"
    assert attempt["status_code"] == 503 and attempt["response_excerpt"] == "thanks"
    assert attempt["request_headers"]["X-Webhook-Signature"] == "sha256=…"  # not the real one
    detail = api.get(f"{DELIVERIES}/{delivery['delivery_id']}", personas.client).get_json()
    assert detail["attempts"] == after["attempts"]
    assert detail["body"].encode() == request.body


def test_it_pages_deliveries_newest_first(app: Flask, api: Api, personas: Personas) -> None:
    hook = create(api, personas.client, events=["task.created"])
    for i in range(3):
        with time_machine.travel(T0 + timedelta(seconds=i), tick=False):
            api.submit(personas.client)
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(3):
        query = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
        page = deliveries(api, personas.client, hook["webhook_id"], **query)
        assert len(page["deliveries"]) == 1 and page["limit"] == 1
        seen.extend(page["deliveries"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None and len(seen) == 3
    assert len({d["delivery_id"] for d in seen}) == 3
    times = [d["created_at"] for d in seen]
    assert times == sorted(times, reverse=True) and len(set(times)) == 3
    two = deliveries(api, personas.client, hook["webhook_id"], limit=2)
    assert [d["delivery_id"] for d in two["deliveries"]] == [d["delivery_id"] for d in seen[:2]]
    rest = deliveries(api, personas.client, hook["webhook_id"], cursor=two["next_cursor"])
    assert [d["delivery_id"] for d in rest["deliveries"]] == [seen[2]["delivery_id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"event": "task.exploded"}, "event"),
        ({"page": 2}, "page"),
    ],
)
def test_it_refuses_bad_delivery_queries(
    api: Api, personas: Personas, query: dict[str, Any], field: str
) -> None:
    hook = create(api, personas.client)
    response = api.get(
        f"{HOOKS}/{hook['webhook_id']}/deliveries", personas.client, query_string=query
    )
    assert_error(response, 422, "validation_error", field)


def test_it_reads_a_cursor_without_a_time_zone_as_utc(api: Api, personas: Personas) -> None:
    import base64
    import json

    hook = create(api, personas.client)
    crafted = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", "x"]).encode()).decode()
    response = api.get(
        f"{HOOKS}/{hook['webhook_id']}/deliveries",
        personas.client,
        query_string={"cursor": crafted},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["deliveries"] == []


def test_it_redelivers_as_a_new_delivery_of_the_same_event(
    app: Flask, api: Api, personas: Personas
) -> None:
    hook = create(api, personas.client, events=["task.created"])
    api.submit(personas.client)
    [original] = deliveries(api, personas.client, hook["webhook_id"])["deliveries"]
    response = api.post(f"{DELIVERIES}/{original['delivery_id']}/redeliver", personas.client)
    assert response.status_code == 202
    again = response.get_json()
    assert again["delivery_id"] != original["delivery_id"]
    assert again["redelivery_of"] == original["delivery_id"]
    assert again["event_id"] == original["event_id"] and again["event"] == "task.created"
    assert again["status"] == "pending" and again["attempts"] == []
    listed_ids = [
        d["delivery_id"] for d in deliveries(api, personas.client, hook["webhook_id"])["deliveries"]
    ]
    assert set(listed_ids) == {original["delivery_id"], again["delivery_id"]}
    with app.app_context():
        rows = db.session.scalars(select(WebhookDelivery)).all()
        assert {r.event_id for r in rows} == {original["event_id"]}
        db.session.remove()


def test_it_refuses_to_redeliver_or_ping_through_a_disabled_webhook(
    app: Flask, api: Api, personas: Personas
) -> None:
    hook = create(api, personas.client)
    delivery = ping(api, personas.client, hook["webhook_id"])
    api.patch(f"{HOOKS}/{hook['webhook_id']}", personas.client, json={"active": False})
    redo = api.post(f"{DELIVERIES}/{delivery['delivery_id']}/redeliver", personas.client)
    error = assert_error(redo, 409, "conflict")
    assert "disabled" in error["message"]
    assert_error(api.post(f"{HOOKS}/{hook['webhook_id']}/test", personas.client), 409, "conflict")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
        db.session.remove()


def test_it_sends_a_test_ping(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    hook = create(api, agent, agent_hooks(agent_id), events=["task.completed"])
    delivery = ping(api, agent, hook["webhook_id"])
    assert delivery["event"] == "webhook.ping" and delivery["status"] == "pending"
    assert delivery["webhook_id"] == hook["webhook_id"] and delivery["attempts"] == []
    detail = api.get(f"{DELIVERIES}/{delivery['delivery_id']}", agent).get_json()
    sent = json.loads(detail["body"])
    assert sent["event"] == "webhook.ping" and sent["agent_id"] == agent_id
    assert sent["data"]["webhook_id"] == hook["webhook_id"]
    only_pings = deliveries(api, agent, hook["webhook_id"], event="webhook.ping")["deliveries"]
    assert [d["delivery_id"] for d in only_pings] == [delivery["delivery_id"]]


def test_it_deletes_a_webhook_with_its_deliveries(app: Flask, api: Api, personas: Personas) -> None:
    hook = create(api, personas.client)
    delivery = ping(api, personas.client, hook["webhook_id"])
    assert api.call("DELETE", f"{HOOKS}/{hook['webhook_id']}", personas.client).status_code == 200
    assert_error(api.get(f"{DELIVERIES}/{delivery['delivery_id']}", personas.client), 404)
    assert_error(api.call("DELETE", f"{HOOKS}/{hook['webhook_id']}", personas.client), 404)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        db.session.remove()
