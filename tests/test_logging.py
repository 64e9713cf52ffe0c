"""Structured logs and request ids: in-process, through a real gunicorn, and into a real
RQ worker's lines about a job queued during the request."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from rq import Queue

from app import webhook_queue_name
from app.extensions import redis_client
from app.lib import logs, ratelimit
from tests.conftest import ROOT, Api, Personas
from tests.processes import Process, rq_worker, start_web  # noqa: F401  (fixture)
from tests.ui.conftest import sign_in
from tests.webhook_receiver import Receiver

UUID_HEX = 32
# What an API caller might send that must never reach the log at INFO.
SECRET_INPUT = {"password": "hunter2-Sup3rS3cret-pw", "api_token": "sk_live_9f8e7d6c5b4a39281"}
WEBHOOK_SECRET = "whsec-never-logged-0123456789abcdef"


def is_generated(value: str | None) -> bool:
    return (
        value is not None and len(value) == UUID_HEX and all(c in "0123456789abcdef" for c in value)
    )


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines the app logs at INFO and above during the test, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield lines
    finally:
        root.removeHandler(handler)


# --------------------------------------------------------------------------- request ids


def test_it_echoes_a_valid_request_id_on_api_ui_and_error_responses(
    api: Api, personas: Personas
) -> None:
    given = "req-2026.11/30:abc_DEF~1"
    answers = {
        "api": api.get("/ains/tasks", personas.client, headers={"X-Request-ID": given}),
        "ui": api.get("/login", headers={"X-Request-ID": given}),
        "health": api.get("/health", headers={"X-Request-ID": given}),
        "401": api.get("/ains/tasks", headers={"X-Request-ID": given}),
        "404": api.get("/ains/tasks/nope", personas.client, headers={"X-Request-ID": given}),
        "404 ui": api.get("/no/such/page", headers={"X-Request-ID": given}),
        "405": api.call("DELETE", "/health", headers={"X-Request-ID": given}),
        "422": api.post(
            "/ains/tasks", personas.client, json={"priority": "x"}, headers={"X-Request-ID": given}
        ),
    }
    assert {k: (r.status_code, r.headers.get("X-Request-ID")) for k, r in answers.items()} == {
        "api": (200, given),
        "ui": (200, given),
        "health": (200, given),
        "401": (401, given),
        "404": (404, given),
        "404 ui": (404, given),
        "405": (405, given),
        "422": (422, given),
    }


def test_it_generates_an_id_when_none_is_given_and_a_new_one_per_request(api: Api) -> None:
    first = api.get("/health").headers.get("X-Request-ID")
    second = api.get("/health").headers.get("X-Request-ID")
    assert is_generated(first) and is_generated(second) and first != second


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "x" * 129,
        "has space",
        "tab\tinside",
        "vertical\x0btab",
        "nul\x00byte",
        "del\x7f",
        "ünïcode",
        "<script>alert(1)</script>\x1b[31m",
    ],
    ids=["empty", "129 chars", "space", "tab", "vt", "nul", "del", "unicode", "escape"],
)
def test_it_replaces_a_hostile_request_id(
    api: Api, hostile: str, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    raw = hostile.encode("utf-8").decode("latin-1")  # as a header's bytes arrive
    response = api.get("/health", headers={"X-Request-ID": raw})
    echoed = response.headers.get("X-Request-ID")
    assert response.status_code == 200
    assert is_generated(echoed), echoed
    [line] = [line for line in log_lines() if line["logger"] == "ains.request"]
    assert line["request_id"] == echoed


def test_it_keeps_an_id_of_exactly_128_visible_characters(api: Api) -> None:
    given = "A" * 127 + "~"
    assert api.get("/health", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


def test_a_rate_limited_answer_has_the_id_too(app: Flask, api: Api, personas: Personas) -> None:
    saved = dict(app.config)
    app.config.update(RATE_LIMIT_READ="1/hour")
    ratelimit.init_app(app)
    try:
        api.get("/ains/tasks", personas.client)
        refused = api.get("/ains/tasks", personas.client, headers={"X-Request-ID": "flood-1"})
    finally:
        app.config.clear()
        app.config.update(saved)
        ratelimit.init_app(app)
    assert refused.status_code == 429
    assert refused.headers["X-Request-ID"] == "flood-1"


def test_the_audit_row_keeps_the_request_id_the_response_gave(api: Api, personas: Personas) -> None:
    response = api.post("/ains/tasks", personas.client, json={}, headers={"X-Request-ID": "\x01"})
    given = response.headers["X-Request-ID"]
    page = api.get("/ains/audit-events", personas.admin).get_json()
    [row] = [r for r in page["events"] if r["action"] == "task.submit"]
    assert is_generated(given) and row["request_id"] == given


# --------------------------------------------------------------------------- log lines


def test_each_request_logs_one_json_line_with_its_id_and_caller(
    api: Api, personas: Personas, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    response = api.get(
        "/ains/tasks?status=PENDING&limit=3", personas.client, headers={"X-Request-ID": "trace-1"}
    )
    assert response.status_code == 200
    [line] = [line for line in log_lines() if line["logger"] == "ains.request"]
    assert set(line) >= {"ts", "level", "logger", "message", "request_id"}
    assert line["request_id"] == "trace-1"
    assert line["level"] == "INFO"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/ains/tasks", 200)
    assert line["message"] == "GET /ains/tasks 200"  # no query string
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert line["remote_addr"] == "127.0.0.1"
    assert line["actor"] == "client:client-1"
    assert line["ts"].endswith("+00:00") and "T" in line["ts"]


def test_lines_logged_during_a_request_carry_its_id_and_others_none(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    marker = logging.getLogger("tests.marker")
    other = Flask("marker")  # the app's hooks on an app with a view that logs
    logs.install_request_ids(other)

    @other.get("/")
    def log_marker() -> str:
        marker.warning("inside the view", extra={"detail": 42})
        return "ok"

    assert other.test_client().get("/", headers={"X-Request-ID": "inside-1"}).status_code == 200
    marker.warning("outside any request")
    lines = [line for line in log_lines() if line["logger"] == "tests.marker"]
    assert [(x["message"], x["request_id"]) for x in lines] == [
        ("inside the view", "inside-1"),
        ("outside any request", None),
    ]
    assert lines[0]["detail"] == 42 and lines[0]["level"] == "WARNING"


def test_an_exception_stays_on_one_json_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    out = logs.JsonFormatter().format(record)
    assert "\n" not in out
    parsed = json.loads(out)
    assert parsed["message"] == "failed" and "ValueError: boom" in parsed["exc"]


def test_the_text_format_names_the_request_and_job() -> None:
    with logs.job_context("job-7", {"request_id": "req-9"}):
        record = logging.getLogger("x").makeRecord(
            "x", logging.INFO, __file__, 1, "hello %s", ("there",), None, extra={"n": 1}
        )
    assert logs.TextFormatter().format(record).endswith(" INFO x [req-9 job-7]: hello there n=1")


def test_a_caller_may_pass_extra_fields_named_like_ours() -> None:
    """RQ logs a failed job with extra={"job_id": ...}: that must not raise."""
    with logs.job_context("job-1", {"request_id": "req-1"}):
        record = logging.getLogger("x").makeRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            "m",
            None,
            None,
            extra={"job_id": "job-1", "request_id": "z"},
        )
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["request_id"], line["job_id"]) == ("req-1", "job-1")


def test_a_job_context_ignores_a_hostile_request_id_in_job_meta() -> None:
    with logs.job_context("job-1", {"request_id": "bad\nid"}):
        assert logs.current_request_id() is None
    with logs.job_context("job-1", {"request_id": ["not", "text"]}):
        assert logs.current_request_id() is None


def test_no_secret_input_or_api_key_is_logged_at_info(
    api: Api, personas: Personas, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    _, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client, input_data=SECRET_INPUT)
    api.post("/ains/tasks", personas.client, json={"input_data": SECRET_INPUT})  # refused: 422
    api.get("/ains/tasks", headers={"Authorization": f"Bearer {personas.client.key}x"})  # 401
    api.post(
        "/ains/webhooks",
        personas.client,
        json={"url": "http://127.0.0.1:9/hook", "secret": WEBHOOK_SECRET},
    )
    assert api.get(f"/ains/tasks/{task['task_id']}", personas.client).status_code == 200
    text = "\n".join(json.dumps(line) for line in log_lines())
    assert "ains.request" in text  # the capture saw the requests
    for secret in (
        personas.client.key,
        personas.fleet.key,
        agent.key,
        WEBHOOK_SECRET,
        *SECRET_INPUT.values(),
    ):
        assert secret not in text


def test_a_console_request_names_the_operator_and_never_the_password(
    app: Flask, operator: dict[str, str], log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    client = app.test_client()
    signed_in = sign_in(client, operator["email"], operator["password"])
    assert signed_in.status_code == 302
    assert client.get("/", headers={"X-Request-ID": "console-1"}).status_code == 200
    lines = log_lines()
    [page] = [x for x in lines if x["request_id"] == "console-1"]
    assert page["actor"] == f"operator:{operator['email']}"
    [login] = [x for x in lines if x.get("path") == "/login" and x["method"] == "POST"]
    assert login["status"] == 302
    assert operator["password"] not in json.dumps(lines)


def test_warnings_and_uncaught_exceptions_come_as_json_lines_too() -> None:
    script = (
        "import threading, warnings\n"
        "from app.lib import logs\n"
        "logs.configure_logging('json', 'INFO')\n"
        "warnings.warn('careful', UserWarning)\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='doomed'); t.start(); t.join()\n"
        "raise RuntimeError('the end')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["level"], x["logger"]) for x in lines] == [
        ("WARNING", "py.warnings"),
        ("CRITICAL", "ains.uncaught"),
        ("CRITICAL", "ains.uncaught"),
    ]
    assert "careful" in lines[0]["message"]
    assert lines[1]["message"] == "uncaught exception in thread doomed"
    assert "ZeroDivisionError" in lines[1]["exc"] and "RuntimeError: the end" in lines[2]["exc"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("name", "value"), [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD"), ("LOG_LEVEL", "info")]
)
def test_a_bad_log_setting_fails_at_start_naming_it(name: str, value: str) -> None:
    env = {**os.environ, name: value}
    done = subprocess.run(
        [sys.executable, "-c", "import app.config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"{name} must be one of" in done.stderr


# --------------------------------------------------------------------------- real processes


def json_lines(process: Process) -> list[dict[str, Any]]:
    """Every line of the process's output, parsed: one that is not JSON fails the test."""
    parsed = []
    for line in process.output().splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{process.name}: not a JSON line: {line!r}") from None
    return parsed


@pytest.mark.e2e
def test_gunicorn_logs_only_json_lines_with_request_ids_and_no_secrets(
    app: Flask, personas: Personas
) -> None:
    server = start_web(app, name="logging-web", LOG_FORMAT="json", LOG_LEVEL="INFO")
    try:
        headers = {"Authorization": f"Bearer {personas.client.key}", "X-Request-ID": "gw-1"}
        submitted = requests.post(
            f"{server.url}/ains/tasks?source=test",
            json={
                "task_type": "report",
                "capability_required": "report-v1",
                "input_data": SECRET_INPUT,
            },
            headers=headers,
            timeout=30,
        )
        assert submitted.status_code == 201, submitted.text
        assert submitted.headers["X-Request-ID"] == "gw-1"
        missing = requests.get(f"{server.url}/nowhere", timeout=30)
        assert is_generated(missing.headers["X-Request-ID"])
        server.process.wait_for_line(missing.headers["X-Request-ID"])
    finally:
        server.process.stop()
    lines = json_lines(server.process)
    assert any(x["logger"] == "gunicorn.error" and "Listening at" in x["message"] for x in lines)
    [submit] = [x for x in lines if x.get("request_id") == "gw-1"]
    assert submit["logger"] == "ains.request"
    assert (submit["method"], submit["path"], submit["status"]) == ("POST", "/ains/tasks", 201)
    assert submit["actor"] == "client:client-1" and submit["remote_addr"] == "127.0.0.1"
    assert any(x.get("path") == "/nowhere" and x["status"] == 404 for x in lines)
    output = server.process.output()
    assert personas.client.key not in output
    assert all(value not in output for value in SECRET_INPUT.values())
    assert '"/ains/tasks?source=test' not in output


@pytest.mark.e2e
def test_the_worker_logs_a_job_with_the_id_of_the_request_that_queued_it(
    app: Flask,
    api: Api,
    personas: Personas,
    rq_worker: Process,  # noqa: F811  (the fixture imported above)
) -> None:
    receiver = Receiver(default=500)  # a failed delivery is what the job logs at INFO
    # A job that fails first: RQ logs it (with fields of its own) and the worker goes on.
    Queue(webhook_queue_name(app.config), connection=redis_client(app.config["REDIS_URL"])).enqueue(
        "builtins.int", "not a number", meta={"request_id": "trace-failing-job"}
    )
    try:
        created = api.post(
            "/ains/webhooks",
            personas.client,
            json={"url": receiver.url, "secret": WEBHOOK_SECRET},
        )
        assert created.status_code == 201, created.get_json()
        ping = api.post(
            f"/ains/webhooks/{created.get_json()['webhook_id']}/test",
            personas.client,
            headers={"X-Request-ID": "trace-webhook-7"},
        )
        assert ping.status_code == 202, ping.get_json()
        line = rq_worker.wait_for_line('"request_id": "trace-webhook-7"', timeout=60)
    finally:
        receiver.stop()
    parsed = json.loads(line)
    delivery_id = ping.get_json()["delivery_id"]
    assert parsed["logger"] == "jobs.webhooks"
    assert parsed["message"].startswith(f"webhook delivery {delivery_id}: ")
    assert parsed["job_id"] == f"webhook-{delivery_id}"
    time.sleep(0.2)  # let the worker finish its lines about the job
    lines = json_lines(rq_worker)
    failed = [x for x in lines if x["request_id"] == "trace-failing-job"]
    assert failed and all(x["level"] == "ERROR" for x in failed)
    assert any("ValueError: invalid literal" in x["message"] for x in failed)
    assert WEBHOOK_SECRET not in rq_worker.output()
    # The worker's own lines carry no request id.
    assert {x["request_id"] for x in lines} <= {None, "trace-webhook-7", "trace-failing-job"}
