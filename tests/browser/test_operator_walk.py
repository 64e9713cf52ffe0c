"""An operator's walk through the whole console in a real browser: every page, the live parts
(dashboard, a running task's progress, the cron preview), trust as admin and as viewer, the
theme switch, a phone-width window, and a screenshot of each page for the README."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from app.extensions import db
from app.models import WebhookEvents
from app.services import webhooks
from app.services.auth import create_user
from app.services.principal import operator as operator_principal
from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer, start_web

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
ADMIN = {"email": "admin@example.com", "password": PASSWORD}
VIEWER = {"email": "viewer@example.com", "password": PASSWORD}

# WCAG AA contrast of the text on each page: the colour of every visible element matched
# against the background it sits on (the first opaque one up the tree, with translucent
# layers blended over it).
CONTRAST = """
(selectors) => {
  const parse = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (m) {
      const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    const c = value.match(/color\\(srgb ([^)]+)\\)/);
    if (c) {
      const p = c[1].split(/[ /]+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    return [0, 0, 0, 0];
  };
  const over = (top, below) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) layers.push(bg);
      if (bg[3] >= 1) break;
    }
    let colour = [255, 255, 255, 1];
    if (layers.length && layers[layers.length - 1][3] >= 1) colour = layers.pop();
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const low = [];
  let checked = 0;
  for (const el of document.querySelectorAll(selectors)) {
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || !el.textContent.trim()) continue;
    const bg = background(el);
    const fg = over(parse(getComputedStyle(el).color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    checked += 1;
    const what = `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}"`;
    if (ratio < 4.5) low.push(`${what}: ${ratio.toFixed(2)}`);
  }
  return {checked, low};
}
"""
TEXT = (
    "h1, h2, p, dt, dd, td, th, a, .muted, .badge, .stat-label, .stat-value, .stat-sub, "
    ".legend, .chart-scale span, .prio, .chip, .bar-count, label, .nav a, .live-pill"
)


OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def assert_contrast(page: Page) -> None:
    result: dict[str, Any] = page.evaluate(CONTRAST, TEXT)
    assert result["checked"] > 20, result
    assert result["low"] == [], "\n".join(result["low"])


def focus_ring(page: Page, element: str) -> bool:
    """Whether ``element`` (a JavaScript expression) shows an outline."""
    style = page.evaluate(
        f"(() => {{ const s = getComputedStyle({element}); "
        "return [s.outlineStyle, s.outlineWidth]; })()"
    )
    return style[0] != "none" and style[1] != "0px"


def background(page: Page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


@pytest.fixture
def calm_server(app: Flask) -> Iterator[WebServer]:
    """The web server, with agents counted online for 30 s after a heartbeat (the shared
    fixture's 3 s would have them drop off the dashboard on a busy machine mid-walk)."""
    server = start_web(app, HEARTBEAT_INTERVAL_SECONDS="10")
    yield server
    server.process.stop()


def populate(app: Flask, http: Http, personas: Personas) -> dict[str, str]:
    """A working day: agents, tasks in every state, a dependency graph, a chain, a
    schedule, a webhook, a failure in the dead letter. Returns ids the walk opens."""
    with app.app_context():
        create_user(ADMIN["email"], PASSWORD, role="admin")
        create_user(VIEWER["email"], PASSWORD, role="viewer")
        webhooks.create_webhook(
            operator_principal("seed@example.com"),
            url="https://billing.example.com/ains/events",
            client_id="client-1",
            events=[WebhookEvents.TASK_COMPLETED, WebhookEvents.TASK_FAILED],
            description="Billing: finished tasks",
        )
        db.session.remove()
    fleet, client, other = personas.fleet.key, personas.client.key, personas.other_client.key
    writer_id, writer = http.register(fleet, "report-writer", ["report-v1"], 2)
    ocr_id, ocr = http.register(fleet, "ocr-fleet-eu", ["ocr-v2"], 4)
    etl_id, etl = http.register(personas.other_fleet.key, "etl-runner", ["etl-v1"], 4)

    done = http.submit(
        client,
        task_type="quarterly-report",
        capability_required="report-v1",
        priority=8,
        input_data={"quarter": "Q1", "regions": ["EMEA", "APAC"], "format": "pdf"},
    )
    assert http.claim(writer_id, writer) == [done]
    http.post(f"/ains/tasks/{done}/progress", writer, {"progress": 60, "message": "tables"})
    http.post(
        f"/ains/tasks/{done}/complete",
        writer,
        {"result_data": {"url": "https://reports.example/q1.pdf", "pages": 12}},
    )
    scan = http.submit(other, task_type="invoice-scan", capability_required="ocr-v2", max_retries=0)
    assert http.claim(ocr_id, ocr) == [scan]
    assert http.fail(scan, ocr, "page 2 is unreadable", retryable=False) == "FAILED"

    running = http.submit(
        client,
        task_type="meeting-summary",
        capability_required="report-v1",
        priority=6,
        input_data={"meeting_id": "m-77", "words": 300},
    )
    assert http.claim(writer_id, writer) == [running]
    http.post(f"/ains/tasks/{running}/progress", writer, {"progress": 20, "message": "reading"})

    fetch = http.submit(client, task_type="fetch-data", capability_required="etl-v1")
    publish = http.submit(
        client, task_type="publish-report", capability_required="etl-v1", depends_on=[fetch]
    )
    for priority in (9, 5, 5, 2):
        http.submit(
            other, task_type="translate", capability_required="translate-v1", priority=priority
        )
    steps = [{"task_type": k, "capability_required": "etl-v1"} for k in ("extract", "load")]
    chain = http.post("/ains/task-chains", client, {"name": "Nightly load", "steps": steps})
    http.post(
        "/aitp/tasks/schedule",
        client,
        {
            "description": "Sweep the support inbox",
            "task_type": "inbox-sweep",
            "capability_required": "summarise-v1",
            "interval_seconds": 900,
        },
    )
    return {
        "done": done,
        "failed": scan,
        "running": running,
        "writer": writer_id,
        "writer_key": writer,
        "publish": publish,
        "chain": chain["chain_id"],
        "etl": etl_id,
        "etl_key": etl,
    }


def visit(page: Page, base: str, path: str, name: str, console_log: ConsoleLog) -> None:
    """Open a page, check it logged nothing and reads well, and screenshot it."""
    page.goto(base + path)
    expect(page.locator("main h1").first).to_be_visible()
    assert_contrast(page)
    assert page.evaluate(OVERFLOW) <= 0, f"{path} scrolls sideways"
    screenshot(page, name)
    assert console_log.errors == [], f"{path}:\n" + "\n".join(console_log.errors)


def test_an_operator_walks_the_whole_console(
    app: Flask,
    calm_server: WebServer,
    personas: Personas,
    browser: Browser,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = calm_server.url
    http = Http(base)
    ids = populate(app, http, personas)
    nav = page.get_by_role("navigation", name="Main")

    # The sign-in page, then the dashboard it leads to.
    page.goto(f"{base}/login")
    screenshot(page, "login")
    sign_in(page, base, ADMIN, "/")

    # Dashboard: counts, both charts, the queue, what is due, what failed.
    expect(page.locator('[data-stat="completed-hour"]')).to_have_text("1")
    expect(page.locator('[data-stat="failed-day-total"]')).to_have_text("1")
    expect(page.locator('[data-stat="failure-rate-day-total"]')).to_have_text("50.0 %")
    expect(page.locator('[data-stat="agents-online"]')).to_have_text(re.compile(r"^\s*3 / 3\s*$"))
    expect(page.locator("svg.chart g")).to_have_count(12 + 24)
    expect(page.locator("#schedules-due li")).to_have_count(1)
    expect(page.locator("#schedules-due")).to_contain_text("Sweep the support inbox")
    failure = page.locator(f'#recent-failures li[data-task-id="{ids["failed"]}"]')
    expect(failure).to_contain_text("page 2 is unreadable")
    queue = page.locator("section[aria-labelledby=queue-title] .prio")
    expect(queue).to_have_text(["P9", "P5", "P2"])
    # It refreshes in place: a task finished through the API shows up without a reload.
    page.evaluate("window.walkMarker = 'same page'")
    http.post(f"/ains/tasks/{ids['running']}/progress", ids["writer_key"], {"progress": 30})
    submitted = http.submit(
        personas.client.key, task_type="late-report", capability_required="x-v1"
    )
    expect(page.locator(f'a[href="/tasks/{submitted}"]')).to_be_visible(timeout=15_000)
    assert page.evaluate("window.walkMarker") == "same page"
    assert_contrast(page)
    # The header fits on one line, the account menu inside the window.
    assert page.locator(".topbar").bounding_box()["height"] < 70  # type: ignore[index]
    assert page.evaluate(OVERFLOW) <= 0
    screenshot(page, "dashboard")
    assert console_log.errors == [], console_log.errors

    # Tasks.
    nav.get_by_role("link", name="Tasks", exact=True).click()
    expect(page.locator("tr[data-task-id]").first).to_be_visible()
    assert_contrast(page)
    screenshot(page, "tasks")

    # A running task: its progress moves while the page stays open, with no navigation.
    page.goto(f"{base}/tasks/{ids['running']}")
    progress = page.locator(".progress-cell")
    expect(progress).to_contain_text("30 %")
    detail_requests: list[str] = []
    page.on(
        "request",
        lambda r: detail_requests.append(r.url) if r.url.endswith(ids["running"]) else None,
    )
    page.evaluate("window.walkMarker = 'same page'")
    http.post(
        f"/ains/tasks/{ids['running']}/progress",
        ids["writer_key"],
        {"progress": 70, "message": "writing the summary"},
    )
    expect(progress).to_contain_text("70 % · writing the summary", timeout=15_000)
    expect(progress.locator("progress")).to_have_attribute("value", "70")
    assert page.evaluate("window.walkMarker") == "same page"
    # Input pretty-printed, an attempt, the timeline with the routing decision.
    # (text_content, not to_contain_text, which folds the whitespace a check of indents needs)
    shown = page.get_by_label("Input data").text_content() or ""
    assert '\n  "meeting_id": "m-77"' in shown and '\n  "words": 300' in shown, shown
    expect(page.locator("tr[data-attempt]")).to_have_count(1)
    expect(page.locator(".timeline-item")).to_have_count(3)
    expect(page.locator(".routing-decision")).to_have_count(1)
    assert_contrast(page)
    screenshot(page, "task-detail")
    # It completes: the page says so, shows the result, and stops polling.
    http.post(
        f"/ains/tasks/{ids['running']}/complete",
        ids["writer_key"],
        {"result_data": {"summary": "Ship it", "actions": ["a", "b"]}},
    )
    expect(page.locator("h1 .badge")).to_have_text("Completed", timeout=15_000)
    expect(page.get_by_label("Result data")).to_contain_text('"summary": "Ship it"')
    shown = page.get_by_label("Result data").text_content() or ""
    assert '\n  "actions": [\n    "a",\n    "b"\n  ]' in shown, shown
    expect(page.locator("#task-detail")).not_to_have_attribute("hx-trigger", re.compile("."))
    expect(page.locator(".live-pill")).to_have_count(0)
    asked = len(detail_requests)
    page.wait_for_timeout(7_000)  # longer than the 5 s poll
    assert len(detail_requests) == asked, detail_requests
    assert page.evaluate("window.walkMarker") == "same page"

    # A task that waits for another: its dependency graph.
    page.goto(f"{base}/tasks/{ids['publish']}")
    expect(page.locator("#task-dependencies svg.graph")).to_be_visible()
    expect(page.locator("#blocked-state")).to_contain_text("waiting for 1 dependency")

    # Schedules: the preview follows the expression as it is typed.
    visit(page, base, "/schedules", "schedules", console_log)
    page.get_by_role("link", name="New schedule").click()
    preview = page.locator("#schedule-preview")
    page.get_by_label("Client").fill("client-1")
    page.get_by_label("Description").fill("Weekday sales report")
    cron = page.get_by_label("Cron expression")
    cron.press_sequentially("0 9 * * *", delay=30)
    expect(preview.locator("li.run")).to_have_count(10)
    expect(preview).to_contain_text("At 09:00")
    expect(preview).not_to_contain_text("Mon-Fri")
    cron.press("Backspace")
    cron.press_sequentially("1-5", delay=30)
    expect(preview).to_contain_text("At 09:00 on Mon-Fri · UTC")
    expect(preview.locator("li.run").first).to_contain_text(re.compile(r"(Mon|Tue|Wed|Thu|Fri)"))
    page.get_by_label("Task type").fill("sales-report")
    page.get_by_label("Capability").fill("report-v1")
    page.get_by_label("Capability").blur()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "schedule-form")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("status")).to_contain_text("Schedule created.")
    assert console_log.errors == [], console_log.errors

    # Templates: create one, run it.
    visit(page, base, "/task-templates", "templates-list", console_log)
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Client").fill("client-1")
    page.get_by_label("Name", exact=True).fill("weekly-sales")
    page.get_by_label("Task type").fill("sales-report")
    page.get_by_label("Capability").fill("report-v1")
    page.get_by_label("Input schema (JSON Schema, optional)").fill(
        '{"type": "object", "properties": {"region": {"type": "string", '
        '"enum": ["EMEA", "APAC"]}}, "required": ["region"]}'
    )
    expect(page.locator("#template-preview [data-input]")).to_have_count(1)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "template-form")
    page.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("status")).to_contain_text("Template weekly-sales created (v1).")
    run = page.locator("#run-form")
    run.get_by_label("region").select_option(label="APAC")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "templates")
    run.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(rf"{base}/tasks/task_[0-9a-f]+$"))
    expect(page.get_by_label("Input data")).to_contain_text('"region": "APAC"')
    assert console_log.errors == [], console_log.errors

    # Chains, webhooks, the dead letter.
    visit(page, base, "/chains", "chains", console_log)
    visit(page, base, f"/chains/{ids['chain']}", "chain-detail", console_log)
    visit(page, base, "/webhooks", "webhooks", console_log)
    page.locator("tr[data-webhook-id] a").first.click()
    expect(page.locator("#webhook-page")).to_be_visible()
    screenshot(page, "webhook-detail")
    visit(page, base, "/dead-letter", "dead-letter", console_log)
    expect(page.locator(f'tr[data-task-id="{ids["failed"]}"]')).to_be_visible()

    # Agents, an agent's trust adjusted by the admin, the leaderboard, routing.
    visit(page, base, "/agents", "agents", console_log)
    expect(page.locator("tr[data-agent-id]")).to_have_count(3)
    page.goto(f"{base}/agents/{ids['writer']}")
    form = page.locator("#trust-form")
    form.get_by_label("Change (-1 to 1)").fill("0.2")
    form.get_by_label("Reason").fill("Checked its reports by hand")
    form.get_by_role("button", name="Adjust trust").click()
    expect(page.get_by_role("status")).to_contain_text("Trust changed")
    page.evaluate("window.scrollTo(0, 0)")
    assert_contrast(page)
    screenshot(page, "agent-detail")
    visit(page, base, "/agents/leaderboard", "leaderboard", console_log)
    visit(page, base, "/routing?capability=report-v1", "routing", console_log)

    # The admin pages.
    visit(page, base, "/users", "users", console_log)
    visit(page, base, "/api-keys", "api-keys", console_log)
    visit(page, base, "/audit", "audit", console_log)
    expect(page.locator("#audit-results")).to_contain_text("user.login")

    # A viewer, in a window of their own: no trust form, and a forged POST is refused.
    viewer_context = browser.new_context(viewport={"width": 1280, "height": 800})
    viewer = viewer_context.new_page()
    viewer_log = ConsoleLog()
    viewer.on("console", viewer_log.on_console)
    viewer.on("pageerror", viewer_log.on_page_error)
    sign_in(viewer, base, VIEWER, f"/agents/{ids['writer']}")
    expect(viewer.locator(".account-role")).to_have_text("viewer")
    expect(viewer.locator("#trust-summary")).to_be_visible()
    expect(viewer.locator("#trust-form")).to_have_count(0)
    token = viewer.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    forged = viewer.request.post(
        f"{base}/agents/{ids['writer']}/trust",
        form={"csrf_token": token, "delta": "1", "reason": "forged"},
    )
    assert forged.status == 403, forged.text()
    records = viewer.locator("#trust-records tbody tr[data-record-id]")
    viewer.reload()
    expect(records.first).to_contain_text("Checked its reports by hand")
    expect(viewer.locator("#trust-records")).not_to_contain_text("forged")
    assert viewer_log.errors == [], viewer_log.errors
    viewer_context.close()

    # The theme: dark and light by choice, over whatever the system prefers.
    page.emulate_media(color_scheme="light")
    page.goto(f"{base}/")
    light = background(page)
    switch = page.locator(".theme-switch")
    # By keyboard: Tab to the account menu, open it, Tab to the theme, arrows to choose;
    # each stop shows a focus ring.
    page.locator(".brand").focus()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('account-summary')"):
            break
    else:
        raise AssertionError("the account menu is not reachable by Tab")
    assert focus_ring(page, "document.activeElement")
    page.keyboard.press("Enter")
    expect(switch).to_be_visible()
    page.keyboard.press("Tab")
    expect(switch.get_by_label("System")).to_be_focused()
    expect(switch.get_by_label("System")).to_be_checked()
    assert focus_ring(page, "document.activeElement.closest('label')")
    page.keyboard.press("ArrowRight")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.keyboard.press("ArrowRight")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(switch.get_by_label("Dark")).to_be_checked()
    dark = background(page)
    assert dark != light, (dark, light)
    page.keyboard.press("Escape")
    expect(switch).to_be_hidden()
    # Kept across pages, and applied before the page paints (set by the <head> script).
    page.goto(f"{base}/tasks", wait_until="commit")
    page.wait_for_selector("body")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.goto(f"{base}/")
    assert background(page) == dark
    expect(switch.get_by_label("Dark")).to_be_checked()
    assert_contrast(page)
    screenshot(page, "dashboard-dark")
    page.goto(f"{base}/tasks/{ids['done']}")
    assert_contrast(page)
    screenshot(page, "task-detail-dark")
    # Light by a click, although the system prefers dark.
    page.emulate_media(color_scheme="dark")
    page.locator(".account-summary").click()
    switch.get_by_text("Light").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert background(page) == light
    page.keyboard.press("Escape")
    assert_contrast(page)
    # System again: no attribute, nothing stored, and the system's dark applies.
    page.locator(".account-summary").click()
    switch.get_by_text("System").click()
    expect(page.locator("html")).not_to_have_attribute("data-theme", re.compile("."))
    assert page.evaluate("localStorage.getItem('ains-theme')") is None
    assert background(page) == dark
    assert console_log.errors == [], console_log.errors


def test_the_dashboard_and_tasks_fit_a_phone(
    app: Flask,
    calm_server: WebServer,
    personas: Personas,
    browser: Browser,
    console_log: ConsoleLog,
) -> None:
    base = calm_server.url
    ids = populate(app, Http(base), personas)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    page = context.new_page()
    page.on("console", console_log.on_console)
    page.on("pageerror", console_log.on_page_error)
    sign_in(page, base, ADMIN, "/")
    overflow = OVERFLOW
    # What sticks out past the right edge, to say which element made the page scroll.
    wider = """() => {
      const edge = document.documentElement.clientWidth + 0.5;
      return Array.from(document.querySelectorAll("body *"))
        .filter((el) => el.getBoundingClientRect().right > edge)
        .map((el) => `${el.tagName}.${el.className}`).slice(0, 12);
    }"""
    for path, name in (("/", "dashboard-phone"), ("/tasks", "tasks-phone")):
        page.goto(base + path)
        expect(page.locator("main h1").first).to_be_visible()
        assert page.evaluate(overflow) <= 0, (path, page.evaluate(wider))
        screenshot(page, name)
    page.goto(f"{base}/tasks/{ids['running']}")
    assert page.evaluate(overflow) <= 0, page.evaluate(wider)
    # The theme switch works on a phone too.
    page.locator(".account-summary").click()
    page.locator(".theme-switch").get_by_text("Dark").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate(overflow) <= 0
    context.close()
    assert console_log.errors == [], console_log.errors
