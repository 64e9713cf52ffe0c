"""GET /health: both dependencies checked, no key needed."""

from __future__ import annotations

from app.api.schemas import HealthOut
from tests.conftest import Api, Personas


def test_it_reports_ok_with_both_checks(api: Api) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    HealthOut.model_validate(body)
    assert body == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_it_ignores_credentials(api: Api, personas: Personas) -> None:
    assert api.get("/health", personas.client).status_code == 200
    assert api.get("/health", headers={"Authorization": "Bearer garbage"}).status_code == 200
