"""/openapi.json, generated from the endpoint registry and its pydantic models, and /docs."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, jsonify, render_template
from pydantic.json_schema import models_json_schema

from app.api import bp
from app.api.endpoint import OPERATIONS, Operation
from app.api.schemas import ErrorOut

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "body is not JSON",
    "401": "missing or invalid API key",
    "403": "the key's role may not do this",
    "404": "unknown, or not yours",
    "409": "state conflict",
    "413": "body too large",
    "422": "invalid fields (named in details)",
    "429": "rate limited: retry after the Retry-After header's seconds",
}
# Never rate limited (app/lib/ratelimit.py): no 429 documented.
UNLIMITED_RULES = frozenset({"/health", "/health/ready"})


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def operation_spec(op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method}_{openapi_path(op.rule)}".replace("/", "_")
        .replace("{", "")
        .replace("}", ""),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", op.rule)
        ],
        "responses": {},
    }
    for header, description in op.headers.items():
        spec["parameters"].append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "description": description,
                "schema": {"type": "string", "maxLength": 200},
            }
        )
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            spec["parameters"].append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
            },
        }
    for status, model in op.responses.items():
        content = (
            {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
            if model
            else None
        )
        spec["responses"][str(status)] = {"description": "OK" if status < 300 else "see body"}
        if content:
            spec["responses"][str(status)]["content"] = content
    error_ref = {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}}
    for status, description in ERRORS.items():
        if status in {"401", "403"} and not op.auth:
            continue
        if status in {"400", "413", "422"} and op.body is None and op.query is None:
            continue
        if status == "429" and op.rule in UNLIMITED_RULES:
            continue
        spec["responses"].setdefault(status, {"description": description, "content": error_ref})
    if op.query is not None:
        # gunicorn refuses a request line over its limit before the app sees it (no JSON).
        spec["responses"].setdefault("414", {"description": "URI too long"})
    if op.auth:
        spec["security"] = [{"bearerAuth": []}]
        if op.roles:
            roles = dict.fromkeys(("admin", *op.roles))  # admin always; once
            spec["description"] = f"Key roles: {', '.join(roles)}."
    return spec


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document for every registered endpoint."""
    models: set[type] = {ErrorOut}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(openapi_path(op.rule), {})[op.method] = operation_spec(op)
        models.update(m for m in (op.body, *op.responses.values()) if m is not None)
    _, schemas = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=REF
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AINS",
            "version": "1.0.0",
            "description": "Dispatches tasks to AI agents. Errors are "
            '{"error": {"code", "message", "details"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an AINS API key"}
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(build_openapi())


@bp.get("/docs")
def docs() -> str:
    return render_template("docs.html")
