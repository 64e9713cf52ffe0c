"""Templates in a real browser: write a schema, watch the Run now form it makes, run a task."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {
            "type": "string",
            "enum": ["EMEA", "APAC", "AMER"],
            "description": "Which sales region the report covers.",
        },
        "title": {"type": "string", "title": "Report title", "maxLength": 80},
        "top": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "description": "How many products to rank.",
        },
        "include_returns": {"type": "boolean", "description": "Count returned orders too."},
        "customer": {
            "type": "object",
            "properties": {"id": {"type": "string"}},
            "required": ["id"],
            "description": 'Only this customer\'s orders, e.g. {"id": "c-42"}.',
        },
    },
    "required": ["region", "title", "top"],
}


def seed(http: Http, personas: Personas) -> None:
    """A template a client made through the API, and a task made from it."""
    template = http.post(
        "/ains/task-templates",
        personas.other_client.key,
        {
            "name": "inbox-sweep",
            "description": "Summarise the support inbox",
            "task_type": "inbox-sweep",
            "capability_required": "summarise-v1",
            "default_input_data": {"folder": "support"},
        },
    )
    http.post(
        "/ains/tasks/from-template",
        personas.other_client.key,
        {"template_id": template["template_id"]},
    )


def test_it_creates_a_template_and_runs_a_task_from_its_generated_form(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    seed(Http(base), personas)
    sign_in(page, base, operator, "/task-templates")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Templates")).to_have_attribute("aria-current", "page")
    rows = page.locator("tr[data-template-id]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("[data-field='used']")).to_have_text("1")

    page.get_by_role("link", name="New template").click()
    expect(page).to_have_url(f"{base}/task-templates/new")
    preview = page.locator("#template-preview")
    expect(preview).to_contain_text("No schema: Run now offers one JSON box")

    page.get_by_label("Client").fill("client-1")
    page.get_by_label("Name", exact=True).fill("weekly-sales")
    page.get_by_label("Description").fill("Weekly sales figures for one region")
    page.get_by_label("Task type").fill("sales-report")
    page.get_by_label("Capability").fill("report-v1")

    # A schema the meta-schema refuses: the preview says where, by JSON pointer.
    schema_box = page.get_by_label("Input schema (JSON Schema, optional)")
    schema_box.fill('{"type": "object", "properties": {"top": {"type": "integr"}}}')
    expect(preview.get_by_role("alert")).to_contain_text("Input schema /properties/top/type:")

    # Fixed: the preview shows the form Run now will offer, one input per property.
    schema_box.fill(json.dumps(SCHEMA, indent=2))
    page.get_by_label("Default input (JSON object)").fill('{"region": "EMEA", "top": 10}')
    inputs = preview.locator("[data-input]")
    expect(inputs).to_have_count(5)
    expect(preview.locator("[data-input='region'] select")).to_have_value('"EMEA"')
    expect(preview.locator("[data-input='top'] input")).to_have_value("10")
    # The schema beside the form it makes (the preview panel stays in view).
    page.get_by_role("heading", name="Input", exact=True).scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -90)")
    schema_box.blur()
    schema_box.evaluate("box => { box.scrollTop = 0; }")
    screenshot(page, "template-form")

    page.get_by_role("button", name="Create template").click()
    expect(page).to_have_url(re.compile(rf"{base}/task-templates/tmpl_[0-9a-f]+$"))
    expect(page.get_by_role("status")).to_contain_text("Template weekly-sales created (v1).")
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("weekly-sales")
    expect(heading.locator(".version")).to_have_text("v1")

    run = page.locator("#run-form")
    expect(run.locator("[data-input]")).to_have_count(5)
    expect(run.get_by_label("region")).to_have_value('"EMEA"')
    run.get_by_label("region").select_option(label="APAC")
    run.get_by_label("Report title").fill("Week 9 sales")
    run.get_by_label("top").fill("25")
    run.get_by_label("include_returns").check()
    run.get_by_label("customer").fill('{"id": "c-42"}')
    run.get_by_label("Priority (1-10)").fill("8")
    run.get_by_label("Priority (1-10)").blur()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "templates")
    run.get_by_label("top").fill("500")

    # Out of the schema's bounds: nothing is created, the error is under the input.
    run.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("alert").first).to_contain_text("No task was created.")
    top = page.locator("[data-input='top']")
    expect(top.locator(".field-error")).to_have_text("500 is greater than the maximum of 100")
    expect(top.locator("input")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Report title")).to_have_value("Week 9 sales")  # kept

    page.get_by_label("top").fill("25")
    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(rf"{base}/tasks/task_[0-9a-f]+$"))
    expect(page.get_by_role("status")).to_contain_text("Task created from weekly-sales v1")
    expect(page.get_by_role("heading", level=1)).to_contain_text("sales-report")
    expect(page.locator("h1 .badge")).to_have_text("Pending")

    # The template counts the use and lists the task.
    nav.get_by_role("link", name="Templates").click()
    expect(rows).to_have_count(2)
    newest = rows.first
    expect(newest).to_contain_text("weekly-sales")
    expect(newest.locator("[data-field='used']")).to_have_text("1")
    newest.get_by_role("link", name="weekly-sales").click()
    expect(page.locator("[data-stat='times-used']")).to_have_text("1")
    expect(page.locator("tr[data-task-id]")).to_have_count(1)

    # The refused run answered 422 on purpose (a form with errors); Chromium logs any 4xx
    # document as a failed load. Nothing else may have been logged.
    refused = [e for e in console_log.errors if "status of 422" in e and e.endswith("/run)")]
    assert len(refused) == 1, console_log.errors
    unexpected = [e for e in console_log.errors if e not in refused]
    assert unexpected == [], "\n".join(unexpected)
