"""Task templates: the list, a form to create or edit one, and one template with Run now.

The Run now form is generated from the template's input schema: one input per top-level
property, chosen by its type, filled in with the template's default input. What the
operator types is merged onto those defaults by the service, which checks the result
against the schema; each violation it reports names a JSON pointer, and is shown under the
input of the property that pointer starts with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse
from wtforms import Form, IntegerField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError

from app.models import OperatorRole, TaskTemplate
from app.services import template_views, templates
from app.services.errors import Conflict, InvalidInput
from app.ui import bp
from app.ui.access import requires
from app.ui.auth import acting_operator
from app.ui.filters import ChoiceField, labelled_errors, stripped
from app.ui.htmx import render_region
from app.ui.schedules import number

PAGE_SIZE = 25
RECENT_TASKS = 10
# The run form's input names: the property's JSON pointer under input_data, as the service
# names its violations ("input_data/region").
INPUT_PREFIX = "input_data"
TYPE_LABELS = {"string": "text", "integer": "whole number", "number": "number"}
RETRY_POLICIES = ("exponential", "linear", "fixed")
SCHEMA_EXAMPLE = (
    '{"type": "object", "properties": {"region": {"type": "string", "enum": ["EMEA", "APAC"]}}, '
    '"required": ["region"]}'
)


# ---------------------------------------------------------------------------------------
# JSON in text areas
# ---------------------------------------------------------------------------------------


def parse_json(text: str | None) -> Any:
    """The JSON in a text area; ValidationError naming the line and column if it is not."""
    try:
        return json.loads(text or "")
    except ValueError as exc:
        raise ValidationError(f"not valid JSON: {exc}") from None


def json_object(text: str | None) -> dict[str, Any]:
    value = parse_json(text if (text or "").strip() else "{}")
    if not isinstance(value, dict):
        raise ValidationError(f"must be a JSON object {{...}}, got {json_kind(value)}")
    return value


def json_kind(value: Any) -> str:
    """The JSON name of a value's type: 'array', 'string', 'null'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def json_text(value: Any) -> str:
    """A value as a text area shows it: objects and arrays indented, the rest on one line."""
    indent = 2 if isinstance(value, dict | list) and value else None
    return json.dumps(value, indent=indent, ensure_ascii=False)


def unescape(segment: str) -> str:
    """One RFC 6901 pointer segment as the property name it stands for."""
    return segment.replace("~1", "/").replace("~0", "~")


def at(pointer: str, message: str) -> str:
    """'/customer/id: ...': a violation with where it is, unless it is the whole value."""
    return f"{pointer}: {message}" if pointer else message


# ---------------------------------------------------------------------------------------
# The template form
# ---------------------------------------------------------------------------------------


class TemplateForm(FlaskForm):
    """Edit a template: what its tasks are, their defaults, the schema of their input."""

    name = StringField("Name", filters=[stripped], validators=[DataRequired(), Length(max=200)])
    description = TextAreaField("Description", filters=[stripped], validators=[Length(max=2000)])
    task_type = StringField(
        "Task type", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )
    capability_required = StringField(
        "Capability",
        filters=[stripped],
        validators=[
            DataRequired(),
            Length(max=200),
            Regexp(
                r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
                message="use letters, digits and . _ : / @ + - (e.g. report-v1)",
            ),
        ],
    )
    default_priority = number("Priority (1-10)", 1, 10, default=5)
    default_max_retries = number("Max retries", 0, 20, default=3)
    default_retry_policy = ChoiceField(
        "Retry policy",
        choices=[SelectChoice(p, p.capitalize()) for p in RETRY_POLICIES],
        default="exponential",
    )
    default_timeout_seconds = number("Timeout (seconds)", 1, 3600, default=300)
    default_input_data = TextAreaField("Default input (JSON object)", default="{}")
    input_schema = TextAreaField("Input schema (JSON Schema, optional)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.general_errors: list[str] = []
        self.parsed_defaults: dict[str, Any] = {}
        self.parsed_schema: dict[str, Any] | None = None

    @classmethod
    def of(cls, template: TaskTemplate) -> TemplateForm:
        """The edit form, filled in from the template."""
        data = {name: getattr(template, name) for name in templates.EDITABLE_FIELDS}
        data["default_input_data"] = json_text(template.default_input_data or {})
        schema = template.input_schema
        data["input_schema"] = json_text(schema) if schema is not None else ""
        return cls(formdata=None, data=data)

    def validate_default_input_data(self, field: TextAreaField) -> None:
        self.parsed_defaults = json_object(field.data)

    def validate_input_schema(self, field: TextAreaField) -> None:
        if not (field.data or "").strip():
            self.parsed_schema = None
            return
        schema = parse_json(field.data)
        if not isinstance(schema, dict):
            raise ValidationError(f"must be a JSON object {{...}}, got {json_kind(schema)}")
        self.parsed_schema = schema

    def fields(self) -> dict[str, Any]:
        """Every field, as create_template and update_template take them."""
        return {
            "name": self.name.data,
            "description": self.description.data or None,
            "task_type": self.task_type.data,
            "capability_required": self.capability_required.data,
            "default_input_data": self.parsed_defaults,
            "default_priority": self.default_priority.data,
            "default_max_retries": self.default_max_retries.data,
            "default_retry_policy": self.default_retry_policy.data,
            "default_timeout_seconds": self.default_timeout_seconds.data,
            "input_schema": self.parsed_schema,
        }

    def take_errors(self, exc: InvalidInput | Conflict) -> None:
        """A service's error, under the field it names ('input_schema/properties/a' too)."""
        for detail in exc.details or [{"field": None, "message": exc.message}]:
            name = detail.get("field") or ""
            top, _, rest = name.partition("/")
            message = detail.get("message", exc.message)
            if top in self._fields and top != "csrf_token":
                pointer = detail.get("pointer", f"/{rest}" if rest else "")
                self[top].errors = [*self[top].errors, at(pointer, message)]
            else:
                self.general_errors.append(exc.message)


class NewTemplateForm(TemplateForm):
    # Operators act as admins, so they say whose template it is.
    client_id = StringField(
        "Client", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )

    def fields(self) -> dict[str, Any]:
        return {"client_id": self.client_id.data, **super().fields()}


class TemplateFilterForm(Form):
    client = StringField("Client", filters=[stripped], validators=[Length(max=200)])
    name = StringField("Name contains", filters=[stripped], validators=[Length(max=200)])
    page = IntegerField("Page", validators=[Optional(), NumberRange(min=1, max=100_000)])

    def query_args(self) -> dict[str, str]:
        return {name: str(f.data) for name, f in self._fields.items() if f.data and name != "page"}


# ---------------------------------------------------------------------------------------
# The Run now form, generated from the input schema
# ---------------------------------------------------------------------------------------


@dataclass
class RunInput:
    """One top-level property of the input schema, as an input of the Run now form.

    ``kind`` picks the control: text, select (an enum), number, checkbox (a boolean) or
    json (objects, arrays and anything else, typed as JSON). Left empty, a property is not
    sent, so the template's default for it (``default``) applies.
    """

    name: str
    input_name: str
    dom_id: str
    kind: str
    json_type: str | None
    required: bool
    title: str | None = None
    description: str | None = None
    has_default: bool = False
    default: Any = None
    options: list[tuple[str, str]] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    step: str | None = None
    max_length: int | None = None
    value: str = ""
    checked: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def type_label(self) -> str:
        """'whole number · 1 to 10', 'one of 3', 'JSON object': what the input takes."""
        if self.kind == "select":
            return f"one of {len(self.options)}"
        if self.kind == "json":
            return f"JSON {self.json_type}" if self.json_type else "JSON"
        label = TYPE_LABELS.get(self.json_type or "", self.json_type or "")
        low = number_text(self.minimum) if self.minimum is not None else None
        high = number_text(self.maximum) if self.maximum is not None else None
        if low is not None and high is not None:
            return f"{label} · {low} to {high}"
        if low is not None:
            return f"{label} · at least {low}"
        if high is not None:
            return f"{label} · at most {high}"
        return label

    @property
    def rows(self) -> int:
        """A JSON box tall enough for its value, within 3 to 10 lines."""
        return min(10, max(3, self.value.count("\n") + 1))

    @property
    def default_text(self) -> str:
        """The template's default as the input would show it, for the hint."""
        if self.kind == "select":
            return option_label(self.default)
        return self.default if isinstance(self.default, str) else json_text(self.default)

    def show(self, value: Any) -> None:
        """Fill the input with ``value`` (a default)."""
        if self.kind == "checkbox":
            self.checked = value is True
        elif self.kind == "select":
            self.value = json.dumps(value)
        elif self.kind == "text" and isinstance(value, str):
            self.value = value
        else:
            self.value = json_text(value)

    def read(self, form: MultiDict[str, str]) -> tuple[bool, Any]:
        """(given, value) from the submitted form; errors go to ``self.errors``."""
        raw = form.get(self.input_name, "")
        if self.kind == "checkbox":
            self.checked = bool(raw)
            return True, bool(raw)
        self.value = raw
        if not raw.strip():
            if self.required and not self.has_default:
                self.errors.append("required: type a value")
            return False, None
        try:
            return True, self.parse(raw)
        except ValueError as exc:
            self.errors.append(str(exc))
            return False, None

    def parse(self, raw: str) -> Any:
        if self.kind == "text":
            return raw
        if self.kind == "select":
            allowed = [value for value, _ in self.options]
            if raw not in allowed:
                raise ValueError(f"{raw!r} is not one of the choices")
            return json.loads(raw)
        if self.kind == "number":
            return parse_number(raw.strip(), whole=self.json_type == "integer")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def option_label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_number(raw: str, *, whole: bool) -> int | float:
    """'42' → 42, '2.5' → 2.5 (not for a whole number), '1e3' → 1000."""
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a {'whole ' if whole else ''}number") from None
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    if value.is_integer():
        return int(value)
    if whole:
        raise ValueError(f"{raw!r} is not a whole number")
    return value


def schema_type(schema: dict[str, Any]) -> str | None:
    """The one JSON type a property schema names; ["string", "null"] counts as string."""
    declared = schema.get("type")
    if isinstance(declared, list):
        real = [t for t in declared if t != "null"]
        declared = real[0] if len(real) == 1 else None
    if isinstance(declared, str):
        return declared
    return "object" if "properties" in schema else None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def bound(schema: dict[str, Any], inclusive: str, exclusive: str, step: int) -> float | None:
    """minimum or maximum; an exclusive bound counts only for whole numbers, one step in."""
    value = schema.get(inclusive)
    if is_number(value):
        return value
    value = schema.get(exclusive)
    if step and is_number(value) and float(value).is_integer():
        return value + step
    return None


def run_input(name: str, index: int, schema: Any, required: bool) -> RunInput:
    """The input for one property."""
    schema = schema if isinstance(schema, dict) else {}
    json_type = schema_type(schema)
    pointer = "/" + name.replace("~", "~0").replace("/", "~1")
    item = RunInput(
        name=name,
        input_name=INPUT_PREFIX + pointer,
        dom_id=f"run-input-{index}",
        kind="json",
        json_type=json_type,
        required=required,
        title=schema.get("title") if isinstance(schema.get("title"), str) else None,
        description=(
            schema.get("description") if isinstance(schema.get("description"), str) else None
        ),
    )
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        item.kind = "select"
        item.options = [(json.dumps(value), option_label(value)) for value in enum]
    elif json_type == "string":
        item.kind = "text"
        if isinstance(schema.get("maxLength"), int):
            item.max_length = schema["maxLength"]
    elif json_type in ("integer", "number"):
        item.kind = "number"
        whole = json_type == "integer"
        item.minimum = bound(schema, "minimum", "exclusiveMinimum", 1 if whole else 0)
        item.maximum = bound(schema, "maximum", "exclusiveMaximum", -1 if whole else 0)
        multiple = schema.get("multipleOf")
        if is_number(multiple):
            item.step = number_text(multiple)
        else:
            item.step = "1" if whole else "any"
    elif json_type == "boolean":
        item.kind = "checkbox"
    return item


def run_inputs(schema: dict[str, Any] | None, defaults: dict[str, Any]) -> list[RunInput] | None:
    """One input per top-level property, filled with the defaults; None without properties."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return None
    assert schema is not None
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    inputs = []
    for index, (name, subschema) in enumerate(properties.items()):
        item = run_input(name, index, subschema, name in required)
        if name in defaults:
            item.has_default, item.default = True, defaults[name]
            item.show(defaults[name])
        elif isinstance(subschema, dict) and "default" in subschema:
            item.show(subschema["default"])
        inputs.append(item)
    return inputs


class RunForm(FlaskForm):
    """Run now: the generated inputs (or one JSON box), a client and a priority."""

    client_id = StringField("Client", filters=[stripped], validators=[Length(max=200)])
    priority = IntegerField("Priority (1-10)", validators=[Optional(), NumberRange(min=1, max=10)])
    input_data = TextAreaField("Input data (JSON object)")

    def __init__(self, template: TaskTemplate, **kwargs: Any) -> None:
        defaults = template.default_input_data or {}
        kwargs.setdefault("client_id", template.client_id)
        kwargs.setdefault("input_data", json_text(defaults))
        super().__init__(**kwargs)
        self.template = template
        self.inputs = run_inputs(template.input_schema, defaults)
        self.general_errors: list[str] = []
        self.parsed_input: dict[str, Any] = {}

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        return self.read_inputs() and valid

    def validate_input_data(self, field: TextAreaField) -> None:
        if self.inputs is None:
            self.parsed_input = json_object(field.data)

    def read_inputs(self) -> bool:
        """Read the generated inputs: the properties given, or why one is wrong."""
        if self.inputs is None:
            return True
        given = {}
        for item in self.inputs:
            present, value = item.read(request.form)
            if present:
                given[item.name] = value
        self.parsed_input = given
        return not any(item.errors for item in self.inputs)

    def overrides(self) -> dict[str, Any]:
        """What submit_from_template takes: only what was given, the rest is the template's."""
        return {
            "client_id": self.client_id.data or None,
            "priority": self.priority.data,
            "input_data": self.parsed_input,
        }

    def input_at(self, pointer: str, message: str) -> tuple[RunInput | None, str]:
        """The input a violation belongs to, and its message as shown there."""
        if self.inputs is None:
            return None, at(pointer, message)
        if pointer:
            first, _, rest = pointer[1:].partition("/")
            found = next((i for i in self.inputs if i.name == unescape(first)), None)
            return found, at(pointer, message) if rest else message
        # A missing required property is the object's violation, not the property's.
        found = next(
            (i for i in self.inputs if message == f"{i.name!r} is a required property"), None
        )
        return found, "required: type a value" if found else message

    def take_errors(self, exc: InvalidInput) -> None:
        """The service's violations, each under the input its pointer starts at."""
        for detail in exc.details or [{"field": None, "message": exc.message}]:
            name = detail.get("field") or ""
            message = detail.get("message", exc.message)
            if name == "client_id":
                self.client_id.errors = [*self.client_id.errors, message]
            elif name == INPUT_PREFIX or name.startswith(INPUT_PREFIX + "/"):
                pointer = detail.get("pointer", name[len(INPUT_PREFIX) :])
                target, shown = self.input_at(pointer, message)
                if target is not None:
                    target.errors.append(shown)
                elif self.inputs is None:
                    self.input_data.errors = [*self.input_data.errors, shown]
                else:
                    self.general_errors.append(at(pointer or "input", message))
            else:
                self.general_errors.append(exc.message)

    @property
    def marked(self) -> bool:
        """Whether some input shows an error under it."""
        return bool(self.errors) or any(item.errors for item in self.inputs or [])

    @property
    def failed(self) -> bool:
        return self.marked or bool(self.general_errors)


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


def form_page(form: TemplateForm, template: TaskTemplate | None = None) -> Response:
    failed = form.is_submitted() and bool(form.errors or form.general_errors)
    return render_region(
        "ui/task_templates/form.html",
        "ui/task_templates/form.html",
        status=422 if failed else 200,
        form=form,
        template=template,
        preview=run_preview(form.input_schema.data, form.default_input_data.data),
        errors=labelled_errors(form),
        schema_example=SCHEMA_EXAMPLE,
    )


def detail_page(template: TaskTemplate, run_form: RunForm) -> Response:
    principal = acting_operator()
    return render_region(
        "ui/task_templates/detail.html",
        "ui/task_templates/detail.html",
        status=422 if run_form.failed else 200,
        template=template,
        run_form=run_form,
        recent=template_views.tasks_from_template(principal, template.id, limit=RECENT_TASKS),
        schedules=template_views.schedules_using(principal, template.id),
    )


@dataclass(frozen=True)
class RunPreview:
    """The Run now form a schema in the editor would make, or why it makes none."""

    inputs: list[RunInput] | None = None
    errors: list[str] = field(default_factory=list)
    prompt: str | None = None


def run_preview(schema_text: str | None, defaults_text: str | None) -> RunPreview:
    """What Run now would show for the schema and default input typed into the editor."""
    errors, schema, defaults = [], None, {}
    try:
        defaults = json_object(defaults_text)
    except ValidationError as exc:
        errors.append(f"Default input: {exc}")
    if (schema_text or "").strip():
        try:
            schema = parse_json(schema_text)
        except ValidationError as exc:
            errors.append(f"Input schema: {exc}")
        else:
            if not isinstance(schema, dict):
                errors.append(f"Input schema: must be a JSON object, got {json_kind(schema)}")
    if errors:
        return RunPreview(errors=errors)
    if schema is None:
        return RunPreview(prompt="No schema: Run now offers one JSON box for the whole input.")
    try:
        templates.check_schema(schema)
        templates.check_defaults(schema, defaults)
    except InvalidInput as exc:
        return RunPreview(errors=[preview_error(d, exc.message) for d in exc.details])
    inputs = run_inputs(schema, defaults)
    if inputs is None:
        return RunPreview(prompt="The schema names no properties: Run now offers one JSON box.")
    return RunPreview(inputs=inputs)


def preview_error(detail: dict[str, Any], fallback: str) -> str:
    """'Input schema /properties/a/type: ...': a service detail, named for the editor."""
    name = detail.get("field") or ""
    label = "Default input" if name.startswith("default_input_data") else "Input schema"
    pointer = detail.get("pointer", "")
    return f"{label}{' ' + pointer if pointer else ''}: {detail.get('message', fallback)}"


@bp.get("/task-templates")
@login_required
def task_templates() -> Response:
    form = TemplateFilterForm(request.args)
    page = templates.TemplatePage(templates=[], total=0)
    current = 1
    if form.validate():
        current = form.page.data or 1
        page = templates.list_templates(
            acting_operator(),
            client_id=form.client.data or None,
            name=form.name.data or None,
            limit=PAGE_SIZE,
            offset=(current - 1) * PAGE_SIZE,
        )
    errors = labelled_errors(form)
    return render_region(
        "ui/task_templates/index.html",
        "ui/task_templates/_results.html",
        status=422 if errors else 200,
        form=form,
        page=page,
        number=current,
        pages=max(1, -(-page.total // PAGE_SIZE)),
        errors=errors,
        filters=form.query_args() if not errors else {},
    )


@bp.route("/task-templates/new", methods=["GET", "POST"])
@login_required
@requires(OperatorRole.OPERATOR)
def new_task_template() -> BaseResponse:
    form = NewTemplateForm()
    if form.validate_on_submit():
        try:
            template = templates.create_template(acting_operator(), form.fields())
        except (InvalidInput, Conflict) as exc:
            form.take_errors(exc)
        else:
            flash(f"Template {template.name} created (v1).", "success")
            return redirect(url_for("ui.task_template_detail", template_id=template.id))
    return form_page(form)


@bp.route("/task-templates/<template_id>/edit", methods=["GET", "POST"])
@login_required
@requires(OperatorRole.OPERATOR)
def edit_task_template(template_id: str) -> BaseResponse:
    template = templates.visible_template(acting_operator(), template_id)
    before = template.version
    form = TemplateForm() if request.method == "POST" else TemplateForm.of(template)
    if form.validate_on_submit():
        try:
            template = templates.update_template(acting_operator(), template_id, form.fields())
        except (InvalidInput, Conflict) as exc:
            form.take_errors(exc)
        else:
            if template.version == before:
                flash(f"Nothing changed: still v{before}.", "info")
            else:
                flash(
                    f"Saved as v{template.version}. Tasks made before keep v{before}'s values.",
                    "success",
                )
            return redirect(url_for("ui.task_template_detail", template_id=template_id))
    return form_page(form, template)


@bp.post("/task-templates/preview")
@login_required
def task_template_preview() -> Response:
    # 200 even for a bad schema: why no form can be made of it is the preview's answer.
    preview = run_preview(request.form.get("input_schema"), request.form.get("default_input_data"))
    return render_region(
        "ui/task_templates/_run_preview.html",
        "ui/task_templates/_run_preview.html",
        preview=preview,
    )


@bp.get("/task-templates/<template_id>")
@login_required
def task_template_detail(template_id: str) -> Response:
    template = templates.visible_template(acting_operator(), template_id)
    return detail_page(template, RunForm(template, formdata=None))


@bp.post("/task-templates/<template_id>/run")
@login_required
def run_task_template(template_id: str) -> BaseResponse:
    template = templates.visible_template(acting_operator(), template_id)
    form = RunForm(template)
    if form.validate_on_submit():
        try:
            task, _ = templates.submit_from_template(
                acting_operator(), template_id, form.overrides()
            )
        except InvalidInput as exc:
            form.take_errors(exc)
        else:
            flash(
                f"Task created from {template.name} v{task.template_version}: "
                "it waits for an agent.",
                "success",
            )
            return redirect(url_for("ui.task_detail", task_id=task.id))
    return detail_page(template, form)


@bp.post("/task-templates/<template_id>/delete")
@login_required
def delete_task_template(template_id: str) -> BaseResponse:
    template = templates.visible_template(acting_operator(), template_id)
    name = template.name
    templates.delete_template(acting_operator(), template_id)
    flash(f"Template {name} deleted. Tasks made from it keep its id and version.", "success")
    return redirect(url_for("ui.task_templates"))
