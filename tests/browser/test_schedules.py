"""Schedules in a real browser: type a cron expression, watch the next runs, create, run now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser

BASE = "/aitp/tasks/schedule"


def seed(http: Http, personas: Personas) -> None:
    """A few schedules made by clients through the API, one of them paused."""
    client, other = personas.client.key, personas.other_client.key
    http.post(
        BASE,
        client,
        {
            "description": "Nightly warehouse sync",
            "task_type": "warehouse-sync",
            "capability_required": "etl-v1",
            "cron_expression": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "misfire_policy": "skip",
        },
    )
    http.post(
        BASE,
        other,
        {
            "description": "Sweep the support inbox",
            "task_type": "inbox-sweep",
            "capability_required": "summarise-v1",
            "interval_seconds": 900,
            "overlap_policy": "skip",
        },
    )
    reminder = http.post(
        BASE,
        other,
        {
            "description": "Quarter close reminder",
            "task_type": "send-reminder",
            "capability_required": "notify-v1",
            "run_at": (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat(),
            "timezone": "America/New_York",
        },
    )
    http.post(f"{BASE}/{reminder['schedule_id']}/pause", other, {})


def test_it_previews_creates_pauses_and_runs_a_schedule(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    seed(Http(base), personas)
    sign_in(page, base, operator, "/schedules")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Schedules")).to_have_attribute("aria-current", "page")
    expect(page.locator("tr[data-schedule-id]")).to_have_count(3)

    page.get_by_role("link", name="New schedule").click()
    expect(page).to_have_url(f"{base}/schedules/new")
    preview = page.locator("#schedule-preview")
    expect(preview).to_contain_text("Type a cron expression to see its next runs.")

    page.get_by_label("Client").fill("client-1")
    page.get_by_label("Description").fill("Weekday sales report")
    cron = page.get_by_label("Cron expression")

    # A mistake shows up in the preview as it is typed, naming the field and the reason.
    cron.press_sequentially("0 9 * * 9", delay=30)
    expect(preview.get_by_role("alert")).to_contain_text("day-of-week field '9'")
    expect(preview.locator("li.run")).to_have_count(0)

    # Fixed: the next ten runs, in the zone, update as the expression and the zone change.
    cron.press("Backspace")
    cron.press_sequentially("1-5", delay=30)
    expect(preview).to_contain_text("At 09:00 on Mon-Fri · UTC")
    runs = preview.locator("li.run")
    expect(runs).to_have_count(10)
    expect(runs.first).to_contain_text(re.compile(r"(Mon|Tue|Wed|Thu|Fri) \S+ 09:00 UTC"))

    page.get_by_label("Time zone", exact=True).fill("America/New_York")
    expect(preview).to_contain_text("At 09:00 on Mon-Fri · America/New_York")
    expect(runs.first).to_contain_text(re.compile(r"09:00 E[SD]T"))
    expect(runs.first.locator(".run-utc")).to_contain_text(re.compile(r"1[34]:00 UTC"))

    # Another kind shows its own input and preview; coming back recomputes the cron's.
    page.locator("label.segment", has_text="Interval").click()
    expect(cron).to_be_hidden()
    page.get_by_label("Every (seconds)").fill("3600")
    expect(preview).to_contain_text("Every 3600 s")
    page.locator("label.segment", has_text="Cron").click()
    expect(cron).to_be_visible()
    expect(preview).to_contain_text("At 09:00 on Mon-Fri")
    expect(runs).to_have_count(10)

    page.get_by_label("Task type").fill("sales-report")
    page.get_by_label("Capability").fill("report-v1")
    page.get_by_label("Input data (JSON object)").fill('{"region": "EMEA", "format": "pdf"}')
    page.get_by_label("Priority (1-10)").fill("7")
    page.get_by_label("Priority (1-10)").blur()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "schedule-form")

    page.get_by_role("button", name="Create schedule").click()
    expect(page).to_have_url(re.compile(rf"{base}/schedules/sched_[0-9a-f]+$"))
    expect(page.get_by_role("status")).to_contain_text("Schedule created.")
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("Weekday sales report")
    expect(heading.locator(".badge")).to_have_text("Active")
    expect(page.locator("[data-field='timing']")).to_contain_text("At 09:00 on Mon-Fri")

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Paused")
    expect(heading.locator(".badge")).to_have_text("Paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Resumed: next run")
    expect(heading.locator(".badge")).to_have_text("Active")

    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("status")).to_contain_text("Run started")
    execution = page.locator("tr[data-execution-id]")
    expect(execution).to_have_count(1)
    expect(execution).to_contain_text("Run now")
    expect(execution.locator(".badge")).to_have_text("Pending")
    execution.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"{base}/tasks/task_[0-9a-f]+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("sales-report")
    expect(page.locator("h1 .badge")).to_have_text("Pending")

    nav.get_by_role("link", name="Schedules").click()
    expect(page.locator("tr[data-schedule-id]")).to_have_count(4)
    newest = page.locator("tr[data-schedule-id]").first
    expect(newest).to_contain_text("Weekday sales report")
    expect(newest.locator("td[data-label='Runs']")).to_have_text("1")
    screenshot(page, "schedules")

    assert console_log.errors == [], "\n".join(console_log.errors)
