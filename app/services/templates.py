"""Task templates: named task defaults with an optional JSON Schema for the input.

A task made from a template takes the template's fields, with the caller's overrides on top:
``input_data`` is deep-merged onto ``default_input_data`` (objects merge key by key, any
other value, lists included, replaces the default; ``null`` is a value, not a deletion),
and the result must satisfy ``input_schema``. Each violation is reported as one detail
whose ``field`` is ``input_data`` followed by the RFC 6901 pointer of the offending value
(``input_data/customer/id``; the object itself is plain ``input_data``), and whose
``pointer`` is that pointer alone (``/customer/id``). The task records the template's id
and version; editing a template bumps its version and changes future tasks only.

Schemas are Draft 2020-12. Nothing is fetched while checking them: a ``$ref`` must resolve
within the schema itself (or name a JSON Schema meta-schema), else the schema is refused.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.lib.clock import utcnow
from app.lib.tokens import new_id
from app.models import Role, Task, TaskTemplate
from app.services import audit
from app.services.dispatch import (
    build_task,
    find_idempotent,
    request_fingerprint,
    resolve_client_id,
)
from app.services.errors import Conflict, InvalidInput, NotFound, invalid
from app.services.principal import Principal

# Violations reported for one document; past this the rest are summed up in the message.
MAX_VIOLATIONS = 50
# The base URI a schema without its own $id is resolved against.
SCHEMA_BASE = "urn:ains:template-input-schema"
# Template field → the task field it is the default for.
DEFAULTS = {
    "default_priority": "priority",
    "default_max_retries": "max_retries",
    "default_retry_policy": "retry_policy",
    "default_timeout_seconds": "timeout_seconds",
}
EDITABLE_FIELDS = (
    "name",
    "description",
    "task_type",
    "capability_required",
    "default_input_data",
    *DEFAULTS,
    "input_schema",
)
NULLABLE_FIELDS = ("description", "input_schema")
MAX_SCHEMA_BYTES = 64 * 1024
# Keywords whose values are data, not subschemas: a "$ref" inside them is not a reference.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
META_VALIDATOR = Draft202012Validator(
    Draft202012Validator.META_SCHEMA,
    registry=META_SCHEMAS,
    format_checker=Draft202012Validator.FORMAT_CHECKER,  # e.g. "pattern" must be a regex
)


# ---------------------------------------------------------------------------------------
# Merging and validating input
# ---------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` onto ``base``: objects merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def json_pointer(path: Any) -> str:
    """RFC 6901: ``["a", 0, "b/c"]`` → ``/a/0/b~1c``."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def violation(field: str, error: ValidationError) -> dict[str, Any]:
    pointer = json_pointer(error.absolute_path)
    return {"field": field + pointer, "pointer": pointer, "message": error.message}


def refuse_violations(field: str, errors: list[ValidationError], what: str) -> None:
    """One detail per violation, in document order."""
    if not errors:
        return
    errors.sort(key=lambda e: (json_pointer(e.absolute_path), e.message))
    details = [violation(field, e) for e in errors[:MAX_VIOLATIONS]]
    more = f" (the first {MAX_VIOLATIONS} are listed)" if len(errors) > MAX_VIOLATIONS else ""
    count = f"{len(errors)} violation" + ("s" if len(errors) != 1 else "")
    raise InvalidInput(f"{field} does not match {what}: {count}{more}", details)


def schema_refs(schema: Any, base: str = SCHEMA_BASE) -> Iterator[tuple[str, str, str]]:
    """Every ``$ref``/``$dynamicRef`` in a schema: (where, the reference, its absolute URI)."""
    stack: list[tuple[Any, list[Any], str]] = [(schema, [], base)]
    while stack:
        node, path, scope = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$id"), str):
                scope = urljoin(scope, node["$id"])
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    yield json_pointer([*path, key]), value, urljoin(scope, value)
                elif key not in DATA_KEYWORDS:
                    stack.append((value, [*path, key], scope))
        elif isinstance(node, list):
            stack.extend((item, [*path, i], scope) for i, item in enumerate(node))


@functools.lru_cache(maxsize=1024)
def compiled_pattern(pattern: str) -> Any:
    """``pattern`` compiled with RE2: linear time, so no input can make a check run away.

    Raises re2.error for what RE2 does not support (backreferences, lookaround).
    """
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and not compiled_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def pattern_properties_keyword(validator: Any, patterns: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        matcher = compiled_pattern(pattern)
        for key, value in instance.items():
            if matcher.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def canonical(value: Any) -> str:
    """JSON text equal for equal JSON values (1 and 1.0 alike), to hash array items."""

    def norm(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {k: norm(v) for k, v in item.items()}
        if isinstance(item, list):
            return [norm(v) for v in item]
        return item

    return json.dumps(norm(value), sort_keys=True)


def unique_items_keyword(validator: Any, unique: Any, instance: Any, schema: Any) -> Any:
    # Hashing, not the pairwise comparison jsonschema does (quadratic on large arrays).
    if unique and validator.is_type(instance, "array"):
        seen: set[str] = set()
        for item in instance:
            text = canonical(item)
            if text in seen:
                yield ValidationError(f"{instance!r} has non-unique elements")
                return
            seen.add(text)


SafeValidator = validators.extend(
    Draft202012Validator,
    {
        "pattern": pattern_keyword,
        "patternProperties": pattern_properties_keyword,
        "uniqueItems": unique_items_keyword,
    },
)


def input_validator(schema: dict[str, Any]) -> Any:
    """A validator that resolves references within the schema and the meta-schemas only."""
    return SafeValidator(schema, registry=META_SCHEMAS)


def schema_patterns(schema: Any) -> Iterator[tuple[str, str]]:
    """Every regular expression in a schema: (where, the pattern)."""
    stack: list[tuple[Any, list[Any]]] = [(schema, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    yield json_pointer([*path, key]), value
                elif key == "patternProperties" and isinstance(value, dict):
                    for pattern, sub in value.items():
                        yield json_pointer([*path, key, pattern]), pattern
                        stack.append((sub, [*path, key, pattern]))
                elif key not in DATA_KEYWORDS:
                    stack.append((value, [*path, key]))
        elif isinstance(node, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(node))


def check_patterns(schema: dict[str, Any]) -> None:
    """Refuse patterns RE2 cannot run (backreferences, lookaround) and oversized schemas."""
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise invalid("input_schema", f"at most {MAX_SCHEMA_BYTES // 1024} KB of JSON")
    for where, pattern in schema_patterns(schema):
        try:
            compiled_pattern(pattern)
        except re2.error:
            raise InvalidInput(
                f"input_schema: pattern {pattern!r} is not supported",
                [
                    {
                        "field": "input_schema" + where,
                        "pointer": where,
                        "message": f"{pattern!r}: patterns use RE2 syntax, which runs in "
                        "linear time (no backreferences or lookaround)",
                    }
                ],
            ) from None


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse an input_schema that is not valid Draft 2020-12 or refers outside itself."""
    try:
        refuse_violations(
            "input_schema", list(META_VALIDATOR.iter_errors(schema)), "the JSON Schema meta-schema"
        )
        check_patterns(schema)
        resource = DRAFT202012.create_resource(schema)
        resolver = META_SCHEMAS.with_resource(SCHEMA_BASE, resource).crawl().resolver(SCHEMA_BASE)
        for where, ref, uri in schema_refs(schema):
            try:
                resolver.lookup(uri)
            except Unresolvable:
                raise InvalidInput(
                    f"input_schema: $ref {ref!r} does not resolve within the schema",
                    [
                        {
                            "field": "input_schema" + where,
                            "pointer": where,
                            "message": f"{ref!r} does not resolve within the schema "
                            "(remote references are not fetched)",
                        }
                    ],
                ) from None
    except RecursionError:
        raise invalid("input_schema", "the schema is nested too deeply") from None


def schema_errors(schema: dict[str, Any], document: Any) -> list[ValidationError]:
    """Every violation of ``schema`` by ``document``."""
    try:
        return list(input_validator(schema).iter_errors(document))
    except Unresolvable as exc:  # a schema stored before it was checked
        raise invalid("input_schema", f"a $ref does not resolve: {exc}") from None
    except RecursionError:
        raise invalid("input_data", "the input is nested too deeply to validate") from None


def check_defaults(schema: dict[str, Any] | None, defaults: dict[str, Any]) -> None:
    """Defaults must fit the schema, except required properties: tasks may supply those."""
    if schema is None or not defaults:
        return
    errors = [e for e in schema_errors(schema, defaults) if e.validator != "required"]
    refuse_violations("default_input_data", errors, "input_schema")


# ---------------------------------------------------------------------------------------
# CRUD
# ---------------------------------------------------------------------------------------


def visible_template(principal: Principal, template_id: str, *, lock: bool = False) -> TaskTemplate:
    """A template the principal may use: clients their own, admins any; agents refused."""
    principal.require_role(Role.CLIENT)
    query = db.select(TaskTemplate).where(TaskTemplate.id == template_id)
    if lock:
        query = query.with_for_update()
    template = db.session.scalars(query).first()
    if template is None or (not principal.is_admin and template.client_id != principal.client_id):
        raise NotFound(f"template {template_id!r} not found")
    return template


def name_taken(client_id: str, name: str) -> Conflict:
    return Conflict(
        f"client {client_id!r} already has a template named {name!r}",
        [{"field": "name", "message": "already used by another template of this client"}],
    )


def check_name_free(client_id: str, name: str, template_id: str | None = None) -> None:
    query = db.select(TaskTemplate.id).where(
        TaskTemplate.client_id == client_id, TaskTemplate.name == name
    )
    if template_id is not None:
        query = query.where(TaskTemplate.id != template_id)
    if db.session.scalars(query).first() is not None:
        raise name_taken(client_id, name)


def commit_named(client_id: str, name: str) -> None:
    """Commit; two writers racing for one name: the unique constraint picks the winner."""
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise name_taken(client_id, name) from None


def create_template(
    principal: Principal, fields: dict[str, Any], now: datetime | None = None
) -> TaskTemplate:
    """A new template at version 1; its name must be new among its client's templates."""
    now = now or utcnow()
    fields = dict(fields)
    client_id = resolve_client_id(principal, fields.pop("client_id", None))
    if fields.get("input_schema") is not None:
        check_schema(fields["input_schema"])
    check_defaults(fields.get("input_schema"), fields.get("default_input_data") or {})
    check_name_free(client_id, fields["name"])
    template = TaskTemplate(
        id=new_id("tmpl"),
        client_id=client_id,
        version=1,
        times_used=0,
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
        **{k: v for k, v in fields.items() if k in EDITABLE_FIELDS},
    )
    db.session.add(template)
    audit.track(template, "template")
    commit_named(client_id, template.name)
    return template


def update_template(
    principal: Principal, template_id: str, fields: dict[str, Any], now: datetime | None = None
) -> TaskTemplate:
    """Change the fields given (PATCH); any real change bumps the version."""
    now = now or utcnow()
    # Locked: two edits at once must not both read version n and both write n + 1.
    template = visible_template(principal, template_id, lock=True)
    changes = {k: v for k, v in fields.items() if k in EDITABLE_FIELDS}
    required = [k for k, v in changes.items() if v is None and k not in NULLABLE_FIELDS]
    if required:
        raise InvalidInput(
            f"{', '.join(required)} cannot be null",
            [{"field": k, "message": "cannot be null"} for k in required],
        )
    changes = {k: v for k, v in changes.items() if v != getattr(template, k)}
    if not changes:
        db.session.rollback()
        return template
    if changes.get("input_schema") is not None:
        check_schema(changes["input_schema"])
    if {"input_schema", "default_input_data"} & changes.keys():
        schema = changes.get("input_schema", template.input_schema)
        check_defaults(schema, changes.get("default_input_data", template.default_input_data))
    if "name" in changes:
        check_name_free(template.client_id, changes["name"], template.id)
    audit.track(template, "template")
    for key, value in changes.items():
        setattr(template, key, value)
    template.version += 1
    template.updated_at = now
    commit_named(template.client_id, template.name)
    return template


def delete_template(principal: Principal, template_id: str) -> str:
    """Delete for good; tasks made from it keep its id and version."""
    template = visible_template(principal, template_id, lock=True)
    audit.note(
        target_type="template",
        target_id=template.id,
        before={"name": template.name, "version": template.version},
    )
    db.session.delete(template)
    db.session.commit()
    return template_id


@dataclass(frozen=True)
class TemplatePage:
    templates: list[TaskTemplate]
    total: int


def list_templates(
    principal: Principal,
    *,
    client_id: str | None = None,
    name: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> TemplatePage:
    """Templates the principal may see, newest first; ``name`` matches any part, any case."""
    principal.require_role(Role.CLIENT)
    query = db.select(TaskTemplate)
    if not principal.is_admin:
        query = query.where(TaskTemplate.client_id == principal.client_id)
    if client_id:
        query = query.where(TaskTemplate.client_id == client_id)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(TaskTemplate.name.ilike(f"%{escaped}%", escape="\\"))
    total = db.session.scalar(db.select(func.count()).select_from(query.subquery())) or 0
    found = db.session.scalars(
        query.order_by(TaskTemplate.created_at.desc(), TaskTemplate.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return TemplatePage(list(found), total)


# ---------------------------------------------------------------------------------------
# Tasks from templates
# ---------------------------------------------------------------------------------------


def task_client_id(principal: Principal, template: TaskTemplate, client_id: str | None) -> str:
    """Tasks from a template belong to its client (an admin need not name it)."""
    if principal.is_admin and not client_id:
        return template.client_id
    resolved = resolve_client_id(principal, client_id)
    if resolved != template.client_id:
        raise invalid(
            "client_id",
            f"template {template.id} belongs to client {template.client_id!r}, not {resolved!r}",
        )
    return resolved


def task_fields_from_template(
    principal: Principal, template_id: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """TaskSubmit-shaped fields for a task made from a template, and one more use counted.

    ``overrides`` holds submit fields; a missing or null one takes the template's default,
    ``input_data`` is deep-merged onto the defaults, and other keys (expires_in_seconds,
    routing_strategy...) pass through. task_type and capability_required always come from
    the template. The use is counted in the caller's transaction, so it is counted only if
    the caller commits. Raises NotFound (no such template, or not the principal's) and
    InvalidInput (the merged input breaks the schema, one detail per violation).
    """
    template = visible_template(principal, template_id)
    client_id = task_client_id(principal, template, overrides.get("client_id"))
    defaults_in = template.default_input_data or {}
    try:
        input_data = deep_merge(defaults_in, overrides.get("input_data") or {})
    except RecursionError:
        raise invalid("input_data", "the input is nested too deeply to merge") from None
    if template.input_schema is not None:
        errors = schema_errors(template.input_schema, input_data)
        refuse_violations("input_data", errors, f"the input_schema of template {template.id}")
    given = {k: v for k, v in overrides.items() if v is not None}
    defaults = {task: getattr(template, default) for default, task in DEFAULTS.items()}
    from_template = {
        "client_id": client_id,
        "task_type": template.task_type,
        "capability_required": template.capability_required,
        "input_data": input_data,
        "template_id": template.id,
        "template_version": template.version,
    }
    # A conditional increment, not a read-modify-write: concurrent uses all count; no row
    # changed means the template was deleted since it was read.
    counted = db.session.execute(
        update(TaskTemplate)
        .where(TaskTemplate.id == template.id)
        .values(times_used=TaskTemplate.times_used + 1)
        .execution_options(synchronize_session=False)
    )
    if counted.rowcount != 1:
        raise NotFound(f"template {template_id!r} not found")
    return defaults | given | from_template


def submit_from_template(
    principal: Principal,
    template_id: str,
    overrides: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Task, bool]:
    """Create one task from a template; return it and whether it was new.

    With ``idempotency_key`` a replay of the same request returns the first task even if
    the template was edited or deleted meanwhile: the request, not the template, is
    fingerprinted and looked up first.
    """
    now = now or utcnow()
    principal.require_role(Role.CLIENT)
    # An admin may leave the client out (it is the template's): its keys are then its own.
    named = overrides.get("client_id")
    scope = resolve_client_id(principal, named) if principal.role == Role.CLIENT else named
    fingerprint = request_fingerprint(
        {"from_template": template_id, **overrides, "client_id": scope}
    )
    if idempotency_key:
        existing = find_idempotent(
            scope, [idempotency_key], fingerprint, now, actor=principal.actor
        )
        if existing:
            return existing[0], False
    fields = task_fields_from_template(principal, template_id, overrides)
    task = build_task(principal, fields, now=now)
    task.idempotency_key = idempotency_key
    task.request_hash = fingerprint if idempotency_key else None
    try:
        db.session.commit()
    except IntegrityError:
        # Two submits raced with the same Idempotency-Key: the other one won.
        db.session.rollback()
        if idempotency_key:
            existing = find_idempotent(
                scope, [idempotency_key], fingerprint, now, actor=principal.actor
            )
            if existing:
                return existing[0], False
            # The client's own submit holds the key (an admin's lookup is by its own tasks).
            raise InvalidInput(
                "Idempotency-Key was already used with a different request body",
                [{"field": "Idempotency-Key", "message": "reused with a different body"}],
            ) from None
        raise
    return task, True
