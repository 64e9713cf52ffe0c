"""The operator console in a real browser: sign in, watch an API-created task arrive."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser


def populate(http: Http, personas: Personas) -> str:
    """A small working day: agents, tasks in every state. Returns a completed task's id."""
    writer_id, writer = http.register(
        personas.fleet.key, "report-writer", ["report-v1", "summarise-v1"], 4
    )
    ocr_id, ocr = http.register(personas.fleet.key, "ocr-fleet-eu", ["ocr-v2"], 8)
    translator_id, translator = http.register(
        personas.other_fleet.key, "translator", ["translate-v1"], 2
    )
    client, other = personas.client.key, personas.other_client.key
    work = [
        (client, "quarterly-report", "report-v1", 8, {"quarter": "Q1", "region": "EMEA"}),
        (other, "invoice-scan", "ocr-v2", 6, {"document": "inv-2041.pdf", "pages": 3}),
        (client, "meeting-summary", "summarise-v1", 5, {"meeting_id": "m-77", "words": 300}),
        (other, "translate-contract", "translate-v1", 7, {"from": "de", "to": "en"}),
        (client, "weekly-report", "report-v1", 4, {"week": 14}),
        (other, "receipt-scan", "ocr-v2", 3, {"document": "rcpt-19.jpg"}),
    ]
    ids = [
        http.submit(key, task_type=t, capability_required=c, priority=p, input_data=data)
        for key, t, c, p, data in work
    ]
    (done,) = http.claim(writer_id, writer)
    http.post(
        f"/ains/tasks/{done}/progress", writer, {"progress": 60, "message": "tables rendered"}
    )
    http.post(
        f"/ains/tasks/{done}/complete",
        writer,
        {"result_data": {"url": "https://reports.example/q1-emea.pdf", "pages": 12}},
    )
    (failed,) = http.claim(ocr_id, ocr)
    http.post(
        f"/ains/tasks/{failed}/fail",
        ocr,
        {"error_message": "page 2 is unreadable", "retryable": False},
    )
    # Degraded (BUSY) only now: routing gives a busy agent no new work.
    http.post(f"/ains/agents/{ocr_id}/heartbeat", ocr, {"status": "DEGRADED", "uptime_ms": 9000})
    http.claim(translator_id, translator)  # stays ACTIVE
    http.claim(writer_id, writer)
    for key, t, c, p in [(client, "daily-digest", "summarise-v1", 5)] * 3:
        http.submit(key, task_type=t, capability_required=c, priority=p, input_data={})
    assert done in ids
    return done


def test_it_shows_an_api_created_task_in_the_list(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    http = Http(base)

    # Signing in from a protected page comes back to it.
    page.goto(f"{base}/tasks")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Email").fill(operator["email"])
    page.get_by_label("Password").fill(operator["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/tasks")
    expect(page.get_by_text("No tasks yet.")).to_be_visible()

    # A client submits a task through the API; the operator filters and sees it.
    first = http.submit(
        personas.client.key,
        task_type="quarterly-report",
        capability_required="report-v1",
        input_data={"quarter": "Q1", "note": "<script>alert(1)</script>"},
    )
    page.get_by_label("Client").fill("client-1")
    page.get_by_role("button", name="Apply").click()
    row = page.locator(f'tr[data-task-id="{first}"]')
    expect(row).to_be_visible()
    expect(page).to_have_url(f"{base}/tasks?client=client-1")  # pushed by htmx
    expect(page.locator("#task-filters")).to_have_count(1)  # swapped a region, not the page

    # The newest page refreshes itself: another task appears with no click.
    second = http.submit(
        personas.client.key, task_type="weekly-report", capability_required="report-v1"
    )
    expect(page.locator(f'tr[data-task-id="{second}"]')).to_be_visible(timeout=12_000)

    # The row opens the task, with its timeline; the <script> in the input is only text.
    row.get_by_role("link", name="quarterly-report").click()
    expect(page).to_have_url(f"{base}/tasks/{first}")
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.locator(".timeline-item")).to_have_count(1)
    expect(page.locator(".timeline-item")).to_contain_text("Pending")
    expect(page.locator("pre").first).to_contain_text('"note": "<script>alert(1)</script>"')

    # Screenshots of each page for the README, with some work in the system.
    completed = populate(http, personas)
    page.goto(f"{base}/")
    expect(page.locator('[data-stat="completed-hour"]')).to_have_text("1")
    screenshot(page, "dashboard")
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Tasks", exact=True
    ).click()
    expect(page.locator("tr[data-task-id]")).to_have_count(11)
    screenshot(page, "tasks")
    page.goto(f"{base}/tasks/{completed}")
    expect(page.locator(".timeline-item")).to_have_count(4)  # pending, assigned, active, done
    expect(page.locator("tr[data-attempt]")).to_have_count(1)
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Agents", exact=True
    ).click()
    expect(page.locator("tr[data-agent-id]")).to_have_count(3)
    screenshot(page, "agents")

    # Signing out is a POST with the CSRF token, from a real form.
    page.locator(".account-summary").click()
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page).to_have_url(f"{base}/login")
    expect(page.get_by_text("You are signed out.")).to_be_visible()

    assert console_log.errors == []
