"""Webhooks in a real browser: an operator adds a webhook pointing at a local receiver, sees
its secret once, sends a test ping that the real RQ worker delivers, and reads the delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from app.extensions import db
from app.models import Webhook, WebhookEvents
from app.services import webhooks
from app.services.principal import operator as operator_principal
from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import Process, WebServer, rq_worker  # noqa: F401  (the fixture)
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.browser


def neighbours(app: Flask, agent_id: str) -> None:
    """Other webhooks for the list: a client's, an agent's, and one its failures disabled."""
    seed = operator_principal("seed@example.com")
    with app.app_context():
        webhooks.create_webhook(
            seed,
            url="https://billing.example.com/ains/events",
            client_id="client-1",
            events=[WebhookEvents.TASK_COMPLETED, WebhookEvents.TASK_FAILED],
            description="Billing: finished tasks",
        )
        webhooks.create_webhook(
            seed,
            url="https://atlas.example.net/work",
            agent_id=agent_id,
            events=[WebhookEvents.TASK_CREATED, WebhookEvents.TASK_ASSIGNED],
        )
        hook, _ = webhooks.create_webhook(
            seed, url="https://legacy.example.org/hook", description="Old pager bridge"
        )
        stored = db.session.get(Webhook, hook.id)
        assert stored is not None
        stored.consecutive_failures = 20
        stored.last_failure_at = stored.created_at
        webhooks.disable(
            stored, "20 deliveries in a row failed; the last: HTTP 503", stored.created_at
        )
        db.session.commit()
        db.session.remove()


def test_it_creates_a_webhook_pings_it_and_shows_the_delivery(
    app: Flask,
    web_server: WebServer,
    rq_worker: Process,  # noqa: F811  (the fixture imported above)
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    agent_id, _ = Http(base).register(personas.fleet.key, "atlas", ["report-v1"], 2)
    neighbours(app, agent_id)

    with receiver(body=b"ok") as got:
        sign_in(page, base, operator, "/webhooks")
        expect(page.locator("tr[data-webhook-id]")).to_have_count(3)

        # The create form: a global webhook for the local receiver, every event.
        form = page.locator("#webhook-form")
        form.get_by_label("URL").fill(got.url)
        form.get_by_label("Description").fill("Ops receiver")
        expect(form.get_by_role("checkbox")).to_have_count(len(WebhookEvents.ALL))
        form.get_by_role("button", name="Create webhook").click()

        # Its page shows the secret once.
        expect(page).to_have_url(re.compile(re.escape(base) + r"/webhooks/wh_\w+$"))
        hook_id = page.url.rsplit("/", 1)[1]
        notice = page.locator("#webhook-secret")
        expect(notice).to_contain_text("It will not be shown again")
        secret = page.locator("[data-secret]").inner_text().strip()
        assert secret.startswith("whsec_")
        expect(page.locator(".callout-success")).to_have_text("Webhook created.")

        # A test ping: htmx swaps in the deliveries, which refresh until it is delivered.
        page.get_by_role("button", name="Send test ping").click()
        expect(page.locator(".delivery-notice")).to_contain_text("Test ping queued")
        delivery = page.locator("li.delivery").first
        expect(delivery).to_have_attribute("data-status", "delivered", timeout=30_000)
        expect(delivery.locator('[data-field="status-code"]')).to_have_text("HTTP 200")
        expect(delivery.locator(".delivery-event")).to_have_text("webhook.ping")
        expect(page.locator('[data-stat="delivered"]')).to_have_text("1")

        # The receiver got the ping, signed with the secret that was shown.
        (ping,) = got.wait_for(1)
        headers = {name.lower(): value for name, value in ping.headers.items()}
        expected = "sha256=" + hmac.new(secret.encode(), ping.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-webhook-signature"], expected)
        assert headers["x-webhook-event"] == WebhookEvents.PING
        body = json.loads(ping.body)
        assert body["event"] == WebhookEvents.PING and body["data"]["webhook_id"] == hook_id
        assert headers["x-webhook-id"] == body["event_id"]

        # Opened, the delivery shows its attempt: what was sent and what came back.
        delivery.locator("summary.delivery-summary").click()
        attempt = delivery.locator(".delivery-attempt").first
        expect(attempt.locator('[data-field="attempt-status"]')).to_have_text("HTTP 200")
        expect(attempt.locator(".badge")).to_have_text("Delivered")
        expect(attempt.locator('[data-field="response-excerpt"]')).to_have_text("ok")
        expect(attempt).to_contain_text('"X-Webhook-Event": "webhook.ping"')
        expect(delivery).to_contain_text('"message": "ping from AINS"')

        # Once means once: a reload no longer has it.
        page.reload()
        expect(page.locator("li.delivery")).to_have_count(1)
        expect(page.locator("#webhook-secret")).to_have_count(0)
        expect(page.get_by_text(secret)).to_have_count(0)
        # The docs show the page with the delivery open, tall enough to see its attempt.
        delivery.locator("summary.delivery-summary").click()
        expect(attempt.locator('[data-field="response-excerpt"]')).to_be_visible()
        page.set_viewport_size({"width": 1280, "height": 1280})
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "webhook-detail")
        page.set_viewport_size({"width": 1280, "height": 800})

        # The list: the new webhook with its delivery, the disabled one saying why.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
        expect(page).to_have_url(f"{base}/webhooks")
        rows = page.locator("tr[data-webhook-id]")
        expect(rows).to_have_count(4)
        mine = page.locator(f'tr[data-webhook-id="{hook_id}"]')
        expect(mine.locator('[data-field="counts"]')).to_contain_text("1 delivered")
        expect(mine.locator('[data-field="description"]')).to_have_text("Ops receiver")
        disabled = page.locator('tr[data-active="false"]')
        expect(disabled.locator('[data-field="disabled-reason"]')).to_have_text(
            "20 deliveries in a row failed; the last: HTTP 503"
        )
        screenshot(page, "webhooks")

        # Filtered by owner, from the agent's page: the form is filled in for that agent.
        page.goto(f"{base}/agents/{agent_id}")
        page.locator("#agent-detail").get_by_role("link", name="Webhooks").click()
        expect(page).to_have_url(f"{base}/webhooks?agent_id={agent_id}")
        expect(rows).to_have_count(1)
        expect(page.locator("#webhook-form").get_by_label("Agent id")).to_have_value(agent_id)

    assert console_log.errors == []
