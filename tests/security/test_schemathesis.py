"""Schemathesis against /openapi.json: generated requests on every operation, as admin.

Checks: no 5xx (``not_a_server_error``), every response's status documented, its content
type and body matching the schema. Bounded for CI: a fixed number of examples per
operation, derandomized (the same requests every run), no example database, no
shrinking; the whole run takes well under a minute on either database.

It runs against the live gunicorn server with the admin key, which passes every role
check, so generated bodies reach validation and the services; generated ids mostly find
nothing (404, documented).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import app.api  # noqa: F401  (every route registered)
from app.api.docs import build_openapi
from tests.processes import WebServer
from tests.security.conftest import Http, World

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
READINESS_CHECKS = [check for check in CHECKS if check is not not_a_server_error]

# The document /openapi.json serves, built from the same registry (one test per operation;
# schemathesis's fixture-loaded schemas run as subtests, which this pytest cannot run).
schema = schemathesis.openapi.from_dict(build_openapi())
schema.config.generation.update(
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    database="none",
    no_shrink=True,
    # The admin key is ours to send: generated (and, in negative mode, removed) Authorization
    # headers would turn most cases into 401s that test nothing past the key check.
    with_security_parameters=False,
)


def test_it_fuzzes_the_document_the_server_serves(http: Http) -> None:
    assert http.call("GET", "/openapi.json").json() == build_openapi()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_it_answers_generated_requests_as_documented(
    case: Any, server: WebServer, world: World
) -> None:
    if isinstance(case.body, dict) and "wait_seconds" in case.body:
        case.body["wait_seconds"] = 0  # a long poll would only measure the clock
    # Readiness answers a documented 503 while no worker or clock runs (none does here):
    # that is its answer, not a server error; the other checks still apply.
    checks = READINESS_CHECKS if case.operation.path == "/health/ready" else CHECKS
    response = case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {world.keys.admin.key}"},
        checks=checks,
    )
    # The admin key always authenticates: a 401 would mean the run tested nothing past it.
    assert response.status_code != 401 or case.operation.path == "/health", response.text
