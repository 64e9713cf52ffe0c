"""The ``endpoint`` decorator: auth, body and query parsing, and the OpenAPI registry."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from app.api.errors import BadRequestBody
from app.services.auth import authenticate_key
from app.services.errors import InvalidInput, NotFound
from app.services.principal import Principal


@dataclass
class Operation:
    """What /openapi.json says about one route."""

    rule: str
    method: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, type[BaseModel] | None]
    auth: bool
    roles: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)


OPERATIONS: list[Operation] = []


def bearer_principal() -> Principal:
    """Authenticate the request's ``Authorization: Bearer`` key."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    raw = token.strip() if scheme.lower() == "bearer" else None
    return authenticate_key(raw)


def refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), and PostgreSQL's JSONB refuses them."""
    raise ValueError(f"{name} is not valid JSON")


def parse_finite(text: str) -> float:
    """Numbers too large for a float (1e999) would be stored as Infinity: refuse them."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def unstorable(text: str) -> bool:
    """NUL or an unpaired surrogate: PostgreSQL stores neither in text nor in JSONB."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_unstorable(document: Any) -> str | None:
    """The path of the first unstorable key or string in a parsed JSON document."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and unstorable(value):
            return path or "body"
        if isinstance(value, dict):
            for key, item in value.items():
                if unstorable(key):
                    return path or "body"
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None


# Deeper documents are refused: merged with others (a dependency's result spliced into a
# task's input, a template's defaults) they could pass what the JSON encoder can nest.
MAX_JSON_DEPTH = 64


def depth_of(document: Any) -> int:
    """How deeply objects and arrays nest in a parsed JSON document (a scalar is 0)."""
    deepest = 0
    stack: list[tuple[int, Any]] = [(0, document)]
    while stack:
        depth, value = stack.pop()
        if isinstance(value, dict):
            values: Any = value.values()
        elif isinstance(value, list):
            values = value
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((depth + 1, item) for item in values)
    return deepest


class TooDeep(ValueError):
    """A JSON document that parses but nests deeper than MAX_JSON_DEPTH."""


def strict_loads(raw: str | bytes) -> Any:
    """JSON as the API accepts it, for request bodies and the console's input box alike.

    ValueError when it is not JSON (RFC 8259: NaN, Infinity and numbers beyond a float, such
    as 1e999, are refused) or too deep for the parser; TooDeep, a ValueError too, when it
    parses but nests deeper than MAX_JSON_DEPTH.
    """
    try:
        data = json.loads(raw, parse_constant=refuse_constant, parse_float=parse_finite)
    except RecursionError:
        raise ValueError(f"nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    if depth_of(data) > MAX_JSON_DEPTH:
        raise TooDeep(f"nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return data


def refuse_unstorable(document: Any) -> None:
    path = first_unstorable(document)
    if path is not None:
        raise InvalidInput(
            f"{path} contains a NUL character or an unpaired surrogate",
            [{"field": path, "message": "NUL characters and unpaired surrogates are not allowed"}],
        )


def read_json_body() -> Any:
    """The body parsed as JSON; 400 when it is not JSON (an empty body reads as {})."""
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body has no Content-Length to refuse up front, and werkzeug's reader
        # stops silently at the limit: a body cut there must not be parsed as a bad one.
        raise RequestEntityTooLarge()
    if not raw.strip():
        return {}
    try:
        data = strict_loads(raw)
    except TooDeep:
        raise InvalidInput(
            f"request body nests deeper than {MAX_JSON_DEPTH} levels",
            [{"field": "body", "message": f"at most {MAX_JSON_DEPTH} levels of nesting"}],
        ) from None
    except ValueError:
        raise BadRequestBody("request body is not valid JSON") from None
    refuse_unstorable(data)
    return data


def parse_body(model: type[BaseModel]) -> BaseModel:
    data = read_json_body()
    if not isinstance(data, dict):
        raise BadRequestBody(f"request body must be a JSON object, got {type(data).__name__}")
    return model.model_validate(data)


def parse_query(model: type[BaseModel]) -> BaseModel:
    raw = {key: request.args.getlist(key) for key in request.args}
    flat = {key: values[0] if len(values) == 1 else values for key, values in raw.items()}
    refuse_unstorable(flat)
    return model.model_validate(flat)


def endpoint(
    bp: Blueprint,
    rule: str,
    method: str,
    *,
    summary: str,
    tag: str,
    responses: dict[int, type[BaseModel] | None],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    auth: bool = True,
    roles: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a JSON route; the view gets ``principal``, ``body`` and ``query`` as asked."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        OPERATIONS.append(
            Operation(
                rule=(bp.url_prefix or "") + rule,
                method=method.lower(),
                summary=summary,
                tag=tag,
                body=body,
                query=query,
                responses=responses,
                auth=auth,
                roles=roles,
                headers=headers or {},
            )
        )

        @wraps(view)
        def wrapped(**path_args: Any) -> Response | tuple[Any, int]:
            kwargs: dict[str, Any] = dict(path_args)
            if any(unstorable(str(value)) for value in path_args.values()):
                raise NotFound("no such resource")  # no stored id contains NUL
            if auth:
                # On g too: the audit row (app/auditing.py) names who acted.
                kwargs["principal"] = g.principal = bearer_principal()
                if roles:  # enforce the roles /openapi.json documents, before the body
                    kwargs["principal"].require_role(*roles)
            if body is not None:
                kwargs["body"] = parse_body(body)
            if query is not None:
                kwargs["query"] = parse_query(query)
            result = view(**kwargs)
            if isinstance(result, Response):
                return result
            payload, status = result if isinstance(result, tuple) else (result, 200)
            return jsonify(payload), status

        bp.add_url_rule(rule, endpoint=view.__name__, view_func=wrapped, methods=[method])
        return wrapped

    return decorate
