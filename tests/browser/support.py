"""Helpers of the browser tests: the real HTTP API, signing in, screenshots for the docs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Page, expect

from tests.conftest import ROOT

SCREENSHOTS = ROOT / "docs" / "screenshots"


class Http:
    """The real HTTP API of the server under test."""

    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            self.base + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def register(self, key: str, name: str, capabilities: list[str], slots: int) -> tuple[str, str]:
        body = self.post(
            "/ains/agents",
            key,
            {
                "display_name": name,
                "public_key": uuid.uuid4().hex,
                "capabilities": [{"name": c, "version": "1.0"} for c in capabilities],
                "max_concurrent_tasks": slots,
            },
        )
        return body["agent_id"], body["api_key"]

    def submit(self, key: str, **fields: Any) -> str:
        return self.post("/ains/tasks", key, fields)["task_id"]

    def claim(self, agent_id: str, key: str, max_tasks: int = 1) -> list[str]:
        body = self.post(f"/ains/agents/{agent_id}/tasks/claim", key, {"max_tasks": max_tasks})
        return [t["task_id"] for t in body["tasks"]]

    def fail(self, task_id: str, key: str, error: str, *, retryable: bool) -> str:
        """Report a failure (a retryable one is due again at once); the new status."""
        body: dict[str, Any] = {"error_message": error, "retryable": retryable}
        if retryable:
            body["retry_after_seconds"] = 0
        return self.post(f"/ains/tasks/{task_id}/fail", key, body)["status"]


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(SCREENSHOTS / f"{name}.png")))


def sign_in(page: Page, base: str, operator: dict[str, str], path: str = "/") -> None:
    """Open ``path``, sign in on the login page it leads to, and land back on it."""
    page.goto(base + path)
    page.get_by_label("Email").fill(operator["email"])
    page.get_by_label("Password").fill(operator["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base + path)
