"""Webhook pages: the list with its filters and create form, one webhook with its edit form,
its buttons, and its deliveries with their attempts."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from app.extensions import db
from app.models import DeliveryStatus, Webhook, WebhookDelivery, WebhookEvents
from app.services import webhooks
from app.services.principal import operator as operator_principal
from app.ui.webhooks import DELIVERY_PAGE_SIZE
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, form_token, text
from tests.webhook_receiver import receiver

ROW = re.compile(r'<tr data-webhook-id="([^"]+)"')
DELIVERY = re.compile(r'<li class="delivery [^"]*" id="delivery-([^"]+)"')
SECRET = re.compile(r"<code class=\"secret-value\" data-secret>([^<]+)</code>")
URL = "https://hooks.example.com/ains"
SEED = operator_principal("seed@example.com")


def make_webhook(app: Flask, **fields: Any) -> tuple[str, str]:
    """A webhook made through the service, as a seeding operator: its id and secret."""
    with app.app_context():
        hook, secret = webhooks.create_webhook(SEED, **{"url": URL, **fields})
        hook_id = hook.id
        db.session.remove()
    return hook_id, secret


def stored(app: Flask, hook_id: str) -> Webhook | None:
    with app.app_context():
        hook = db.session.get(Webhook, hook_id)
        if hook is not None:
            db.session.expunge(hook)
        db.session.remove()
        return hook


def all_webhooks(app: Flask) -> list[Webhook]:
    with app.app_context():
        hooks = list(db.session.scalars(db.select(Webhook)))
        for hook in hooks:
            db.session.expunge(hook)
        db.session.remove()
        return hooks


def deliveries_of(app: Flask, hook_id: str) -> list[WebhookDelivery]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                db.select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == hook_id)
                .order_by(WebhookDelivery.created_at)
            )
        )
        for row in rows:
            db.session.expunge(row)
        db.session.remove()
        return rows


def deliver(app: Flask, delivery_id: str) -> str | None:
    with app.app_context():
        outcome = webhooks.deliver(delivery_id)
        db.session.remove()
        return outcome


def secret_of(app: Flask, hook_id: str) -> str:
    hook = stored(app, hook_id)
    assert hook is not None
    return webhooks.webhook_settings.open(hook.secret_sealed)


def field_error(page: str, field_id: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field_id}-error">([^<]*)</p>', page)
    assert match, f"no error under {field_id}"
    return html.unescape(match.group(1))


def create_form(console: FlaskClient, query: str = "", **fields: Any) -> Any:
    """Post the create form of /webhooks, as the browser sends it."""
    token = form_token(console, "/webhooks")
    data: dict[str, Any] = {
        "csrf_token": token,
        "url": URL,
        "events": list(WebhookEvents.ALL),
        "description": "",
        "secret": "",
        "owner": "global",
        "client_id": "",
        "agent_id": "",
        **fields,
    }
    return console.post(f"/webhooks{query}", data=data)


def edit_form(console: FlaskClient, hook_id: str, **fields: Any) -> Any:
    hook_page = text(console.get(f"/webhooks/{hook_id}"))
    token = form_token(console, f"/webhooks/{hook_id}")
    was_active = re.search(r'name="was_active" type="hidden" value="([01])"', hook_page)
    assert was_active
    data: dict[str, Any] = {
        "csrf_token": token,
        "was_active": was_active.group(1),
        "url": URL,
        "events": list(WebhookEvents.ALL),
        "description": "",
        "active": "y",
        **fields,
    }
    return console.post(f"/webhooks/{hook_id}/edit", data={k: v for k, v in data.items() if v})


def post(console: FlaskClient, path: str, **kwargs: Any) -> Any:
    token = form_token(console, "/webhooks")
    return console.post(path, data={"csrf_token": token}, **kwargs)


# ---------------------------------------------------------------------------------------
# The list
# ---------------------------------------------------------------------------------------


def test_it_lists_every_webhook_with_owner_state_failures_and_counts(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name="atlas")
    global_id, _ = make_webhook(app, description="Ops alerts")
    client_id, _ = make_webhook(app, client_id="client-1", events=[WebhookEvents.TASK_FAILED])
    agent_hook, _ = make_webhook(app, agent_id=agent_id)
    broken, _ = make_webhook(app, url="https://down.example.com/hook")
    with app.app_context():
        hook = db.session.get(Webhook, broken)
        assert hook is not None
        hook.consecutive_failures = 20
        webhooks.disable(hook, "20 deliveries in a row failed; the last: HTTP 503", hook.created_at)
        db.session.commit()
        webhooks.ping(SEED, global_id)
        db.session.remove()

    response = console.get("/webhooks")
    page = text(response)
    assert response.status_code == 200
    assert sorted(ROW.findall(page)) == sorted([global_id, client_id, agent_hook, broken])
    assert '<a href="/webhooks" aria-current="page">Webhooks' in page
    assert "Ops alerts" in page
    assert "all 9 events" in page
    assert '<li class="chip">task.failed</li>' in page
    assert 'client <a class="mono" href="/webhooks?client_id=client-1"' in page
    assert f'href="/agents/{agent_id}" title="{agent_id}">atlas</a>' in page
    # The disabled one says why, next to its state.
    row = page[page.index(f'data-webhook-id="{broken}"') :]
    row = row[: row.index("</tr>")]
    assert "Disabled" in row and "20 deliveries in a row failed; the last: HTTP 503" in row
    assert '<span class="failed-count">20</span>' in row
    ping_row = page[page.index(f'data-webhook-id="{global_id}"') :]
    assert "1 pending" in ping_row[: ping_row.index("</tr>")]


def test_it_filters_by_owner(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name="atlas")
    global_id, _ = make_webhook(app)
    client_one, _ = make_webhook(app, client_id="client-1")
    make_webhook(app, client_id="client-2")
    agent_hook, _ = make_webhook(app, agent_id=agent_id)

    def rows(query: str) -> list[str]:
        response = console.get(f"/webhooks?{query}")
        assert response.status_code == 200
        return ROW.findall(text(response))

    assert rows("owner=global") == [global_id]
    assert rows("client_id=client-1") == [client_one]
    assert len(rows("owner=client")) == 2
    assert rows(f"agent_id={agent_id}") == [agent_hook]
    assert rows("agent_id=agent_nobody") == []
    # Filters combine: a global webhook is nobody's client's.
    assert rows("owner=global&client_id=client-1") == []
    assert rows("owner=client&client_id=client-1") == [client_one]
    bad = console.get("/webhooks?owner=nobody")
    assert bad.status_code == 422 and "These filters cannot be applied" in text(bad)

    # htmx asks for the list alone.
    fragment = console.get("/webhooks?owner=global", headers=HTMX)
    assert fragment.status_code == 200
    assert text(fragment).lstrip().startswith('<section id="webhook-results"')
    assert "HX-Request" in fragment.headers["Vary"]
    assert ROW.findall(text(fragment)) == [global_id]


def test_it_links_an_agent_to_its_webhooks_and_fills_in_the_owner(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name="atlas")
    agent_page = text(console.get(f"/agents/{agent_id}"))
    assert f'href="/webhooks?agent_id={agent_id}"' in agent_page

    page = text(console.get(f"/webhooks?agent_id={agent_id}"))
    assert '<input checked id="new-owner-2" name="owner" type="radio" value="agent">' in page
    agent_input = re.search(r'<input[^>]* id="new-agent-id"[^>]*>', page)
    assert agent_input and f'value="{agent_id}"' in agent_input.group(0), page

    response = create_form(console, f"?agent_id={agent_id}", owner="agent", agent_id=agent_id)
    assert response.status_code == 303
    (hook,) = all_webhooks(app)
    assert (hook.agent_id, hook.client_id) == (agent_id, None)


# ---------------------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------------------


def test_it_creates_a_webhook_and_shows_its_secret_once(app: Flask, console: FlaskClient) -> None:
    response = create_form(
        console,
        url="https://hooks.example.com/ops",
        events=[WebhookEvents.TASK_FAILED, WebhookEvents.AGENT_OFFLINE],
        description="Ops alerts",
    )
    assert response.status_code == 303
    (hook,) = all_webhooks(app)
    assert response.headers["Location"] == f"/webhooks/{hook.id}"
    assert hook.url == "https://hooks.example.com/ops"
    assert hook.events == [WebhookEvents.TASK_FAILED, WebhookEvents.AGENT_OFFLINE]
    assert (hook.description, hook.agent_id, hook.client_id) == ("Ops alerts", None, None)
    assert hook.created_by == "admin:operator@example.com"
    # The secret is not in the session cookie in the clear.
    cookie = console.get_cookie("session")
    secret = secret_of(app, hook.id)
    assert cookie is not None and secret not in cookie.value

    first = console.get(f"/webhooks/{hook.id}")
    page = text(first)
    assert first.status_code == 200
    assert "Webhook created." in page
    assert SECRET.findall(page) == [secret]
    assert secret.startswith("whsec_") and secret.endswith(hook.secret_hint)
    assert "It will not be shown again" in page
    assert first.headers["Cache-Control"] == "no-store"

    again = console.get(f"/webhooks/{hook.id}")
    assert secret not in text(again) and "data-secret" not in text(again)
    assert f"…{hook.secret_hint}" in text(again)


def test_it_keeps_a_secret_the_operator_gives_and_a_client_owner(
    app: Flask, console: FlaskClient
) -> None:
    response = create_form(
        console, secret="my-receiver-secret", owner="client", client_id="client-7"
    )
    assert response.status_code == 303
    (hook,) = all_webhooks(app)
    assert (hook.client_id, hook.agent_id) == ("client-7", None)
    assert secret_of(app, hook.id) == "my-receiver-secret"
    assert SECRET.findall(text(console.get(f"/webhooks/{hook.id}"))) == ["my-receiver-secret"]


def test_it_shows_a_bad_url_under_its_field_and_creates_nothing(
    app: Flask, console: FlaskClient
) -> None:
    response = create_form(
        console, url="ftp://files.example.com/drop", description="Kept", owner="agent"
    )
    page = text(response)
    assert response.status_code == 422
    assert "The webhook was not created." in page
    # Every error at once: the service's verdict on the URL, and the form's own.
    assert field_error(page, "url") == "only http and https URLs are allowed, not 'ftp'"
    assert field_error(page, "new-agent-id") == "type the agent id (or choose another owner)"
    # What was typed stays in the form.
    assert 'value="ftp://files.example.com/drop"' in page and 'value="Kept"' in page
    assert all_webhooks(app) == []


@pytest.mark.parametrize(
    ("fields", "field_id", "message"),
    [
        ({"url": ""}, "url", "type the URL that receives the events"),
        ({"events": []}, "events", "tick at least one event"),
        ({"events": ["task.exploded"]}, "events", "'task.exploded' is not an event webhooks"),
        (
            {"secret": "short"},
            "secret",
            f"must be {webhooks.MIN_SECRET_LENGTH} to {webhooks.MAX_SECRET_LENGTH} characters",
        ),
        ({"owner": "client"}, "new-client-id", "type the client id (or choose another owner)"),
        ({"owner": "agent"}, "new-agent-id", "type the agent id (or choose another owner)"),
        ({"owner": "agent", "agent_id": "agent_nobody"}, "new-agent-id", "agent 'agent_nobody'"),
    ],
)
def test_it_shows_other_bad_input_inline(
    app: Flask, console: FlaskClient, fields: dict[str, Any], field_id: str, message: str
) -> None:
    response = create_form(console, **fields)
    assert response.status_code == 422
    assert field_error(text(response), field_id).startswith(message)
    assert all_webhooks(app) == []


def test_it_refuses_a_form_without_its_csrf_token(app: Flask, console: FlaskClient) -> None:
    response = console.post("/webhooks", data={"url": URL, "events": ["task.failed"]})
    assert response.status_code == 400
    assert all_webhooks(app) == []


# ---------------------------------------------------------------------------------------
# One webhook: edit, disable, enable, rotate, delete
# ---------------------------------------------------------------------------------------


def test_it_edits_a_webhook(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app, description="Old")
    response = edit_form(
        console,
        hook_id,
        url="https://new.example.com/in",
        events=[WebhookEvents.TASK_COMPLETED],
        description="New name",
    )
    assert response.status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None
    assert (hook.url, hook.events, hook.description, hook.active) == (
        "https://new.example.com/in",
        [WebhookEvents.TASK_COMPLETED],
        "New name",
        True,
    )
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert "Webhook saved." in page and "https://new.example.com/in" in page


def test_it_shows_a_bad_url_in_the_edit_form_inline_and_changes_nothing(
    app: Flask, console: FlaskClient
) -> None:
    hook_id, _ = make_webhook(app, description="Old")
    response = edit_form(console, hook_id, url="javascript:alert(1)", description="New")
    page = text(response)
    assert response.status_code == 422
    assert "The webhook was not saved." in page
    assert field_error(page, "url") == "only http and https URLs are allowed, not 'javascript'"
    hook = stored(app, hook_id)
    assert hook is not None and (hook.url, hook.description) == (URL, "Old")


def test_an_edit_leaves_a_stored_url_alone_unless_it_changes(
    app: Flask, console: FlaskClient
) -> None:
    """A URL refused today (a rule changed since it was stored) does not block other edits."""
    hook_id, _ = make_webhook(app)
    with app.app_context():
        hook = db.session.get(Webhook, hook_id)
        assert hook is not None
        hook.url = "gopher://legacy.example.com/hook"
        db.session.commit()
        db.session.remove()
    response = edit_form(console, hook_id, url="gopher://legacy.example.com/hook", active="")
    assert response.status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None and not hook.active
    assert hook.url == "gopher://legacy.example.com/hook"


def test_it_disables_with_the_form_and_enables_with_the_button(
    app: Flask, console: FlaskClient
) -> None:
    hook_id, _ = make_webhook(app)
    assert edit_form(console, hook_id, active="").status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None and not hook.active
    assert hook.disabled_reason == "paused by admin:operator@example.com"
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert 'id="disabled-state"' in page and "paused by admin:operator@example.com" in page
    assert "Nothing is sent while it is disabled" in page

    response = post(console, f"/webhooks/{hook_id}/enable")
    assert response.status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None and hook.active
    assert (hook.disabled_reason, hook.disabled_at, hook.consecutive_failures) == (None, None, 0)
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert "Enabled: events are sent again" in page and 'id="disabled-state"' not in page

    assert post(console, f"/webhooks/{hook_id}/disable").status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None and not hook.active


def test_it_enables_from_the_form_clearing_the_reason(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app)
    with app.app_context():
        hook = db.session.get(Webhook, hook_id)
        assert hook is not None
        hook.consecutive_failures = 20
        webhooks.disable(hook, "the receiver answered 410 Gone: it asked to stop", hook.created_at)
        db.session.commit()
        db.session.remove()
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert "the receiver answered 410 Gone: it asked to stop" in page
    assert re.search(r"<button type=\"submit\" class=\"button button-primary\" disabled", page)

    assert edit_form(console, hook_id, active="y").status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None and hook.active and hook.disabled_reason is None
    assert hook.consecutive_failures == 0


def test_saving_a_stale_form_does_not_re_enable_a_webhook_disabled_meanwhile(
    app: Flask, console: FlaskClient
) -> None:
    hook_id, _ = make_webhook(app)
    token = form_token(console, f"/webhooks/{hook_id}")  # the form shows it active
    with app.app_context():
        webhooks.update_webhook(SEED, hook_id, {"active": False})
        db.session.remove()
    response = console.post(
        f"/webhooks/{hook_id}/edit",
        data={
            "csrf_token": token,
            "was_active": "1",
            "active": "y",
            "url": URL,
            "events": list(WebhookEvents.ALL),
            "description": "Renamed",
        },
    )
    assert response.status_code == 303
    hook = stored(app, hook_id)
    assert hook is not None and hook.description == "Renamed" and not hook.active


def test_it_rotates_the_secret_and_shows_the_new_one_once(app: Flask, console: FlaskClient) -> None:
    hook_id, old = make_webhook(app)
    response = post(console, f"/webhooks/{hook_id}/rotate-secret")
    assert response.status_code == 303
    new = secret_of(app, hook_id)
    assert new != old
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert SECRET.findall(page) == [new]
    assert "The new signing secret" in page and "the old one no longer signs" in page
    assert new not in text(console.get(f"/webhooks/{hook_id}"))


def test_it_deletes_a_webhook_with_its_deliveries(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app)
    keep_id, _ = make_webhook(app)
    with app.app_context():
        webhooks.ping(SEED, hook_id)
        db.session.remove()
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert "Delete this webhook?" in page
    response = post(console, f"/webhooks/{hook_id}/delete")
    assert response.status_code == 303 and response.headers["Location"] == "/webhooks"
    assert stored(app, hook_id) is None and deliveries_of(app, hook_id) == []
    assert stored(app, keep_id) is not None
    page = text(console.get("/webhooks"))
    assert "Webhook deleted" in page and ROW.findall(page) == [keep_id]
    assert console.get(f"/webhooks/{hook_id}").status_code == 404


def test_an_unknown_webhook_is_not_found(console: FlaskClient) -> None:
    assert console.get("/webhooks/wh_nothing").status_code == 404
    assert post(console, "/webhooks/wh_nothing/ping").status_code == 404


# ---------------------------------------------------------------------------------------
# Deliveries: ping, redeliver, attempts
# ---------------------------------------------------------------------------------------


def test_a_ping_creates_a_delivery_shown_on_the_page(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app)
    response = post(console, f"/webhooks/{hook_id}/ping")
    assert response.status_code == 303
    (delivery,) = deliveries_of(app, hook_id)
    assert (delivery.event, delivery.status) == (WebhookEvents.PING, DeliveryStatus.PENDING)

    page = text(console.get(f"/webhooks/{hook_id}"))
    assert f"Test ping queued as delivery {delivery.id}" in page
    assert DELIVERY.findall(page) == [delivery.id]
    assert "webhook.ping" in page and "not sent yet" in page
    # The event body that is sent, pretty-printed.
    assert "&#34;message&#34;: &#34;ping from AINS&#34;" in page
    assert "&#34;sent_by&#34;: &#34;admin:operator@example.com&#34;" in page
    # While it is on its way, the region asks again soon.
    assert 'hx-trigger="every 2s"' in page


def test_a_ping_from_htmx_gets_the_deliveries_back(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app)
    page = text(console.get(f"/webhooks/{hook_id}?status=failed"))
    assert 'hx-post="/webhooks/' in page
    response = post(console, f"/webhooks/{hook_id}/ping", headers=HTMX)
    body = text(response)
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="webhook-deliveries"')
    (delivery,) = deliveries_of(app, hook_id)
    assert DELIVERY.findall(body) == [delivery.id]
    assert f"Test ping queued as delivery {delivery.id}" in body
    assert response.headers["HX-Replace-Url"] == f"/webhooks/{hook_id}"
    # The notice went into the fragment, not into the session for a later page.
    assert "Test ping queued" not in text(console.get(f"/webhooks/{hook_id}"))


def test_a_disabled_webhook_is_not_pinged(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app)
    with app.app_context():
        webhooks.update_webhook(SEED, hook_id, {"active": False})
        db.session.remove()
    response = post(console, f"/webhooks/{hook_id}/ping", headers=HTMX)
    assert response.status_code == 200
    assert "Ping not sent: webhook" in text(response) and "enable it first" in text(response)
    assert deliveries_of(app, hook_id) == []
    response = post(console, f"/webhooks/{hook_id}/ping", follow_redirects=True)
    assert "Ping not sent" in text(response)


def test_redeliver_creates_a_new_delivery_of_the_same_event(
    app: Flask, console: FlaskClient
) -> None:
    hook_id, _ = make_webhook(app)
    with receiver() as got:
        with app.app_context():
            hook = db.session.get(Webhook, hook_id)
            assert hook is not None
            hook.url = got.url
            db.session.commit()
            first = webhooks.ping(SEED, hook_id).id
            db.session.remove()
        assert deliver(app, first) == "delivered"

        response = post(console, f"/webhooks/{hook_id}/deliveries/{first}/redeliver")
        assert response.status_code == 303
        original, again = deliveries_of(app, hook_id)
        assert original.id == first and again.redelivery_of == first
        assert again.event_id == original.event_id and again.status == DeliveryStatus.PENDING
        assert deliver(app, again.id) == "delivered"
        one, two = got.wait_for(2)
        assert one.headers["X-Webhook-Id"] == two.headers["X-Webhook-Id"] == original.event_id
        assert one.body == two.body

    page = text(console.get(f"/webhooks/{hook_id}"))
    assert "Redelivery queued as delivery" in page
    assert DELIVERY.findall(page) == [again.id, first]
    assert f'<a class="mono" href="#delivery-{first}">{first}</a>' in page

    # From htmx, the fragment comes back with the new delivery on top.
    response = post(console, f"/webhooks/{hook_id}/deliveries/{first}/redeliver", headers=HTMX)
    assert response.status_code == 200
    assert len(DELIVERY.findall(text(response))) == 3
    # A delivery is redelivered from its own webhook's page only.
    other_id, _ = make_webhook(app)
    assert post(console, f"/webhooks/{other_id}/deliveries/{first}/redeliver").status_code == 404


def test_a_failed_attempt_shows_its_status_error_headers_and_response(
    app: Flask, console: FlaskClient
) -> None:
    hostile = b'upstream <script>alert("x")</script> exploded'
    with receiver(status=500, body=hostile) as got:
        hook_id, _ = make_webhook(app, url=got.url)
        post(console, f"/webhooks/{hook_id}/ping")
        (delivery,) = deliveries_of(app, hook_id)
        assert deliver(app, delivery.id) == "retry"
        got.wait_for(1)

    response = console.get(f"/webhooks/{hook_id}")
    page = text(response)
    assert response.status_code == 200
    item = page[page.index(f'id="delivery-{delivery.id}"') :]
    assert "HTTP 500" in item
    assert '<span class="delivery-error" data-field="error">HTTP 500</span>' in item
    assert "<strong>#1</strong>" in item and "badge-retry" in item
    assert '<span data-field="attempt-status">HTTP 500</span>' in item
    assert '<p class="attempt-error" data-field="attempt-error">HTTP 500</p>' in item
    # What was sent (the signature elided) and what came back, escaped.
    assert "&#34;X-Webhook-Event&#34;: &#34;webhook.ping&#34;" in item
    assert "&#34;X-Webhook-Signature&#34;: &#34;sha256=…&#34;" in item
    assert str(escape(hostile.decode())) in item
    assert "<script>alert" not in page
    assert "attempt 1 of 3" in item

    # Filtered by status: it is pending (a retry is due), not failed.
    assert DELIVERY.findall(text(console.get(f"/webhooks/{hook_id}?status=pending"))) == [
        delivery.id
    ]
    assert DELIVERY.findall(text(console.get(f"/webhooks/{hook_id}?status=failed"))) == []


def test_a_permanent_failure_is_failed_and_filtered_by_status(
    app: Flask, console: FlaskClient
) -> None:
    with receiver(status=400, body=b"bad signature") as got:
        hook_id, _ = make_webhook(app, url=got.url)
        with app.app_context():
            failed = webhooks.ping(SEED, hook_id).id
            pending = webhooks.ping(SEED, hook_id).id
            db.session.remove()
        assert deliver(app, failed) == "permanent"

    page = text(console.get(f"/webhooks/{hook_id}?status=failed"))
    assert DELIVERY.findall(page) == [failed]
    assert 'data-status="failed"' in page and "badge-permanent" in page
    assert "bad signature" in page
    assert DELIVERY.findall(text(console.get(f"/webhooks/{hook_id}?status=pending"))) == [pending]
    bad = console.get(f"/webhooks/{hook_id}?status=lost")
    assert bad.status_code == 422 and "These deliveries cannot be shown" in text(bad)
    counts = text(console.get("/webhooks"))
    assert "1 failed" in counts and "1 pending" in counts


def test_deliveries_are_paged_newest_first(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(app)
    with app.app_context():
        made = [webhooks.ping(SEED, hook_id).id for _ in range(DELIVERY_PAGE_SIZE + 3)]
        db.session.remove()
    first = text(console.get(f"/webhooks/{hook_id}"))
    shown = DELIVERY.findall(first)
    assert len(shown) == DELIVERY_PAGE_SIZE
    older = re.search(r'<a class="button" rel="next" href="([^"]+)"', first)
    assert older
    second = console.get(html.unescape(older.group(1)))
    assert second.status_code == 200
    rest = DELIVERY.findall(text(second))
    assert len(rest) == 3 and set(shown + rest) == set(made)
    # An older page does not refresh itself; the newest one does.
    assert "every 2s" not in text(second) and "every 2s" in first
    # A fragment for htmx; a full page for the pushed URL.
    fragment = console.get(html.unescape(older.group(1)), headers=HTMX)
    assert text(fragment).lstrip().startswith('<section id="webhook-deliveries"')
    broken = console.get(f"/webhooks/{hook_id}?cursor=nonsense")
    assert broken.status_code == 422 and "this paging link is not valid" in text(broken)


def test_hostile_urls_and_descriptions_are_escaped(app: Flask, console: FlaskClient) -> None:
    hook_id, _ = make_webhook(
        app,
        url='https://evil.example.com/?q=<script>alert("url")</script>',
        description="<script>alert('description')</script><img src=x onerror=alert(1)>",
    )
    with app.app_context():
        webhooks.ping(SEED, hook_id)
        db.session.remove()
    for path in ("/webhooks", f"/webhooks/{hook_id}"):
        page = text(console.get(path))
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(&#39;description&#39;)&lt;/script&gt;" in page
        assert "&lt;script&gt;alert(&#34;url&#34;)&lt;/script&gt;" in page


def test_the_event_body_of_a_task_event_is_shown(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    hook_id, _ = make_webhook(app, events=[WebhookEvents.TASK_CREATED])
    task = api.submit(personas.client, input_data={"note": "<b>bold</b>"})
    (delivery,) = deliveries_of(app, hook_id)
    assert delivery.event == WebhookEvents.TASK_CREATED
    page = text(console.get(f"/webhooks/{hook_id}"))
    assert f"&#34;task_id&#34;: &#34;{task['task_id']}&#34;" in page
    with app.app_context():
        body = json.loads(webhooks.event_body(delivery.event_id) or "{}")
    assert body["event"] == "task.created"
