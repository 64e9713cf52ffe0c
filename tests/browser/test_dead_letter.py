"""The dead-letter page in a real browser: tick failed tasks, requeue them, see them go."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser

# (submitter, task type, capability, priority, error, failed attempts before the last)
FAILURES = [
    ("client", "quarterly-report", "report-v1", 8, "warehouse query timed out (HTTP 504)", 1),
    ("other", "invoice-scan", "ocr-v2", 6, "page 2 is unreadable", 0),
    ("client", "weekly-report", "report-v1", 4, "model overloaded (HTTP 529)", 2),
    ("other", "translate-contract", "translate-v1", 7, "unsupported language pair de→tlh", 0),
    ("other", "receipt-scan", "ocr-v2", 3, "image below 150 dpi", 0),
]


def fail_for_good(http: Http, personas: Personas) -> dict[str, str]:
    """Tasks that end FAILED through the API, some after retries; ids by task type."""
    agents = {
        cap: http.register(personas.fleet.key, name, [cap], 4)
        for cap, name in [
            ("report-v1", "report-writer"),
            ("ocr-v2", "ocr-fleet-eu"),
            ("translate-v1", "translator"),
        ]
    }
    keys = {"client": personas.client.key, "other": personas.other_client.key}
    ids = {}
    for who, task_type, cap, priority, error, retries in FAILURES:
        task_id = http.submit(
            keys[who],
            task_type=task_type,
            capability_required=cap,
            priority=priority,
            max_retries=retries,
            input_data={"source": f"{task_type}.json"},
        )
        agent_id, key = agents[cap]
        for attempt in range(retries + 1):
            assert http.claim(agent_id, key) == [task_id]
            # With retries, the last failure finds none left; without, it is not retryable.
            status = http.fail(task_id, key, error, retryable=retries > 0)
            # A retry due at once is routed straight back to the agent (its only one).
            assert status in (("FAILED",) if attempt == retries else ("PENDING", "ASSIGNED"))
        ids[task_type] = task_id
    # Work that is not dead: it must not show up.
    http.submit(keys["client"], task_type="daily-digest", capability_required="summarise-v1")
    return ids


def test_it_requeues_two_ticked_failed_tasks(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    ids = fail_for_good(Http(base), personas)
    sign_in(page, base, operator)

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.locator(".nav-count [data-count]")).to_have_text("5")
    nav.get_by_role("link", name="Dead letter").click()
    expect(page).to_have_url(f"{base}/dead-letter")
    rows = page.locator("tr[data-task-id]")
    expect(rows).to_have_count(len(FAILURES))  # the PENDING digest is not a dead letter

    # Nothing ticked: the bulk buttons wait for a selection; select-all ticks the page.
    requeue = page.get_by_role("button", name="Requeue selected")
    expect(requeue).to_be_disabled()
    select_all = page.get_by_label("Select every task on this page")
    select_all.check()
    expect(page.locator("[data-selected-count]")).to_have_text(str(len(FAILURES)))
    select_all.uncheck()
    expect(page.locator("[data-selected-count]")).to_have_text("0")
    expect(requeue).to_be_disabled()

    chosen = [ids["quarterly-report"], ids["invoice-scan"]]
    for task_id in chosen:
        page.locator(f"tr[data-task-id='{task_id}'] input[name='task_ids']").check()
    expect(page.locator("[data-selected-count]")).to_have_text("2")
    expect(select_all).to_have_js_property("indeterminate", True)
    expect(requeue).to_be_enabled()
    screenshot(page, "dead-letter")

    requeue.click()
    expect(page).to_have_url(f"{base}/dead-letter")
    expect(page.get_by_role("status")).to_contain_text("Requeued 2 tasks.")
    expect(rows).to_have_count(len(FAILURES) - 2)
    for task_id in chosen:
        expect(page.locator(f"tr[data-task-id='{task_id}']")).to_have_count(0)
    expect(nav.locator(".nav-count [data-count]")).to_have_text(str(len(FAILURES) - 2))

    # A requeued task's page keeps its story: two failed attempts, and it waits again.
    page.goto(f"{base}/tasks/{chosen[0]}")
    expect(page.locator("tr[data-attempt]")).to_have_count(2)
    # Pending, or already routed to the agent if its heartbeat is recent enough.
    expect(page.locator("h1 .badge")).to_have_text(re.compile(r"^(Pending|Assigned)$"))
    expect(page.get_by_role("button", name="Cancel task")).to_be_visible()

    # One still in the dead letter: three failed attempts, retries used up, a Requeue button.
    page.goto(f"{base}/tasks/{ids['weekly-report']}")
    expect(page.locator("tr[data-attempt]")).to_have_count(3)
    expect(page.locator("[data-field='retries']")).to_contain_text("2 of 2 retries")
    expect(page.get_by_role("button", name="Requeue")).to_be_visible()
    screenshot(page, "task-detail")

    assert console_log.errors == []
