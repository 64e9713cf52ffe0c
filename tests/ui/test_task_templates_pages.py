"""Templates pages: the list, the create/edit form, one template with its Run now form."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Task, TaskTemplate
from app.services import templates
from app.services.principal import operator as operator_principal
from app.ui.task_templates import PAGE_SIZE
from tests.ui.conftest import HTMX, form_token, text

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROW = re.compile(r'<tr data-template-id="([^"]+)"')
TASK_ROW = re.compile(r'<tr data-task-id="([^"]+)"')
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "region": {
            "type": "string",
            "enum": ["EMEA", "APAC", "AMER"],
            "description": "Sales region",
        },
        "title": {"type": "string", "title": "Report title", "maxLength": 80},
        "top": {"type": "integer", "minimum": 1, "maximum": 100},
        "ratio": {"type": "number", "exclusiveMaximum": 1},
        "draft": {"type": "boolean"},
        "customer": {
            "type": "object",
            "properties": {"id": {"type": "string"}},
            "required": ["id"],
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "anything": {},
    },
    "required": ["region", "top", "title"],
}
DEFAULTS: dict[str, Any] = {"region": "APAC", "top": 10, "draft": True, "tags": ["q1"]}


def make_template(app: Flask, now: datetime = NOW, **fields: Any) -> str:
    """A template created through the service (as a seeding operator); its id."""
    body = {
        "client_id": "client-1",
        "name": "sales-report",
        "description": "Weekly sales figures",
        "task_type": "sales-report",
        "capability_required": "report-v1",
        "default_input_data": DEFAULTS,
        "input_schema": SCHEMA,
        **fields,
    }
    with app.app_context():
        template = templates.create_template(operator_principal("seed@example.com"), body, now=now)
        template_id = template.id
        db.session.remove()
        return template_id


def stored(app: Flask, template_id: str) -> TaskTemplate | None:
    with app.app_context():
        template = db.session.get(TaskTemplate, template_id)
        if template is not None:
            db.session.expunge(template)
        return template


def only_template(app: Flask) -> TaskTemplate:
    with app.app_context():
        (template,) = db.session.scalars(db.select(TaskTemplate)).all()
        db.session.expunge(template)
        return template


def all_tasks(app: Flask) -> list[Task]:
    with app.app_context():
        tasks = list(db.session.scalars(db.select(Task)).all())
        for task in tasks:
            db.session.expunge(task)
        return tasks


def field_error(body: str, dom_id: str) -> str:
    """The error shown under one field, unescaped."""
    match = re.search(rf'<p class="field-error" id="{dom_id}-error">([^<]*)</p>', body)
    assert match, f"no error under {dom_id}"
    return html.unescape(match.group(1))


def no_errors(body: str) -> None:
    assert 'class="field-error"' not in body, re.findall(r'class="field-error"[^>]*>[^<]*', body)


def run_input(body: str, name: str) -> str:
    """The generated block of one property, from its field div to the next one."""
    start = body.index(f'data-input="{name}"')
    end = body.find('data-input="', start + 1)
    return body[start : end if end != -1 else body.index("</fieldset>", start)]


def flashes(body: str) -> str:
    start = body.index('<div class="flashes">')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body[start : body.index("</main>")]))


def form_data(console: FlaskClient, path: str = "/task-templates/new", **fields: Any) -> dict:
    return {
        "csrf_token": form_token(console, path),
        "client_id": "client-1",
        "name": "sales-report",
        "description": "Weekly sales figures",
        "task_type": "sales-report",
        "capability_required": "report-v1",
        "default_priority": "7",
        "default_max_retries": "2",
        "default_retry_policy": "linear",
        "default_timeout_seconds": "600",
        "default_input_data": '{"region": "EMEA"}',
        "input_schema": json.dumps(SCHEMA),
        **fields,
    }


def run_data(console: FlaskClient, template_id: str, **fields: Any) -> dict[str, Any]:
    """The Run now form as the page fills it in (defaults), with ``fields`` on top."""
    data = {
        "csrf_token": form_token(console, f"/task-templates/{template_id}"),
        "client_id": "client-1",
        "priority": "",
        "input_data/region": '"APAC"',
        "input_data/title": "Weekly figures",
        "input_data/top": "10",
        "input_data/ratio": "",
        "input_data/draft": "true",
        "input_data/customer": "",
        "input_data/tags": '["q1"]',
        "input_data/anything": "",
        **fields,
    }
    return {k: v for k, v in data.items() if v is not None}


# ---------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/task-templates",
        "/task-templates/new",
        "/task-templates/tmpl_x",
        "/task-templates/tmpl_x/edit",
    ],
)
def test_it_sends_anonymous_visitors_to_the_login_page(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")


def test_it_refuses_anonymous_runs_and_deletes(client: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    with app.test_client() as other:
        token = form_token(other, "/login")
        for action in ("run", "delete"):
            response = other.post(
                f"/task-templates/{template_id}/{action}", data={"csrf_token": token}
            )
            assert response.status_code == 302 and response.location.startswith("/login")
    assert stored(app, template_id) is not None and all_tasks(app) == []


def test_it_links_the_templates_page_from_the_nav_after_chains(console: FlaskClient) -> None:
    body = text(console.get("/task-templates"))
    assert re.search(r'<a href="/task-templates" aria-current="page">Templates', body)
    nav = text(console.get("/tasks"))
    assert re.search(r'<a href="/task-templates"[^>]*>Templates', nav)
    assert nav.index(">Schedules") < nav.index(">Templates")
    if ">Chains" in nav:
        assert nav.index(">Chains") < nav.index(">Templates")


def test_it_shows_404_for_an_unknown_template(console: FlaskClient) -> None:
    for path in ("/task-templates/tmpl_nope", "/task-templates/tmpl_nope/edit"):
        response = console.get(path)
        assert response.status_code == 404
        assert "template &#39;tmpl_nope&#39; not found" in text(response)


# ---------------------------------------------------------------------------------------
# The list
# ---------------------------------------------------------------------------------------


def test_it_lists_templates_with_client_type_version_and_use(
    console: FlaskClient, app: Flask
) -> None:
    first = make_template(app, now=NOW - timedelta(minutes=2))
    second = make_template(
        app,
        now=NOW - timedelta(minutes=1),
        client_id="client-2",
        name="inbox <sweep>",
        description=None,
        task_type="inbox-sweep",
        capability_required="summarise-v1",
        default_input_data={},
        input_schema=None,
    )
    with app.app_context():
        principal = operator_principal("seed@example.com")
        templates.update_template(principal, first, {"default_priority": 9})
        templates.update_template(principal, first, {"default_priority": 8})
        for _ in range(2):
            templates.submit_from_template(principal, first, {"input_data": {"title": "x"}})
        db.session.remove()

    response = console.get("/task-templates")
    assert response.status_code == 200
    body = text(response)
    assert ROW.findall(body) == [second, first]  # newest first
    assert '<span data-stat="templates">2</span> templates' in body

    row = body[body.index(f'data-template-id="{first}"') :].split("</tr>")[0]
    assert ">sales-report</a>" in row and "Weekly sales figures" in row
    assert '<td data-label="Client" data-field="client">client-1</td>' in row
    assert '<span data-field="task-type">sales-report</span>' in row
    assert 'data-field="capability">report-v1</span>' in row
    assert '<span class="version" data-field="version">v3</span>' in row
    assert ">schema</span>" in row
    assert '<td data-label="Times used" class="num" data-field="used">2</td>' in row

    row = body[body.index(f'data-template-id="{second}"') :].split("</tr>")[0]
    assert "inbox &lt;sweep&gt;" in row  # escaped
    assert "client-2" in row and "v1" in row and ">schema<" not in row
    assert 'data-field="used">0</td>' in row


def test_it_shows_an_empty_state_and_a_new_template_button(console: FlaskClient) -> None:
    body = text(console.get("/task-templates"))
    assert "No templates yet." in body
    assert 'href="/task-templates/new"' in body and "New template" in body


def test_it_filters_templates_by_client_and_name(console: FlaskClient, app: Flask) -> None:
    report = make_template(app, now=NOW - timedelta(seconds=2))
    sweep = make_template(app, name="Inbox-Sweep", client_id="client-2")
    assert ROW.findall(text(console.get("/task-templates?client=client-2"))) == [sweep]
    assert ROW.findall(text(console.get("/task-templates?name=SWEEP"))) == [sweep]
    assert ROW.findall(text(console.get("/task-templates?name=report&client=client-1"))) == [report]
    empty = text(console.get("/task-templates?name=nothing"))
    assert "No templates match these filters." in empty
    assert '<span class="chip">name: nothing</span>' in empty

    response = console.get("/task-templates?page=0")
    assert response.status_code == 422
    assert "These filters cannot be applied" in text(response)


def test_it_serves_the_list_fragment_to_htmx_and_pages(console: FlaskClient, app: Flask) -> None:
    ids = [
        make_template(app, name=f"t{i:02}", now=NOW - timedelta(seconds=i))
        for i in range(PAGE_SIZE + 1)
    ]
    first = text(console.get("/task-templates"))
    assert first.startswith("<!doctype html>") and 'id="template-filters"' in first
    assert ROW.findall(first) == ids[:PAGE_SIZE] and "page 1 of 2" in first
    second = console.get("/task-templates?page=2", headers=HTMX)
    assert "HX-Request" in second.headers["Vary"]
    body = text(second)
    assert body.lstrip().startswith('<section id="template-results"') and "<html" not in body
    assert ROW.findall(body) == ids[PAGE_SIZE:]


# ---------------------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------------------


def test_it_shows_an_empty_form_with_a_preview_prompt(console: FlaskClient) -> None:
    response = console.get("/task-templates/new")
    assert response.status_code == 200
    body = text(response)
    for name in (
        "client_id",
        "name",
        "description",
        "task_type",
        "capability_required",
        "default_input_data",
        "default_priority",
        "default_max_retries",
        "default_retry_policy",
        "default_timeout_seconds",
        "input_schema",
    ):
        assert f'name="{name}"' in body, name
    assert "No schema: Run now offers one JSON box" in body
    assert 'hx-post="/task-templates/preview"' in body
    assert 'hx-include="#template-input-fields"' in body


def test_it_creates_a_template(console: FlaskClient, app: Flask) -> None:
    response = console.post("/task-templates/new", data=form_data(console))
    assert response.status_code == 302, text(response)
    template = only_template(app)
    assert response.location == f"/task-templates/{template.id}"
    assert (template.client_id, template.name) == ("client-1", "sales-report")
    assert template.description == "Weekly sales figures"
    assert (template.task_type, template.capability_required) == ("sales-report", "report-v1")
    assert template.default_input_data == {"region": "EMEA"}
    assert template.input_schema == SCHEMA
    assert (template.default_priority, template.default_max_retries) == (7, 2)
    assert template.default_retry_policy == "linear" and template.default_timeout_seconds == 600
    assert template.version == 1 and template.times_used == 0
    assert template.created_by == "admin:operator@example.com"

    page = text(console.get(response.location))
    assert "Template sales-report created (v1)." in flashes(page)


def test_it_creates_a_template_without_a_schema(console: FlaskClient, app: Flask) -> None:
    data = form_data(console, input_schema="  ", default_input_data="", description="")
    assert console.post("/task-templates/new", data=data).status_code == 302
    template = only_template(app)
    assert template.input_schema is None and template.default_input_data == {}
    assert template.description is None


@pytest.mark.parametrize(
    ("fields", "dom_id", "message"),
    [
        ({"default_input_data": "{region: EMEA}"}, "default_input_data", "not valid JSON"),
        (
            {"default_input_data": "[1]"},
            "default_input_data",
            "must be a JSON object {...}, got array",
        ),
        ({"input_schema": '{"type": "object",}'}, "input_schema", "not valid JSON"),
        ({"input_schema": "true"}, "input_schema", "must be a JSON object {...}, got boolean"),
        (
            {"input_schema": '{"type": "object", "properties": {"age": {"type": "integr"}}}'},
            "input_schema",
            "/properties/age/type: 'integr' is not valid under any of the given schemas",
        ),
        (
            {"input_schema": '{"properties": {"a": {"$ref": "https://example.com/s.json"}}}'},
            "input_schema",
            "/properties/a/$ref: 'https://example.com/s.json' does not resolve within the schema",
        ),
        (
            {"default_input_data": '{"top": 0, "region": "Mars"}'},
            "default_input_data",
            "/region: 'Mars' is not one of ['EMEA', 'APAC', 'AMER']; "
            "/top: 0 is less than the minimum of 1",
        ),
        ({"client_id": ""}, "client_id", "This field is required."),
        ({"name": " "}, "name", "This field is required."),
        ({"capability_required": "report v1"}, "capability_required", "use letters, digits"),
        ({"default_priority": "11"}, "default_priority", "between 1 and 10"),
        ({"default_retry_policy": "never"}, "default_retry_policy", "'never' is not one of"),
    ],
)
def test_it_shows_what_is_wrong_next_to_the_field(
    console: FlaskClient, app: Flask, fields: dict[str, str], dom_id: str, message: str
) -> None:
    response = console.post("/task-templates/new", data=form_data(console, **fields))
    assert response.status_code == 422
    body = text(response)
    assert message in field_error(body, dom_id)
    assert "The template was not created." in body and 'aria-invalid="true"' in body
    with app.app_context():
        assert db.session.scalars(db.select(TaskTemplate)).all() == []


def test_it_shows_a_taken_name_next_to_the_name(console: FlaskClient, app: Flask) -> None:
    make_template(app)
    response = console.post("/task-templates/new", data=form_data(console))
    assert response.status_code == 422
    body = text(response)
    assert field_error(body, "name") == "already used by another template of this client"
    # Another client may use the name.
    data = form_data(console, client_id="client-2")
    assert console.post("/task-templates/new", data=data).status_code == 302


def test_it_keeps_what_was_typed(console: FlaskClient) -> None:
    data = form_data(console, input_schema='{"type": "objekt"}', name="typed-name")
    body = text(console.post("/task-templates/new", data=data))
    assert 'value="typed-name"' in body
    assert "{&#34;type&#34;: &#34;objekt&#34;}" in body or "&quot;objekt&quot;" in body
    # The preview says why no Run now form can be made of it.
    assert 'data-preview="error"' in body


def test_it_needs_a_csrf_token_to_create(console: FlaskClient, app: Flask) -> None:
    data = form_data(console)
    del data["csrf_token"]
    assert console.post("/task-templates/new", data=data).status_code == 400
    with app.app_context():
        assert db.session.scalars(db.select(TaskTemplate)).all() == []


# ---------------------------------------------------------------------------------------
# The editor's preview of the Run now form
# ---------------------------------------------------------------------------------------


def preview(console: FlaskClient, **fields: str) -> str:
    token = form_token(console, "/task-templates/new")
    response = console.post(
        "/task-templates/preview", data=fields, headers={**HTMX, "X-CSRFToken": token}
    )
    assert response.status_code == 200
    return text(response)


def test_it_previews_the_run_form_of_the_schema_being_typed(console: FlaskClient) -> None:
    body = preview(
        console, input_schema=json.dumps(SCHEMA), default_input_data=json.dumps(DEFAULTS)
    )
    assert 'data-preview="inputs"' in body and "<html" not in body
    assert re.findall(r'data-input="([^"]+)"', body) == list(SCHEMA["properties"])
    assert " name=" not in body and "disabled" in body  # to look at, not to send
    assert "selected>APAC</option>" in run_input(body, "region")

    body = preview(console, input_schema='{"type": "object", "properties": {"a": {"type": 1}}}')
    assert 'data-preview="error"' in body and "Input schema /properties/a/type:" in body
    body = preview(console, input_schema=json.dumps(SCHEMA), default_input_data='{"top": 0}')
    assert "Default input /top: 0 is less than the minimum of 1" in body
    body = preview(console, input_schema="{", default_input_data="[]")
    assert "Default input: must be a JSON object" in body and "Input schema: not valid JSON" in body
    assert "No schema: Run now offers one JSON box" in preview(console, input_schema="")
    assert "names no properties" in preview(console, input_schema='{"type": "object"}')


def test_it_needs_a_csrf_token_to_preview(console: FlaskClient) -> None:
    response = console.post("/task-templates/preview", data={"input_schema": "{}"}, headers=HTMX)
    assert response.status_code == 400


# ---------------------------------------------------------------------------------------
# Editing
# ---------------------------------------------------------------------------------------


def test_it_fills_the_edit_form_from_the_template(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    response = console.get(f"/task-templates/{template_id}/edit")
    assert response.status_code == 200
    body = text(response)
    assert 'name="client_id"' not in body and 'value="client-1" readonly' in body
    assert 'value="sales-report"' in body and "Weekly sales figures" in body
    schema = re.search(r'<textarea [^>]*name="input_schema"[^>]*>([^<]*)</textarea>', body)
    assert schema and json.loads(html.unescape(schema.group(1))) == SCHEMA
    defaults = re.search(r'<textarea [^>]*name="default_input_data"[^>]*>([^<]*)</textarea>', body)
    assert defaults and json.loads(html.unescape(defaults.group(1))) == DEFAULTS
    assert '<span class="version version-lg" data-field="version">v1</span>' in body
    assert "Saving a change makes it v2" in body
    # The preview shows the saved schema's form.
    assert 'data-preview="inputs"' in body


def test_it_saves_a_change_as_a_new_version(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    path = f"/task-templates/{template_id}/edit"
    data = form_data(console, path, default_priority="3", description="Now with more figures")
    response = console.post(path, data=data)
    assert response.status_code == 302, text(response)
    assert response.location == f"/task-templates/{template_id}"
    template = stored(app, template_id)
    assert template is not None
    assert template.version == 2 and template.default_priority == 3
    assert template.description == "Now with more figures"
    assert template.client_id == "client-1"  # the form has no client to change
    page = text(console.get(response.location))
    assert "Saved as v2. Tasks made before keep v1&#39;s values." in flashes(page)
    assert re.search(r'<span class="version version-lg" data-field="version"[^>]*>v2</span>', page)

    # Saving what is already there makes no new version.
    form = text(console.get(path))
    assert "Saving a change makes it v3" in form
    response = console.post(path, data={**data, "csrf_token": form_token(console, path)})
    assert response.status_code == 302
    assert stored(app, template_id).version == 2  # type: ignore[union-attr]
    assert "Nothing changed: still v2." in flashes(text(console.get(response.location)))


def test_it_removes_the_schema_when_the_box_is_emptied(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    path = f"/task-templates/{template_id}/edit"
    data = form_data(console, path, input_schema="", default_input_data=json.dumps(DEFAULTS))
    assert console.post(path, data=data).status_code == 302
    template = stored(app, template_id)
    assert template is not None and template.input_schema is None and template.version == 2


def test_it_shows_edit_errors_and_keeps_the_version(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    make_template(app, name="taken")
    path = f"/task-templates/{template_id}/edit"
    response = console.post(path, data=form_data(console, path, name="taken"))
    assert response.status_code == 422
    body = text(response)
    assert "The template was not saved." in body
    assert field_error(body, "name") == "already used by another template of this client"

    bad = form_data(console, path, input_schema='{"type": "object", "required": "region"}')
    body = text(console.post(path, data=bad))
    assert "/required: 'region' is not of type 'array'" in field_error(body, "input_schema")
    assert stored(app, template_id).version == 1  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------
# One template
# ---------------------------------------------------------------------------------------


def test_it_shows_a_template_its_use_and_its_recent_tasks(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    with app.app_context():
        principal = operator_principal("seed@example.com")
        old, _ = templates.submit_from_template(
            principal, template_id, {"input_data": {"title": "a"}}, now=NOW
        )
        templates.update_template(principal, template_id, {"default_priority": 8})
        new, _ = templates.submit_from_template(
            principal, template_id, {"input_data": {"title": "b"}}, now=NOW + timedelta(seconds=1)
        )
        old_id, new_id = old.id, new.id
        db.session.remove()
    response = console.get(f"/task-templates/{template_id}")
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    body = text(response)
    assert "<h1>sales-report" in body and 'data-field="version" title=' in body
    assert ">v2</span></h1>" in body
    assert '<strong data-stat="times-used">2</strong>' in body
    assert '<dd class="mono" data-field="capability">report-v1</dd>' in body
    assert 'P8</span> <span class="muted">by default' in body
    assert TASK_ROW.findall(body) == [new_id, old_id]
    assert '<span data-stat="template-tasks">2</span> tasks' in body
    assert 'version-old" title="Made from an earlier version">v1</span>' in body
    assert 'class="version" title="The current version">v2</span>' in body
    assert 'aria-label="Input schema"' in body and 'aria-label="Default input"' in body
    assert "Delete template" in body and "The 2 tasks made from it keep" in body


def test_it_generates_the_run_form_from_the_schema(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    body = text(console.get(f"/task-templates/{template_id}"))
    assert re.findall(r'data-input="([^"]+)"', body) == list(SCHEMA["properties"])

    region = run_input(body, "region")  # a string enum: a select, the default chosen
    assert re.search(
        r'<select id="run-input-0" name="input_data/region" aria-required="true"', region
    )
    assert '<option value="&#34;APAC&#34;" selected>APAC</option>' in region
    assert '<option value="&#34;EMEA&#34;">EMEA</option>' in region
    assert '<option value=""' not in region  # required, with a default: no blank choice
    assert 'class="required-mark"' in region and "Sales region" in region
    assert "Template default: <code>APAC</code>" in region
    assert "one of 3" in region

    title = run_input(body, "title")  # a string: a text input, titled, required, no default
    assert re.search(r'<input type="text" value="" id="run-input-1" name="input_data/title"', title)
    assert 'maxlength="80"' in title and ">Report title<" in title
    assert '<span class="mono">title</span> · text' in title

    top = run_input(body, "top")  # an integer with bounds
    assert '<input type="number" value="10"' in top and 'name="input_data/top"' in top
    assert 'step="1" min="1" max="100"' in top and "whole number · 1 to 100" in top
    assert "Left empty: the template&#39;s <code>10</code>" in top

    ratio = run_input(body, "ratio")  # a number: any step; an exclusive bound is not shown
    assert 'type="number" value=""' in ratio and 'step="any"' in ratio and "max=" not in ratio

    draft = run_input(body, "draft")  # a boolean: a checkbox, ticked by the default
    assert re.search(
        r'<input type="checkbox" value="true" id="run-input-4" name="input_data/draft" checked>',
        draft,
    )

    customer = run_input(body, "customer")  # an object: a JSON box
    assert '<textarea class="mono" rows="3" id="run-input-5" name="input_data/customer"' in customer
    assert "JSON object" in customer
    tags = run_input(body, "tags")
    assert "[\n  &#34;q1&#34;\n]</textarea>" in tags and "JSON array" in tags
    anything = run_input(body, "anything")  # no type: JSON
    assert 'name="input_data/anything"' in anything and "<textarea" in anything

    assert 'name="input_data"' not in body  # no single JSON box beside the inputs
    assert re.search(r'<input [^>]*name="client_id"[^>]*value="client-1"', body)
    assert re.search(r'<input [^>]*name="priority"[^>]*placeholder="5"', body)


def test_it_offers_a_blank_choice_for_an_optional_enum(console: FlaskClient, app: Flask) -> None:
    schema = {
        "type": "object",
        "properties": {
            "format": {"enum": ["pdf", "csv", 3, None]},
            "size": {"type": "string", "enum": ["s", "m"]},
        },
    }
    template_id = make_template(app, input_schema=schema, default_input_data={"size": "m"})
    body = text(console.get(f"/task-templates/{template_id}"))
    fmt = run_input(body, "format")
    assert '<option value="" selected>Not set</option>' in fmt
    assert '<option value="3">3</option>' in fmt and '<option value="null">null</option>' in fmt
    size = run_input(body, "size")
    assert '<option value="">Template default (m)</option>' in size
    assert '<option value="&#34;m&#34;" selected>m</option>' in size


@pytest.mark.parametrize(
    "schema",
    [None, {"type": "object"}, {"type": "object", "properties": {}}],
    ids=["no schema", "no properties", "empty properties"],
)
def test_it_offers_one_json_box_without_properties(
    console: FlaskClient, app: Flask, schema: dict[str, Any] | None
) -> None:
    template_id = make_template(app, input_schema=schema, default_input_data={"region": "EMEA"})
    body = text(console.get(f"/task-templates/{template_id}"))
    assert "data-input=" not in body
    match = re.search(r'<textarea [^>]*name="input_data"[^>]*>([^<]*)</textarea>', body)
    assert match and json.loads(html.unescape(match.group(1))) == {"region": "EMEA"}


# ---------------------------------------------------------------------------------------
# Run now
# ---------------------------------------------------------------------------------------


def test_it_runs_a_task_from_the_template(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    with app.app_context():
        templates.update_template(
            operator_principal("seed@example.com"), template_id, {"default_priority": 4}
        )
        db.session.remove()
    data = run_data(
        console,
        template_id,
        priority="9",
        **{
            "input_data/region": '"EMEA"',
            "input_data/ratio": "0.25",
            "input_data/draft": None,  # unticked
            "input_data/customer": '{"id": "c-7"}',
            "input_data/anything": "[1, 2]",
        },
    )
    response = console.post(f"/task-templates/{template_id}/run", data=data)
    assert response.status_code == 302, text(response)
    (task,) = all_tasks(app)
    assert response.location == f"/tasks/{task.id}"
    assert (task.template_id, task.template_version) == (template_id, 2)
    assert task.client_id == "client-1" and task.priority == 9
    assert (task.task_type, task.capability_required) == ("sales-report", "report-v1")
    assert task.input_data == {
        "region": "EMEA",
        "title": "Weekly figures",
        "top": 10,
        "ratio": 0.25,
        "draft": False,
        "customer": {"id": "c-7"},
        "tags": ["q1"],
        "anything": [1, 2],
    }
    assert task.created_by == "admin:operator@example.com"
    assert stored(app, template_id).times_used == 1  # type: ignore[union-attr]
    page = text(console.get(response.location))
    assert "Task created from sales-report v2: it waits for an agent." in flashes(page)
    # The task page says which template, and which version of it, the task came from.
    assert f'href="/task-templates/{template_id}"' in page
    assert "made from v2" in page


def test_it_leaves_empty_inputs_to_the_template_defaults(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app, default_priority=6)
    data = run_data(console, template_id, **{"input_data/top": "", "input_data/tags": " "})
    response = console.post(f"/task-templates/{template_id}/run", data=data)
    assert response.status_code == 302, text(response)
    (task,) = all_tasks(app)
    assert task.priority == 6  # the template's
    assert task.input_data["top"] == 10 and task.input_data["tags"] == ["q1"]
    assert "ratio" not in task.input_data and "customer" not in task.input_data


def test_it_runs_from_the_single_json_box(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app, input_schema=None, default_input_data={"a": {"x": 1}, "b": 2})
    data = {
        "csrf_token": form_token(console, f"/task-templates/{template_id}"),
        "client_id": "",  # an operator may leave it to the template
        "priority": "",
        "input_data": '{"a": {"y": 2}}',
    }
    response = console.post(f"/task-templates/{template_id}/run", data=data)
    assert response.status_code == 302, text(response)
    (task,) = all_tasks(app)
    assert task.input_data == {"a": {"x": 1, "y": 2}, "b": 2} and task.client_id == "client-1"


@pytest.mark.parametrize(
    ("fields", "name", "message"),
    [
        ({"input_data/top": "0"}, "top", "0 is less than the minimum of 1"),
        ({"input_data/top": "2.5"}, "top", "'2.5' is not a whole number"),
        ({"input_data/ratio": "abc"}, "ratio", "'abc' is not a number"),
        ({"input_data/ratio": "1"}, "ratio", "1 is greater than or equal to the maximum of 1"),
        ({"input_data/title": ""}, "title", "required: type a value"),
        ({"input_data/title": "x" * 81}, "title", "is too long"),
        ({"input_data/region": '"Mars"'}, "region", "'\"Mars\"' is not one of the choices"),
        ({"input_data/customer": '{"name": "x"}'}, "customer", "'id' is a required property"),
        (
            {"input_data/customer": '{"id": 7}'},
            "customer",
            "/customer/id: 7 is not of type 'string'",
        ),
        ({"input_data/customer": "{id: 7}"}, "customer", "not valid JSON"),
        ({"input_data/tags": '"q1"'}, "tags", "'q1' is not of type 'array'"),
        ({"input_data/tags": "[1]"}, "tags", "/tags/0: 1 is not of type 'string'"),
    ],
)
def test_it_shows_violations_at_the_generated_field(
    console: FlaskClient, app: Flask, fields: dict[str, str], name: str, message: str
) -> None:
    template_id = make_template(app)
    response = console.post(
        f"/task-templates/{template_id}/run", data=run_data(console, template_id, **fields)
    )
    assert response.status_code == 422
    body = text(response)
    index = list(SCHEMA["properties"]).index(name)
    assert message in field_error(body, f"run-input-{index}")
    assert "No task was created." in body and "Check the fields marked below." in body
    assert 'aria-invalid="true"' in run_input(body, name)
    assert all_tasks(app) == []
    assert stored(app, template_id).times_used == 0  # type: ignore[union-attr]


def test_it_keeps_what_was_typed_when_a_run_fails(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    data = run_data(
        console,
        template_id,
        priority="3",
        **{"input_data/top": "500", "input_data/title": "Typed <title>", "input_data/draft": None},
    )
    body = text(console.post(f"/task-templates/{template_id}/run", data=data))
    assert 'value="Typed &lt;title&gt;"' in run_input(body, "title")
    assert 'value="500"' in run_input(body, "top")
    assert " checked" not in run_input(body, "draft")
    assert re.search(r'<input [^>]*name="priority"[^>]*value="3"', body)


def test_it_shows_a_required_property_without_an_input_as_a_form_error(
    console: FlaskClient, app: Flask
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}
    template_id = make_template(app, input_schema=schema, default_input_data={})
    data = {
        "csrf_token": form_token(console, f"/task-templates/{template_id}"),
        "client_id": "client-1",
        "input_data/a": "x",
    }
    response = console.post(f"/task-templates/{template_id}/run", data=data)
    assert response.status_code == 422
    body = text(response)
    assert "input: &#39;b&#39; is a required property" in body
    assert "Check the fields marked below." not in body


def test_it_shows_violations_in_the_single_json_box(console: FlaskClient, app: Flask) -> None:
    schema = {"type": "object", "maxProperties": 1}
    template_id = make_template(app, input_schema=schema, default_input_data={})
    path = f"/task-templates/{template_id}/run"
    token = form_token(console, f"/task-templates/{template_id}")
    body = text(console.post(path, data={"csrf_token": token, "input_data": "[1]"}))
    assert "must be a JSON object {...}, got array" in field_error(body, "input_data")
    response = console.post(path, data={"csrf_token": token, "input_data": '{"a": 1, "b": 2}'})
    assert response.status_code == 422
    assert "{&#39;a&#39;: 1, &#39;b&#39;: 2} has too many properties" in text(response)
    assert all_tasks(app) == []


def test_it_shows_a_client_that_is_not_the_templates_at_the_client(
    console: FlaskClient, app: Flask
) -> None:
    template_id = make_template(app)
    data = run_data(console, template_id, client_id="client-2")
    response = console.post(f"/task-templates/{template_id}/run", data=data)
    assert response.status_code == 422
    assert "belongs to client 'client-1', not 'client-2'" in field_error(
        text(response), "client_id"
    )
    data = run_data(console, template_id, priority="11")
    body = text(console.post(f"/task-templates/{template_id}/run", data=data))
    assert "between 1 and 10" in field_error(body, "priority")
    assert all_tasks(app) == []


def test_it_needs_a_csrf_token_to_run(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    data = run_data(console, template_id)
    del data["csrf_token"]
    assert console.post(f"/task-templates/{template_id}/run", data=data).status_code == 400
    assert all_tasks(app) == []


# ---------------------------------------------------------------------------------------
# Deleting
# ---------------------------------------------------------------------------------------


def test_it_deletes_a_template_its_tasks_stay(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    response = console.post(
        f"/task-templates/{template_id}/run", data=run_data(console, template_id)
    )
    assert response.status_code == 302
    page = text(console.get(f"/task-templates/{template_id}"))
    assert f'action="/task-templates/{template_id}/delete"' in page

    token = form_token(console, f"/task-templates/{template_id}")
    response = console.post(f"/task-templates/{template_id}/delete", data={"csrf_token": token})
    assert response.status_code == 302 and response.location == "/task-templates"
    assert stored(app, template_id) is None
    (task,) = all_tasks(app)
    assert task.template_id == template_id and task.template_version == 1
    body = text(console.get("/task-templates"))
    assert "Template sales-report deleted. Tasks made from it keep its id and version." in flashes(
        body
    )
    assert console.get(f"/task-templates/{template_id}").status_code == 404


def test_it_warns_before_deleting_a_template_schedules_use(
    console: FlaskClient, app: Flask
) -> None:
    from app.services import scheduling

    template_id = make_template(app)
    with app.app_context():
        scheduling.create_schedule(
            operator_principal("seed@example.com"),
            {
                "client_id": "client-1",
                "template_id": template_id,
                "interval_seconds": 3600,
                "input_data": {"title": "hourly"},
            },
        )
        db.session.remove()
    body = text(console.get(f"/task-templates/{template_id}"))
    assert "1 schedule makes runs from it: it will fail at the next run." in body
    assert "1 schedule uses it" in body


def test_it_needs_a_csrf_token_to_delete(console: FlaskClient, app: Flask) -> None:
    template_id = make_template(app)
    assert console.post(f"/task-templates/{template_id}/delete").status_code == 400
    assert stored(app, template_id) is not None
