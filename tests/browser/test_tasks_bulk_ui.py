"""The tasks list in a real browser: filter, act on every matching task after a
confirmation that counts them, and see them end CANCELLED."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser


def test_it_cancels_every_task_a_filter_matches_after_confirming_the_count(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    http = Http(base)
    exports = [
        http.submit(
            personas.client.key,
            task_type="nightly-export",
            capability_required="export-v1",
            input_data={"table": f"orders_{n}", "region": "eu-west"},
        )
        for n in range(4)
    ]
    kept = [
        http.submit(
            personas.client.key,
            task_type="nightly-export",
            capability_required="export-v1",
            input_data={"table": "orders_us", "region": "us-east"},
        ),
        http.submit(
            personas.other_client.key, task_type="invoice-scan", capability_required="ocr-v2"
        ),
    ]
    sign_in(page, base, operator, "/tasks")
    rows = page.locator("tr[data-task-id]")
    expect(rows).to_have_count(len(exports) + len(kept))

    # Search the input and narrow by type: the address keeps both.
    page.get_by_label("Search input, result, error").fill("eu-west")
    page.get_by_label("Task type").fill("nightly-export")
    expect(page).to_have_url(re.compile(r"q=eu-west"))
    expect(page).to_have_url(re.compile(r"task_type=nightly-export"))
    expect(rows).to_have_count(len(exports))

    # Select-all ticks the page and enables the selection buttons.
    cancel_selected = page.get_by_role("button", name="Cancel selected…")
    expect(cancel_selected).to_be_disabled()
    page.get_by_label("Select every task on this page").check()
    expect(page.locator("[data-selected-count]")).to_have_text(str(len(exports)))
    expect(cancel_selected).to_be_enabled()
    screenshot(page, "tasks-bulk")

    # Every matching task, not just this page: the confirmation counts them first.
    page.get_by_role("link", name="Cancel all matching…").click()
    expect(page).to_have_url(re.compile(r"/tasks/bulk/cancel\?scope=filter"))
    expect(page.locator("[data-stat='confirm-count']")).to_have_text(str(len(exports)))
    expect(page.get_by_role("heading", name=f"Cancel {len(exports)} tasks?")).to_be_visible()
    page.get_by_label("Reason (optional)").fill("region retired")
    page.get_by_role("button", name=f"Cancel {len(exports)} tasks").click()

    expect(page).to_have_url(re.compile(r"/tasks\?q=eu-west"))
    expect(page.get_by_role("status")).to_contain_text(f"Cancelled {len(exports)} tasks.")
    for task_id in exports:
        expect(page.locator(f"tr[data-task-id='{task_id}'] .badge")).to_have_text("Cancelled")

    # The other tasks are untouched.
    page.goto(f"{base}/tasks?status=PENDING")
    expect(rows).to_have_count(len(kept))
    for task_id in kept:
        expect(page.locator(f"tr[data-task-id='{task_id}']")).to_have_count(1)
    page.goto(f"{base}/tasks/{exports[0]}")
    expect(page.locator("h1 .badge")).to_have_text("Cancelled")
    expect(page.locator("body")).to_contain_text("region retired")

    assert console_log.errors == []
