"""/health names the dependency that is down and answers 503."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.processes import free_port


def test_it_reports_503_naming_redis_when_redis_is_down(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("down: ")
