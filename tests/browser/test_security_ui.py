"""Accounts and roles in a real browser under the strict Content-Security-Policy: an admin
adds a viewer on the Users page, the viewer reads but is refused changes, Swagger UI runs
on /docs, and no page logs a CSP violation."""

from __future__ import annotations

import re

import pytest
import requests
from flask import Flask
from playwright.sync_api import Page, expect

from app.extensions import db
from app.services.auth import create_user
from tests.browser.conftest import ConsoleLog
from tests.browser.support import Http, screenshot, sign_in
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def test_an_admin_adds_a_viewer_who_reads_but_cannot_act(
    app: Flask,
    page: Page,
    web_server: WebServer,
    personas: Personas,
    console_log: ConsoleLog,
) -> None:
    base = web_server.url
    with app.app_context():
        create_user("root@example.com", PASSWORD, role="admin")
        db.session.remove()
    http = Http(base)
    task_id = http.submit(personas.client.key, task_type="report", capability_required="x-v1")

    sign_in(page, base, {"email": "root@example.com", "password": PASSWORD}, "/users")
    page.get_by_label("Email").fill("viewer@example.com")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Add user").click()
    secret = page.locator("[data-secret]")
    expect(secret).to_be_visible()
    password = secret.inner_text().strip()
    expect(page.locator('tr[data-user="viewer@example.com"]')).to_have_attribute(
        "data-role", "viewer"
    )
    screenshot(page, "users")
    # The admin pages sit under one nav menu, which closes on Escape.
    page.locator(".nav-menu summary").click()
    expect(page.get_by_role("link", name="API keys")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("link", name="API keys")).to_be_hidden()
    # A client key made in the console is shown once and works at once.
    page.locator(".nav-menu summary").click()
    page.get_by_role("link", name="API keys").click()
    form = page.locator("#api-key-form")
    form.get_by_label("Name").fill("billing service (production)")
    form.get_by_label("Client id").fill("client-1")
    page.get_by_role("button", name="Create key").click()
    shown = page.locator("[data-secret]")
    expect(shown).to_be_visible()
    key = shown.inner_text().strip()
    assert (
        requests.get(
            f"{base}/ains/tasks", headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).json()["tasks"][0]["task_id"]
        == task_id
    )
    screenshot(page, "api-key")

    # The audit log has the sign-in, the new account and the key, newest first.
    page.locator(".nav-menu summary").click()
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit-results")).to_contain_text("api_key.create")
    expect(page.locator("#audit-results")).to_contain_text("user.create")
    assert key not in page.content()
    expect(page.locator("#audit-results")).to_contain_text("user.login")
    assert password not in page.content()
    screenshot(page, "audit")
    page.locator(".account-summary").click()
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login"))

    sign_in(page, base, {"email": "viewer@example.com", "password": password}, f"/tasks/{task_id}")
    expect(page.locator(".account-role")).to_have_text("viewer")
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    # The viewer's own session, with its CSRF token, is still refused the change.
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    refused = page.request.post(f"{base}/tasks/{task_id}/cancel", form={"csrf_token": token or ""})
    assert refused.status == 403 and "needs the operator role" in refused.text()
    expect(page.locator("h1 .badge")).not_to_have_text("Cancelled")
    response = page.request.get(f"{base}/users")
    assert response.status == 403

    page.goto(f"{base}/docs")
    expect(page.locator(".swagger-ui .info")).to_be_visible()
    assert console_log.errors == [], "\n".join(console_log.errors)
