"""Trust and routing in a real browser: the agents list, an agent's page and its trust
adjustment form, the leaderboard, and the routing playground."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer, start_web

pytestmark = pytest.mark.browser


def finish(http: Http, agent: tuple[str, str], task_ids: list[str], *, ok: bool) -> None:
    """The agent claims the tasks (routed to it) and completes or fails each."""
    agent_id, key = agent
    assert sorted(http.claim(agent_id, key, max_tasks=len(task_ids))) == sorted(task_ids)
    for task_id in task_ids:
        if ok:
            http.post(f"/ains/tasks/{task_id}/complete", key, {"result_data": {"pages": 3}})
        else:
            assert http.fail(task_id, key, "model overloaded", retryable=False) == "FAILED"


@pytest.fixture
def calm_server(app: Flask) -> Iterator[WebServer]:
    """The web server, with agents counted fresh for 30 s after a heartbeat (the shared
    fixture's 3 s would let routing pass them over on a busy machine mid-test)."""
    server = start_web(app, HEARTBEAT_INTERVAL_SECONDS="10")
    yield server
    server.process.stop()


def populate(http: Http, personas: Personas) -> dict[str, tuple[str, str]]:
    """Four report-v1 agents with different records: one good, one failing, one new, one
    offline. Each also has a capability of its own, so the work lands where it should."""
    fleet, client = personas.fleet.key, personas.client.key
    agents = {
        "atlas": http.register(fleet, "atlas", ["report-v1", "summarise-v1"], 4),
        "borealis": http.register(fleet, "borealis", ["report-v1", "ocr-v2"], 2),
        "cirrus": http.register(fleet, "cirrus", ["report-v1"], 2),
        "dormant": http.register(personas.other_fleet.key, "dormant", ["report-v1"], 1),
    }
    summaries = [
        http.submit(client, task_type="meeting-summary", capability_required="summarise-v1")
        for _ in range(4)
    ]
    finish(http, agents["atlas"], summaries, ok=True)
    scans = [
        http.submit(client, task_type="invoice-scan", capability_required="ocr-v2", max_retries=0)
        for _ in range(2)
    ]
    finish(http, agents["borealis"], scans, ok=False)
    dormant_id, dormant_key = agents["dormant"]
    http.post(f"/ains/agents/{dormant_id}/heartbeat", dormant_key, {"status": "OFFLINE"})
    return agents


def test_it_shows_trust_adjusts_it_and_previews_routing(
    calm_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = calm_server.url
    agents = populate(Http(base), personas)
    atlas_id = agents["atlas"][0]
    sign_in(page, base, operator, "/agents")

    # The agents list: trust level, a sparkline of its history, success rate, average time.
    expect(page.locator("tr[data-agent-id]")).to_have_count(4)
    atlas = page.locator(f'tr[data-agent-id="{atlas_id}"]')
    expect(atlas.locator('[data-field="trust-score"]')).to_have_text("0.58")
    expect(atlas.locator(".badge-trust")).to_have_text("Medium")
    expect(atlas.locator("svg.sparkline")).to_be_visible()
    expect(atlas.locator("svg.sparkline title")).to_have_text(
        "Trust 0.50 → 0.58 over the last 4 changes"
    )
    expect(atlas.locator('[data-field="success-rate"]')).to_contain_text("100 %")
    borealis = page.locator(f'tr[data-agent-id="{agents["borealis"][0]}"]')
    expect(borealis.locator(".badge-trust")).to_have_text("Low")
    expect(borealis.locator('[data-field="success-rate"]')).to_contain_text("0 %")

    # The name opens the agent's page: its trust, history and tasks.
    atlas.get_by_role("link", name="atlas").click()
    expect(page).to_have_url(f"{base}/agents/{atlas_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("atlas")
    summary = page.locator("#trust-summary")
    expect(summary.locator(".trust-big")).to_have_text("0.58")
    expect(summary.locator("svg.sparkline-lg")).to_be_visible()
    records = page.locator("#trust-records tbody tr[data-record-id]")
    expect(records).to_have_count(4)
    expect(records.first).to_contain_text("Task completed")
    expect(records.first).to_contain_text("+0.02")
    expect(page.locator("#agent-tasks tr[data-task-id]")).to_have_count(4)

    # A bad change is refused at the field, and nothing changes.
    form = page.locator("#trust-form")
    form.get_by_label("Change (-1 to 1)").fill("5")
    form.get_by_label("Reason").fill("Verified its reports by hand")
    form.get_by_role("button", name="Adjust trust").click()
    expect(page.locator("#delta-error")).to_have_text("must be from -1 to 1, got 5")
    expect(page.get_by_role("alert")).to_contain_text("Trust was not changed.")
    expect(records).to_have_count(4)
    expect(form.get_by_label("Reason")).to_have_value("Verified its reports by hand")

    # A good one is applied and recorded, with the operator as its author.
    form.get_by_label("Change (-1 to 1)").fill("0.35")
    form.get_by_role("button", name="Adjust trust").click()
    expect(page).to_have_url(f"{base}/agents/{atlas_id}")
    expect(page.get_by_role("status")).to_have_text(
        "Trust changed 0.58 → 0.93 (+0.35), now excellent."
    )
    expect(summary.locator(".trust-big")).to_have_text("0.93")
    expect(summary.locator(".badge-trust")).to_have_text("Excellent")
    expect(records).to_have_count(5)
    expect(records.first).to_contain_text("Manual adjustment")
    expect(records.first).to_contain_text("Verified its reports by hand")
    expect(records.first).to_contain_text(operator["email"])
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "agent-detail")

    # The leaderboard puts it first.
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Leaderboard").click()
    expect(page).to_have_url(f"{base}/agents/leaderboard")
    expect(page.locator("tr[data-rank]").first).to_have_attribute("data-agent-id", atlas_id)
    expect(page.locator("tr[data-rank]").first).to_contain_text("Excellent")

    # The playground: choosing a capability shows the winner, the scores and who is out.
    nav.get_by_role("link", name="Routing").click()
    expect(page).to_have_url(f"{base}/routing")
    result = page.locator("#routing-result")
    expect(result).to_contain_text("Choose a capability")
    page.get_by_label("Capability", exact=True).select_option("report-v1")
    expect(page).to_have_url(re.compile(r"/routing\?capability=report-v1$"))
    expect(result.locator("#routing-winner")).to_contain_text("Would go to")
    expect(result.locator('[data-field="strategy"]')).to_have_text("round robin")
    candidates = result.locator("#routing-candidates tbody tr")
    expect(candidates).to_have_count(3)
    excluded = result.locator("#routing-excluded tbody tr")
    expect(excluded).to_have_count(1)
    expect(excluded.first).to_contain_text("dormant")
    expect(excluded.first).to_contain_text("status INACTIVE")

    # Another strategy: trust_weighted gives each its share, atlas the largest.
    page.get_by_label("Strategy", exact=True).select_option("trust_weighted")
    expect(page).to_have_url(re.compile(r"strategy=trust_weighted"))
    expect(result.locator('[data-field="strategy"]')).to_have_text("trust weighted")
    expect(result).to_contain_text("A weighted random draw")
    atlas_row = result.locator(f'#routing-candidates tr[data-agent-id="{atlas_id}"]')
    # 0.93 of 0.93 + 0.50 + 0.40 (dormant is out).
    expect(atlas_row).to_contain_text("trust 0.93: 51% chance")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "routing")

    # The capability's default strategy, changed from the table.
    row = page.locator('tr[data-capability="report-v1"]')
    row.get_by_label("Default strategy for report-v1").select_option("least_loaded")
    row.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Tasks of report-v1 now route with least_loaded"
    )
    expect(result.locator('[data-field="strategy"]')).to_have_text("least loaded")
    expect(result).to_contain_text("the capability's default")

    # The refused adjustment answered 422 on purpose (a form with errors); Chromium logs
    # any 4xx document as a console error. Nothing else may be there.
    refused = [e for e in console_log.errors if "status of 422" in e and e.endswith("/trust)")]
    assert len(refused) == 1, console_log.errors
    assert [e for e in console_log.errors if e not in refused] == []
