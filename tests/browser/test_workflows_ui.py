"""Workflows in a real browser: a task's dependency graph, a chain's steps advancing, cancel."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser

CHAINS = "/ains/task-chains"


def diamond(http: Http, personas: Personas) -> dict[str, str]:
    """fetch → (clean, enrich) → publish → notify; fetch done, clean running."""
    client = personas.client.key
    agent_id, agent = http.register(personas.fleet.key, "etl-runner", ["etl-v1"], 4)
    ids = {"fetch": http.submit(client, task_type="fetch-data", capability_required="etl-v1")}
    for name, kind in (("clean", "clean-rows"), ("enrich", "enrich-with-crm")):
        ids[name] = http.submit(
            client, task_type=kind, capability_required="etl-v1", depends_on=[ids["fetch"]]
        )
    ids["publish"] = http.submit(
        client,
        task_type="publish-report",
        capability_required="etl-v1",
        depends_on=[ids["clean"], ids["enrich"]],
    )
    ids["notify"] = http.submit(
        client, task_type="notify-team", capability_required="etl-v1", depends_on=[ids["publish"]]
    )
    assert http.claim(agent_id, agent) == [ids["fetch"]]
    http.post(f"/ains/tasks/{ids['fetch']}/complete", agent, {"result_data": {"rows": 1204}})
    assert http.claim(agent_id, agent) == [ids["clean"]]
    return ids


def chain(http: Http, key: str, name: str, kinds: list[str]) -> dict[str, str]:
    steps = [{"task_type": kind, "capability_required": "etl-v1"} for kind in kinds]
    return http.post(CHAINS, key, {"name": name, "steps": steps})


def test_it_draws_a_diamond_whose_nodes_open_their_tasks(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    ids = diamond(Http(base), personas)
    sign_in(page, base, operator, f"/tasks/{ids['publish']}")

    expect(page.locator("#blocked-state")).to_contain_text("Blocked: waiting for 2 dependencies.")
    graph = page.locator("svg.graph")
    expect(graph).to_be_visible()
    nodes = graph.locator("a.graph-node")
    expect(nodes).to_have_count(5)
    for task_id in ids.values():
        expect(graph.locator(f"a[data-task-id='{task_id}']")).to_be_visible()
    expect(graph.locator("a[aria-current='page']")).to_have_attribute(
        "data-task-id", ids["publish"]
    )
    expect(graph.locator("path.graph-edge")).to_have_count(5)
    expect(graph.locator(f"a[data-task-id='{ids['fetch']}']")).to_have_class(
        re.compile("graph-completed")
    )
    expect(graph.locator(f"a[data-task-id='{ids['clean']}']")).to_have_class(
        re.compile("graph-active")
    )
    # Columns left to right: fetch, then clean and enrich, the task, then notify.
    xs = {
        name: graph.locator(f"a[data-task-id='{task_id}']").bounding_box()["x"]  # type: ignore[index]
        for name, task_id in ids.items()
    }
    assert xs["fetch"] < xs["clean"] == xs["enrich"] < xs["publish"] < xs["notify"]
    blocking = page.locator("[data-list='dependencies'] .marker-blocking")
    expect(blocking).to_have_count(2)
    page.locator("#task-dependencies").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "task-graph")

    # A node is a link: it opens that task, whose own graph shows where it stands.
    graph.locator(f"a[data-task-id='{ids['fetch']}']").click()
    expect(page).to_have_url(f"{base}/tasks/{ids['fetch']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("fetch-data")
    expect(page.locator("svg.graph a[aria-current='page']")).to_have_attribute(
        "data-task-id", ids["fetch"]
    )
    expect(page.locator("[data-list='dependents'] li[data-task-id]")).to_have_count(2)
    page.locator("[data-list='dependents']").get_by_role("link", name="enrich-with-crm").click()
    expect(page).to_have_url(f"{base}/tasks/{ids['enrich']}")

    assert console_log.errors == [], "\n".join(console_log.errors)


def test_it_follows_a_chain_step_by_step_and_cancels_one(
    web_server: WebServer,
    operator: dict[str, str],
    personas: Personas,
    page: Page,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    http = Http(base)
    client, other = personas.client.key, personas.other_client.key
    agent_id, agent = http.register(personas.fleet.key, "etl-runner", ["etl-v1"], 8)

    done = chain(http, other, "Invoice export", ["export-invoices", "upload-sftp"])
    for _ in range(2):
        [task] = http.claim(agent_id, agent)
        http.post(f"/ains/tasks/{task}/complete", agent, {"result_data": {"files": 2}})
    failed = chain(http, client, "CRM sync", ["pull-contacts", "dedupe", "push-contacts"])
    [task] = http.claim(agent_id, agent)
    http.post(f"/ains/tasks/{task}/complete", agent, {"result_data": {"contacts": 880}})
    [task] = http.claim(agent_id, agent)
    http.fail(task, agent, "dedupe service answered 503", retryable=False)
    nightly = chain(http, client, "Nightly warehouse load", ["extract", "transform", "load"])
    [first] = http.claim(agent_id, agent)
    http.post(
        f"/ains/tasks/{first}/complete",
        agent,
        {"result_data": {"rows": 1204, "files": ["orders.csv", "customers.csv"], "bytes": 8812}},
    )
    [second] = http.claim(agent_id, agent)  # transform is running
    spare = chain(http, client, "Weekly digest", ["collect", "summarise"])

    sign_in(page, base, operator, "/chains")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Chains")).to_have_attribute("aria-current", "page")
    rows = page.locator("tr[data-chain-id]")
    expect(rows).to_have_count(4)
    row = page.locator(f"tr[data-chain-id='{nightly['chain_id']}']")
    expect(row.locator(".steps-count")).to_have_text("1/3")
    expect(row.locator(".step-seg")).to_have_count(3)
    expect(page.locator(f"tr[data-chain-id='{done['chain_id']}'] .steps-count")).to_have_text("2/2")
    expect(page.locator(f"tr[data-chain-id='{failed['chain_id']}'] .badge")).to_have_text("Failed")
    screenshot(page, "chains")

    row.get_by_role("link", name="Nightly warehouse load").click()
    expect(page).to_have_url(f"{base}/chains/{nightly['chain_id']}")
    steps = page.locator("li.step")
    expect(steps).to_have_count(3)
    expect(steps.nth(0).locator(".badge")).to_have_text("Completed")
    expect(steps.nth(0).locator("pre")).to_contain_text('"rows": 1204')
    expect(steps.nth(1).locator(".badge")).to_have_text("Active")
    expect(steps.nth(2).locator(".badge")).to_have_text("Not started")
    screenshot(page, "chain-detail")

    # The page follows the chain by itself: the running step completes, the next starts.
    http.post(f"/ains/tasks/{second}/complete", agent, {"result_data": {"rows": 1198}})
    expect(steps.nth(1).locator(".badge")).to_have_text("Completed", timeout=10_000)
    # The next step waits for an agent: routed to the runner at once (Assigned) when its
    # heartbeat is recent, else Pending until it shows up again.
    expect(steps.nth(2).locator(".badge")).to_have_text(re.compile(r"^(Pending|Assigned)$"))
    expect(page.locator("[data-field='progress'] .steps-count")).to_have_text("2/3")
    steps.nth(1).get_by_role("link", name="transform").click()
    expect(page).to_have_url(f"{base}/tasks/{second}")
    expect(page.locator(".chain-membership")).to_contain_text(
        "Step 2 of 3 of chain Nightly warehouse load"
    )
    page.locator(".chain-membership").get_by_role("link").click()
    expect(page).to_have_url(f"{base}/chains/{nightly['chain_id']}")

    # Cancel asks first; the open confirmation is not swept away by the refresh.
    page.goto(f"{base}/chains/{spare['chain_id']}")
    page.get_by_text("Cancel chain…").click()
    page.wait_for_timeout(3500)  # longer than the refresh period
    reason = page.get_by_label("Reason (optional)")
    expect(reason).to_be_visible()
    reason.fill("superseded by the monthly digest")
    page.get_by_role("button", name="Cancel chain", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Chain cancelled")
    expect(page.locator("h1 .badge")).to_have_text("Cancelled")
    expect(page.locator("#chain-state")).to_contain_text("superseded by the monthly digest")
    expect(page.get_by_text("Cancel chain…")).to_have_count(0)

    assert console_log.errors == [], "\n".join(console_log.errors)
