"""/aitp/tasks/schedule: create, list, get, update, delete, pause, resume, run-now,
executions and validate; who may touch what, and what bad input gets back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import Schedule, ScheduleExecution, Task
from app.services import scheduling
from tests.api.lifecycle_support import detail, fail, report
from tests.api.support import T0, assert_error, load, parse_time
from tests.conftest import Api, Persona, Personas

BASE = "/aitp/tasks/schedule"
MINUTE = timedelta(minutes=1)


def schedule_body(**fields: Any) -> dict[str, Any]:
    return {"task_type": "report", "capability_required": "report-v1", **fields}


def create(api: Api, persona: Persona, **fields: Any) -> dict[str, Any]:
    response = api.post(BASE, persona, json=schedule_body(**fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def get(api: Api, persona: Persona, schedule_id: str) -> dict[str, Any]:
    response = api.get(f"{BASE}/{schedule_id}", persona)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def put(api: Api, persona: Persona, schedule_id: str, **fields: Any) -> dict[str, Any]:
    response = api.call("PUT", f"{BASE}/{schedule_id}", persona, json=fields)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def executions(api: Api, persona: Persona, schedule_id: str, **query: Any) -> dict[str, Any]:
    response = api.get(f"{BASE}/{schedule_id}/executions", persona, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def fire(app: Flask, now: datetime) -> scheduling.FireResult:
    """One firing pass, as the clock runs it, at ``now``."""
    with app.app_context():
        result = scheduling.fire_due(now=now)
        db.session.remove()
    return result


def schedule_rows(app: Flask) -> dict[str, list[dict[str, Any]]]:
    with app.app_context():
        rows = {}
        for model in (Schedule, ScheduleExecution, Task):
            table = model.__table__
            result = db.session.execute(select(table).order_by(*table.primary_key.columns))
            rows[table.name] = [dict(row) for row in result.mappings()]
        db.session.remove()
    return rows


@contextmanager
def nothing_written(app: Flask) -> Iterator[None]:
    before = schedule_rows(app)
    yield
    assert schedule_rows(app) == before


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


# ---------------------------------------------------------------------------------------
# Create
# ---------------------------------------------------------------------------------------


def test_it_creates_a_cron_schedule_in_its_zone(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    body = create(
        api,
        personas.client,
        cron_expression="0 9 * * 1-5",
        timezone="America/New_York",
        description="weekday report",
        input_data={"region": "us"},
        priority=7,
    )
    # T0 is Monday 09:00Z = 04:00 EST: the next weekday 09:00 in New York is today.
    assert body["next_run_at"] == "2026-03-02T14:00:00+00:00"
    assert body["next_run_local"] == "2026-03-02T09:00:00-05:00"
    assert body["kind"] == "cron"
    assert body["cron_expression"] == "0 9 * * 1-5"
    assert body["interval_seconds"] is None and body["run_at"] is None
    assert body["timezone"] == "America/New_York"
    assert body["schedule_description"] == "at 09:00 on Mon-Fri"
    assert body["status"] == "ACTIVE"
    assert body["client_id"] == "client-1" and body["created_by"] == "client:client-1"
    assert (body["total_runs"], body["failed_runs"], body["last_run_at"]) == (0, 0, None)
    assert (body["misfire_policy"], body["overlap_policy"]) == ("fire_once", "allow")
    assert (body["priority"], body["input_data"], body["description"]) == (
        7,
        {"region": "us"},
        "weekday report",
    )
    assert parse_time(body["created_at"]) == T0
    row = load(app, Schedule, body["schedule_id"])
    assert row.next_run_at == datetime(2026, 3, 2, 14, tzinfo=UTC)
    assert (row.client_id, row.status, row.timezone) == ("client-1", "ACTIVE", "America/New_York")
    assert get(api, personas.client, body["schedule_id"]) == body


def test_it_reads_six_fields_as_seconds_first(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    body = create(api, personas.client, cron_expression="*/20 * * * * *")
    assert body["next_run_at"] == "2026-03-02T09:00:20+00:00"
    assert body["timezone"] == "UTC"
    assert body["next_run_local"] == "2026-03-02T09:00:20+00:00"
    assert body["schedule_description"] == "every 20 seconds"


def test_it_normalises_the_expression_it_stores(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    body = create(api, personas.client, cron_expression="  0   12 *  * * ")
    assert body["cron_expression"] == "0 12 * * *"
    assert body["next_run_at"] == "2026-03-02T12:00:00+00:00"


def test_it_creates_an_interval_schedule(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    body = create(api, personas.client, interval_seconds=90, timezone="Asia/Tokyo")
    assert body["kind"] == "interval" and body["interval_seconds"] == 90
    assert body["next_run_at"] == "2026-03-02T09:01:30+00:00"
    assert body["next_run_local"] == "2026-03-02T18:01:30+09:00"
    assert body["schedule_description"] == "every 90 s"


def test_it_creates_a_one_time_schedule_from_any_offset(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    body = create(api, personas.client, run_at="2026-03-02T11:15:00+01:00", timezone="Europe/Paris")
    assert body["kind"] == "once"
    assert body["run_at"] == "2026-03-02T10:15:00+00:00"
    assert body["next_run_at"] == "2026-03-02T10:15:00+00:00"
    assert body["next_run_local"] == "2026-03-02T11:15:00+01:00"
    assert body["schedule_description"] == "once"
    assert load(app, Schedule, body["schedule_id"]).run_at == datetime(
        2026, 3, 2, 10, 15, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("timing", "named"),
    [
        ({}, {"cron_expression", "interval_seconds", "run_at"}),
        (
            {"cron_expression": "* * * * *", "interval_seconds": 60},
            {"cron_expression", "interval_seconds"},
        ),
        (
            {"interval_seconds": 60, "run_at": "2026-03-03T00:00:00Z"},
            {"interval_seconds", "run_at"},
        ),
        (
            {
                "cron_expression": "* * * * *",
                "interval_seconds": 60,
                "run_at": "2026-03-03T00:00:00Z",
            },
            {"cron_expression", "interval_seconds", "run_at"},
        ),
    ],
)
def test_it_needs_exactly_one_timing(
    app: Flask,
    api: Api,
    personas: Personas,
    clock: time_machine.Coordinates,
    timing: dict[str, Any],
    named: set[str],
) -> None:
    with nothing_written(app):
        error = assert_error(
            api.post(BASE, personas.client, json=schedule_body(**timing)), 422, "validation_error"
        )
    assert {d["field"] for d in error["details"]} == named
    assert "exactly one of" in error["message"]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"cron_expression": "61 * * * *"}, "cron_expression", "out of range 0-59"),
        ({"cron_expression": "* * *"}, "cron_expression", "expected 5 fields"),
        ({"cron_expression": "* * * * * * *"}, "cron_expression", "expected 5 fields"),
        ({"cron_expression": "0 0 30 2 *"}, "cron_expression", "never occurs"),
        ({"cron_expression": "@reboot"}, "cron_expression", "not supported"),
        ({"cron_expression": "*/0 * * * *"}, "cron_expression", "step"),
        ({"cron_expression": "* *\x1b * * *"}, "cron_expression", "control character"),
        ({"cron_expression": "x" * 201}, "cron_expression", "at most 200"),
        ({"cron_expression": ""}, "cron_expression", "at least 1"),
        (
            {"cron_expression": "* * * * *", "timezone": "Mars/Olympus"},
            "timezone",
            "unknown time zone",
        ),
        (
            {"cron_expression": "* * * * *", "timezone": "america/new_york"},
            "timezone",
            "America/New_York",
        ),
        (
            {"cron_expression": "* * * * *", "timezone": "../../etc/passwd"},
            "timezone",
            "unknown time zone",
        ),
        ({"interval_seconds": 60, "timezone": "localtime"}, "timezone", "unknown time zone"),
        ({"interval_seconds": 60, "timezone": "EST5EDT "}, "timezone", "unknown time zone"),
        ({"interval_seconds": 0}, "interval_seconds", "greater than or equal to 1"),
        ({"interval_seconds": -60}, "interval_seconds", "greater than or equal to 1"),
        ({"interval_seconds": "60"}, "interval_seconds", "valid integer"),
        ({"interval_seconds": 1.5}, "interval_seconds", "valid integer"),
        ({"interval_seconds": 10**12}, "interval_seconds", "less than or equal"),
        ({"run_at": "2026-03-02T08:59:59Z"}, "run_at", "in the past"),
        ({"run_at": "2026-03-02T09:00:00+00:00"}, "run_at", "in the past"),
        ({"run_at": "2026-03-02T12:00:00"}, "run_at", "timezone"),
        ({"run_at": "tomorrow"}, "run_at", "datetime"),
        ({"run_at": "9999-12-31T23:00:00Z", "timezone": "Asia/Tokyo"}, "run_at", "100 years"),
        ({"run_at": "0001-01-01T00:00:00+01:00"}, "run_at", ""),
        ({"cron_expression": ["*", "*"]}, "cron_expression", "string"),
        ({"cron_expression": "* * * * *", "misfire_policy": "sometimes"}, "misfire_policy", ""),
        ({"cron_expression": "* * * * *", "overlap_policy": "queue"}, "overlap_policy", ""),
        ({"cron_expression": "* * * * *", "priority": 11}, "priority", ""),
        ({"cron_expression": "* * * * *", "capability_required": "no spaces"}, "", ""),
        ({"cron_expression": "* * * * *", "next_run_at": "2026-03-03T00:00:00Z"}, "", ""),
        ({"cron_expression": "* * * * *", "status": "PAUSED"}, "status", "Extra inputs"),
    ],
)
def test_it_refuses_bad_timing_and_fields_naming_them(
    app: Flask,
    api: Api,
    personas: Personas,
    clock: time_machine.Coordinates,
    fields: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    field = field or next(k for k in fields if k != "cron_expression")
    with nothing_written(app):
        error = assert_error(
            api.post(BASE, personas.client, json=schedule_body(**fields)),
            422,
            "validation_error",
            field,
        )
    messages = " ".join(d["message"] for d in error["details"] if d["field"] == field)
    assert reason in messages, error


def test_it_refuses_a_nul_in_the_expression(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    with nothing_written(app):
        assert_error(
            api.post(BASE, personas.client, json=schedule_body(cron_expression="* * * * *\x00")),
            422,
            "validation_error",
            "cron_expression",
        )


def test_it_refuses_a_body_that_is_not_an_object(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    assert_error(api.post(BASE, personas.client, json=[schedule_body()]), 400, "bad_request")
    assert_error(
        api.post(BASE, personas.client, data=b"{", content_type="application/json"),
        400,
        "bad_request",
    )


def test_a_client_creates_only_for_itself(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    with nothing_written(app):
        error = assert_error(
            api.post(
                BASE,
                personas.client,
                json=schedule_body(interval_seconds=60, client_id="client-2"),
            ),
            403,
            "forbidden",
        )
    assert "client-2" in error["message"]
    own = create(api, personas.client, interval_seconds=60, client_id="client-1")
    assert own["client_id"] == "client-1"


def test_an_admin_must_name_the_client(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    with nothing_written(app):
        assert_error(
            api.post(BASE, personas.admin, json=schedule_body(interval_seconds=60)),
            422,
            "validation_error",
            "client_id",
        )
    body = create(api, personas.admin, interval_seconds=60, client_id="client-2")
    assert body["client_id"] == "client-2" and body["created_by"] == "admin:admin"
    # The client it names sees it as its own.
    assert (
        get(api, personas.other_client, body["schedule_id"])["schedule_id"] == body["schedule_id"]
    )


def test_agent_keys_and_anonymous_callers_are_refused(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60)["schedule_id"]
    _, bound_agent = api.register_agent(personas.fleet)
    calls = [
        ("POST", BASE, {"json": schedule_body(interval_seconds=60)}),
        ("GET", BASE, {}),
        ("GET", f"{BASE}/{schedule_id}", {}),
        ("PUT", f"{BASE}/{schedule_id}", {"json": {"priority": 2}}),
        ("DELETE", f"{BASE}/{schedule_id}", {}),
        ("POST", f"{BASE}/{schedule_id}/pause", {}),
        ("POST", f"{BASE}/{schedule_id}/resume", {}),
        ("POST", f"{BASE}/{schedule_id}/run-now", {}),
        ("GET", f"{BASE}/{schedule_id}/executions", {}),
        ("POST", f"{BASE}/validate", {"json": {"cron_expression": "* * * * *"}}),
    ]
    with nothing_written(app):
        for method, path, kwargs in calls:
            for agent in (personas.fleet, bound_agent):
                assert_error(api.call(method, path, agent, **kwargs), 403, "forbidden")
            assert_error(api.call(method, path, None, **kwargs), 401, "unauthorized")
            bad_key = Persona("ains_nope", "client")
            assert_error(api.call(method, path, bad_key, **kwargs), 401, "unauthorized")


def test_another_clients_schedule_is_not_found(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60)["schedule_id"]
    calls = [
        ("GET", f"{BASE}/{schedule_id}", {}),
        ("PUT", f"{BASE}/{schedule_id}", {"json": {"priority": 2}}),
        ("PUT", f"{BASE}/{schedule_id}", {"json": {"status": "PAUSED"}}),
        ("DELETE", f"{BASE}/{schedule_id}", {}),
        ("POST", f"{BASE}/{schedule_id}/pause", {}),
        ("POST", f"{BASE}/{schedule_id}/resume", {}),
        ("POST", f"{BASE}/{schedule_id}/run-now", {}),
        ("GET", f"{BASE}/{schedule_id}/executions", {}),
    ]
    with nothing_written(app):
        for method, path, kwargs in calls:
            error = assert_error(
                api.call(method, path, personas.other_client, **kwargs), 404, "not_found"
            )
            assert schedule_id in error["message"]
            # The same answer as for an id that does not exist at all.
            missing = path.replace(schedule_id, "sched_missing")
            assert_error(api.call(method, missing, personas.client, **kwargs), 404, "not_found")
    assert api.get(BASE, personas.other_client).get_json()["total"] == 0
    # An admin sees and manages every client's schedules.
    assert get(api, personas.admin, schedule_id)["client_id"] == "client-1"
    assert put(api, personas.admin, schedule_id, priority=2)["priority"] == 2


@pytest.mark.parametrize("schedule_id", ["sched_x\x00", "..", "%00", "a" * 500])
def test_hostile_ids_are_not_found(
    api: Api, personas: Personas, clock: time_machine.Coordinates, schedule_id: str
) -> None:
    assert_error(api.get(f"{BASE}/{schedule_id}", personas.client), 404)


# ---------------------------------------------------------------------------------------
# List
# ---------------------------------------------------------------------------------------


def test_it_lists_schedules_newest_first_with_filters_and_paging(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    mine = []
    for k in range(4):
        mine.append(create(api, personas.client, interval_seconds=60 + k)["schedule_id"])
        clock.shift(timedelta(seconds=1))
    theirs = create(api, personas.other_client, interval_seconds=60)["schedule_id"]
    clock.shift(timedelta(seconds=1))
    api.post(f"{BASE}/{mine[1]}/pause", personas.client)
    assert api.call("DELETE", f"{BASE}/{mine[2]}", personas.client).status_code == 200

    page = api.get(BASE, personas.client).get_json()
    assert [s["schedule_id"] for s in page["schedules"]] == [mine[3], mine[1], mine[0]]
    assert (page["total"], page["limit"], page["offset"]) == (3, 20, 0)

    paged = api.get(BASE, personas.client, query_string={"limit": 1, "offset": 1}).get_json()
    assert [s["schedule_id"] for s in paged["schedules"]] == [mine[1]]
    assert (paged["total"], paged["limit"], paged["offset"]) == (3, 1, 1)
    beyond = api.get(BASE, personas.client, query_string={"offset": 10}).get_json()
    assert (beyond["schedules"], beyond["total"]) == ([], 3)

    paused = api.get(BASE, personas.client, query_string={"status": "PAUSED"}).get_json()
    assert [s["schedule_id"] for s in paused["schedules"]] == [mine[1]]
    assert paused["total"] == 1

    # A client naming another client sees nothing of theirs.
    other = api.get(BASE, personas.client, query_string={"client_id": "client-2"}).get_json()
    assert (other["schedules"], other["total"]) == ([], 0)

    everyone = api.get(BASE, personas.admin).get_json()
    assert [s["schedule_id"] for s in everyone["schedules"]] == [theirs, mine[3], mine[1], mine[0]]
    only_two = api.get(BASE, personas.admin, query_string={"client_id": "client-2"}).get_json()
    assert [s["schedule_id"] for s in only_two["schedules"]] == [theirs]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "DELETED"}, "status"),
        ({"status": "active"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"sort": "name"}, "sort"),
    ],
)
def test_it_refuses_bad_list_queries(
    api: Api, personas: Personas, query: dict[str, Any], field: str
) -> None:
    assert_error(api.get(BASE, personas.client, query_string=query), 422, "validation_error", field)


# ---------------------------------------------------------------------------------------
# Update
# ---------------------------------------------------------------------------------------


def test_a_new_timing_counts_from_now_and_may_switch_kinds(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, cron_expression="0 * * * *")["schedule_id"]
    clock.shift(timedelta(minutes=20, seconds=7))  # 09:20:07

    as_interval = put(api, personas.client, schedule_id, interval_seconds=600)
    assert as_interval["kind"] == "interval"
    assert as_interval["cron_expression"] is None and as_interval["interval_seconds"] == 600
    assert as_interval["next_run_at"] == "2026-03-02T09:30:07+00:00"
    assert parse_time(as_interval["updated_at"]) == T0 + timedelta(minutes=20, seconds=7)

    clock.shift(timedelta(minutes=1))  # 09:21:07
    once = put(api, personas.client, schedule_id, run_at="2026-03-03T08:00:00-05:00")
    assert once["kind"] == "once"
    assert once["interval_seconds"] is None and once["cron_expression"] is None
    assert once["run_at"] == once["next_run_at"] == "2026-03-03T13:00:00+00:00"

    back = put(
        api,
        personas.client,
        schedule_id,
        cron_expression="30 9 * * *",
        timezone="Europe/London",
    )
    assert back["kind"] == "cron" and back["run_at"] is None
    assert back["next_run_at"] == "2026-03-02T09:30:00+00:00"
    assert back["next_run_local"] == "2026-03-02T09:30:00+00:00"

    # A new zone alone moves the same wall time.
    tokyo = put(api, personas.client, schedule_id, timezone="Asia/Tokyo")
    assert tokyo["cron_expression"] == "30 9 * * *"
    assert tokyo["next_run_at"] == "2026-03-03T00:30:00+00:00"
    assert tokyo["next_run_local"] == "2026-03-03T09:30:00+09:00"
    row = load(app, Schedule, schedule_id)
    assert row.next_run_at == datetime(2026, 3, 3, 0, 30, tzinfo=UTC)
    assert (row.cron_expression, row.interval_seconds, row.run_at) == ("30 9 * * *", None, None)


def test_it_updates_task_fields_and_policies_without_moving_the_next_run(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    created = create(api, personas.client, cron_expression="0 12 * * *", description="d")
    clock.shift(timedelta(hours=1))
    body = put(
        api,
        personas.client,
        created["schedule_id"],
        task_type="other",
        input_data={"x": 1},
        priority=1,
        max_retries=0,
        retry_policy="linear",
        timeout_seconds=30,
        retry_on_timeout=True,
        expires_in_seconds=120,
        misfire_policy="fire_all",
        overlap_policy="skip",
        description=None,
    )
    assert body["next_run_at"] == created["next_run_at"] == "2026-03-02T12:00:00+00:00"
    assert {k: body[k] for k in ("task_type", "input_data", "priority", "description")} == {
        "task_type": "other",
        "input_data": {"x": 1},
        "priority": 1,
        "description": None,
    }
    assert (body["max_retries"], body["retry_policy"], body["timeout_seconds"]) == (
        0,
        "linear",
        30,
    )
    assert (body["retry_on_timeout"], body["expires_in_seconds"]) == (True, 120)
    assert (body["misfire_policy"], body["overlap_policy"]) == ("fire_all", "skip")
    # An empty PUT changes nothing but the update time.
    again = put(api, personas.client, created["schedule_id"])
    assert {k: v for k, v in again.items() if k != "updated_at"} == {
        k: v for k, v in body.items() if k != "updated_at"
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"task_type": None}, "task_type"),
        ({"priority": None}, "priority"),
        ({"capability_required": None}, "capability_required"),
        ({"input_data": None}, "input_data"),
        ({"misfire_policy": None}, "misfire_policy"),
        ({"cron_expression": None}, "cron_expression"),
        ({"cron_expression": "* * *"}, "cron_expression"),
        ({"timezone": "Nowhere/City"}, "timezone"),
        ({"interval_seconds": 60, "cron_expression": "* * * * *"}, "interval_seconds"),
        ({"run_at": "2026-03-01T00:00:00Z"}, "run_at"),
        ({"run_at": "2026-03-05T00:00:00"}, "run_at"),
        ({"status": "DELETED"}, "status"),
        ({"status": "COMPLETED"}, "status"),
        ({"client_id": "client-2"}, "client_id"),
        ({"next_run_at": "2026-03-05T00:00:00Z"}, "next_run_at"),
        ({"priority": "9"}, "priority"),
    ],
)
def test_it_refuses_bad_updates_and_changes_nothing(
    app: Flask,
    api: Api,
    personas: Personas,
    clock: time_machine.Coordinates,
    fields: dict[str, Any],
    field: str,
) -> None:
    schedule_id = create(api, personas.client, cron_expression="0 12 * * *")["schedule_id"]
    with nothing_written(app):
        assert_error(
            api.call("PUT", f"{BASE}/{schedule_id}", personas.client, json=fields),
            422,
            "validation_error",
            field,
        )


def test_pause_and_resume_through_put(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60)["schedule_id"]
    assert put(api, personas.client, schedule_id, status="PAUSED")["status"] == "PAUSED"
    assert fire(app, T0 + 5 * MINUTE).fired == 0
    clock.shift(timedelta(minutes=5, seconds=30))
    resumed = put(api, personas.client, schedule_id, status="ACTIVE", interval_seconds=120)
    assert resumed["status"] == "ACTIVE"
    assert resumed["next_run_at"] == "2026-03-02T09:07:30+00:00"
    assert executions(api, personas.client, schedule_id)["total"] == 0


def test_a_new_timing_revives_a_completed_one_time_schedule(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, run_at="2026-03-02T10:00:00Z")["schedule_id"]
    fire(app, datetime(2026, 3, 2, 10, tzinfo=UTC))
    assert get(api, personas.client, schedule_id)["status"] == "COMPLETED"
    clock.shift(timedelta(hours=2))
    # Resuming what has finished is a conflict; a new run_at is a fresh start.
    assert_error(
        api.call("PUT", f"{BASE}/{schedule_id}", personas.client, json={"status": "ACTIVE"}),
        409,
        "conflict",
    )
    revived = put(api, personas.client, schedule_id, run_at="2026-03-02T12:00:00Z")
    assert revived["status"] == "ACTIVE"
    assert revived["next_run_at"] == "2026-03-02T12:00:00+00:00"
    assert revived["total_runs"] == 1


# ---------------------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------------------


def test_a_deleted_schedule_is_gone_and_never_fires(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60)["schedule_id"]
    fire(app, T0 + MINUTE)
    clock.shift(timedelta(seconds=90))

    response = api.call("DELETE", f"{BASE}/{schedule_id}", personas.client)

    assert response.status_code == 200
    assert response.get_json() == {
        "schedule_id": schedule_id,
        "status": "DELETED",
        "message": "Schedule cancelled successfully",
    }
    row = load(app, Schedule, schedule_id)
    assert (row.status, row.next_run_at) == ("DELETED", None)
    assert row.deleted_at == T0 + timedelta(seconds=90)
    for method, path in [
        ("GET", f"{BASE}/{schedule_id}"),
        ("DELETE", f"{BASE}/{schedule_id}"),
        ("POST", f"{BASE}/{schedule_id}/resume"),
        ("POST", f"{BASE}/{schedule_id}/run-now"),
        ("GET", f"{BASE}/{schedule_id}/executions"),
    ]:
        assert_error(api.call(method, path, personas.client), 404, "not_found")
    assert_error(
        api.call("PUT", f"{BASE}/{schedule_id}", personas.client, json={"status": "ACTIVE"}),
        404,
        "not_found",
    )
    assert api.get(BASE, personas.admin).get_json()["total"] == 0
    with nothing_written(app):
        assert fire(app, T0 + timedelta(days=1)).fired == 0
    # Its history stays: the run it made and that run's task.
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(ScheduleExecution)) == 1
        assert db.session.scalar(select(db.func.count()).select_from(Task)) == 1
        db.session.remove()


# ---------------------------------------------------------------------------------------
# Pause and resume
# ---------------------------------------------------------------------------------------


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, cron_expression="*/10 * * * *")["schedule_id"]
    paused = api.post(f"{BASE}/{schedule_id}/pause", personas.client)
    assert paused.status_code == 200 and paused.get_json()["status"] == "PAUSED"
    # Pausing what is paused is fine and changes nothing.
    assert api.post(f"{BASE}/{schedule_id}/pause", personas.client).get_json()["status"] == (
        "PAUSED"
    )
    for minutes in (10, 20, 30):
        assert fire(app, T0 + minutes * MINUTE).fired == 0

    clock.shift(timedelta(minutes=35))
    resumed = api.post(f"{BASE}/{schedule_id}/resume", personas.client)
    assert resumed.status_code == 200
    body = resumed.get_json()
    assert body["status"] == "ACTIVE"
    # 09:10, 09:20 and 09:30 fell in the pause: not owed.
    assert body["next_run_at"] == "2026-03-02T09:40:00+00:00"
    assert fire(app, T0 + 40 * MINUTE).fired == 1
    runs = executions(api, personas.client, schedule_id)["executions"]
    assert [(r["scheduled_for"], r["trigger"]) for r in runs] == [
        ("2026-03-02T09:40:00+00:00", "schedule")
    ]
    # Resuming what is active is fine too.
    assert api.post(f"{BASE}/{schedule_id}/resume", personas.client).status_code == 200


def test_pausing_a_finished_schedule_is_a_conflict(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    done = create(api, personas.client, run_at="2026-03-02T09:30:00Z")["schedule_id"]
    failed = create(api, personas.client, run_at="2026-03-02T09:30:00Z", misfire_policy="skip")[
        "schedule_id"
    ]
    with app.app_context():
        scheduling.fire_schedule(done, datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
        db.session.remove()
    fire(app, datetime(2026, 3, 2, 10, tzinfo=UTC))
    assert get(api, personas.client, done)["status"] == "COMPLETED"
    assert get(api, personas.client, failed)["status"] == "FAILED"
    with nothing_written(app):
        for schedule_id in (done, failed):
            for action in ("pause", "resume"):
                error = assert_error(
                    api.post(f"{BASE}/{schedule_id}/{action}", personas.client), 409, "conflict"
                )
                assert "ACTIVE and PAUSED" in error["message"]


# ---------------------------------------------------------------------------------------
# Run now
# ---------------------------------------------------------------------------------------


def test_run_now_creates_a_task_from_the_schedule_and_keeps_the_next_run(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    created = create(
        api,
        personas.client,
        cron_expression="0 12 * * *",
        task_type="digest",
        input_data={"to": ["a@example.com"]},
        priority=9,
        max_retries=1,
        timeout_seconds=45,
    )
    schedule_id = created["schedule_id"]
    clock.shift(timedelta(minutes=3))

    response = api.post(f"{BASE}/{schedule_id}/run-now", personas.client)

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    execution, task = body["execution"], body["task"]
    assert execution["schedule_id"] == schedule_id
    assert execution["trigger"] == "run_now"
    assert execution["status"] == "PENDING" and execution["task_status"] == "PENDING"
    assert execution["scheduled_for"] == execution["executed_at"] == "2026-03-02T09:03:00+00:00"
    assert execution["lateness_ms"] == 0
    assert execution["task_id"] == task["task_id"]
    assert (task["client_id"], task["task_type"], task["capability_required"]) == (
        "client-1",
        "digest",
        "report-v1",
    )
    assert (task["input_data"], task["priority"], task["max_retries"], task["timeout_seconds"]) == (
        {"to": ["a@example.com"]},
        9,
        1,
        45,
    )
    assert task["status"] == "PENDING"
    # The client sees the task as its own; its creation names the schedule.
    shown = detail(api, personas.client, task["task_id"])
    assert shown["events"][0]["actor"] == f"schedule:{schedule_id}"

    after = get(api, personas.client, schedule_id)
    assert after["next_run_at"] == created["next_run_at"] == "2026-03-02T12:00:00+00:00"
    assert after["last_run_at"] == "2026-03-02T09:03:00+00:00"
    assert after["total_runs"] == 1
    listed = executions(api, personas.client, schedule_id)
    assert [e["execution_id"] for e in listed["executions"]] == [execution["execution_id"]]


def test_run_now_works_on_a_paused_schedule_without_resuming_it(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60)["schedule_id"]
    api.post(f"{BASE}/{schedule_id}/pause", personas.client)
    clock.shift(timedelta(seconds=5))
    response = api.post(f"{BASE}/{schedule_id}/run-now", personas.client)
    assert response.status_code == 201
    after = get(api, personas.client, schedule_id)
    assert after["status"] == "PAUSED" and after["total_runs"] == 1


def test_a_second_run_now_in_the_same_instant_is_a_conflict(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60)["schedule_id"]
    assert api.post(f"{BASE}/{schedule_id}/run-now", personas.client).status_code == 201
    with nothing_written(app):
        assert_error(api.post(f"{BASE}/{schedule_id}/run-now", personas.client), 409, "conflict")
    clock.shift(timedelta(microseconds=1))
    assert api.post(f"{BASE}/{schedule_id}/run-now", personas.client).status_code == 201
    assert executions(api, personas.client, schedule_id)["total"] == 2


# ---------------------------------------------------------------------------------------
# Executions
# ---------------------------------------------------------------------------------------


def test_executions_are_newest_first_paged_and_follow_their_tasks(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        schedule_id = create(api, personas.client, interval_seconds=60, max_retries=0)[
            "schedule_id"
        ]
        for k in (1, 2, 3):
            assert fire(app, T0 + k * MINUTE + timedelta(milliseconds=k)).fired == 1
        clock.shift(timedelta(seconds=200))
        run_now = api.post(f"{BASE}/{schedule_id}/run-now", personas.client).get_json()

        page = executions(api, personas.client, schedule_id)
        assert page["total"] == 4 and (page["limit"], page["offset"]) == (20, 0)
        runs = page["executions"]
        assert [r["scheduled_for"] for r in runs] == [
            "2026-03-02T09:03:20+00:00",
            "2026-03-02T09:03:00+00:00",
            "2026-03-02T09:02:00+00:00",
            "2026-03-02T09:01:00+00:00",
        ]
        assert runs[0]["execution_id"] == run_now["execution"]["execution_id"]
        assert [r["trigger"] for r in runs] == ["run_now", "schedule", "schedule", "schedule"]
        assert [r["lateness_ms"] for r in runs] == [0, 3, 2, 1]
        assert {r["status"] for r in runs} == {"PENDING"}

        paged = executions(api, personas.client, schedule_id, limit=2, offset=1)
        assert [r["execution_id"] for r in paged["executions"]] == [
            r["execution_id"] for r in runs[1:3]
        ]
        assert (paged["total"], paged["limit"], paged["offset"]) == (4, 2, 1)
        assert_error(
            api.get(f"{BASE}/{schedule_id}/executions", personas.client, query_string={"limit": 0}),
            422,
            "validation_error",
            "limit",
        )

    # An agent runs them (on the real clock): the oldest completes, the next fails for good.
    agent_id, agent = api.register_agent(personas.fleet, slots=4)
    claimed = {t["task_id"] for t in api.claim(agent_id, agent, max_tasks=4)}
    oldest, second = runs[3]["task_id"], runs[2]["task_id"]
    assert claimed == {r["task_id"] for r in runs}
    assert report(api, agent, oldest, "complete", result_data={"rows": 3}).status_code == 200
    fail(api, agent, second, error_message="disk full", retryable=False)

    after = executions(api, personas.client, schedule_id)["executions"]
    assert [(r["status"], r["task_status"]) for r in after] == [
        ("PENDING", "ACTIVE"),
        ("PENDING", "ACTIVE"),
        ("FAILED", "FAILED"),
        ("COMPLETED", "COMPLETED"),
    ]
    assert after[3]["result_data"] == {"rows": 3}
    assert after[2]["error_message"] == "disk full"
    schedule = get(api, personas.client, schedule_id)
    assert (schedule["total_runs"], schedule["failed_runs"]) == (4, 1)
    assert schedule["last_run_at"] == "2026-03-02T09:03:20+00:00"
    assert schedule["next_run_at"] == "2026-03-02T09:04:00+00:00"
    listed = api.get(BASE, personas.client).get_json()["schedules"][0]
    assert (listed["total_runs"], listed["failed_runs"]) == (4, 1)


def test_a_skipped_run_is_listed_without_a_task(
    app: Flask, api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    schedule_id = create(api, personas.client, interval_seconds=60, overlap_policy="skip")[
        "schedule_id"
    ]
    fire(app, T0 + MINUTE)
    fire(app, T0 + 2 * MINUTE)
    newest, oldest = executions(api, personas.client, schedule_id)["executions"]
    assert (newest["status"], newest["task_id"], newest["task_status"]) == ("SKIPPED", None, None)
    assert oldest["task_id"] in newest["note"] and newest["error_message"] == newest["note"]
    assert get(api, personas.client, schedule_id)["total_runs"] == 1


# ---------------------------------------------------------------------------------------
# Validate
# ---------------------------------------------------------------------------------------


def test_validate_lists_the_next_runs_with_the_zone_offset(api: Api, personas: Personas) -> None:
    response = api.post(
        f"{BASE}/validate",
        personas.client,
        json={
            "cron_expression": "0 9 * * 1-5",
            "timezone": "Europe/London",
            "count": 4,
            "start_at": "2026-03-26T12:00:00+00:00",
        },
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["valid"] is True and body["error"] is None
    assert body["description"] == "at 09:00 on Mon-Fri"
    assert body["timezone"] == "Europe/London"
    # London moves to BST on Sunday 29 March.
    assert body["next_runs"] == [
        "2026-03-27T09:00:00+00:00",
        "2026-03-30T09:00:00+01:00",
        "2026-03-31T09:00:00+01:00",
        "2026-04-01T09:00:00+01:00",
    ]
    assert body["next_runs_utc"] == [
        "2026-03-27T09:00:00+00:00",
        "2026-03-30T08:00:00+00:00",
        "2026-03-31T08:00:00+00:00",
        "2026-04-01T08:00:00+00:00",
    ]


def test_validate_starts_from_now_and_lists_ten_by_default(
    api: Api, personas: Personas, clock: time_machine.Coordinates
) -> None:
    body = api.post(
        f"{BASE}/validate",
        personas.admin,
        json={"cron_expression": "30 2 * * *", "timezone": "America/New_York"},
    ).get_json()
    assert len(body["next_runs"]) == 10
    assert body["next_runs"][0] == "2026-03-03T02:30:00-05:00"
    # 2026-03-08 02:30 does not exist in New York: it runs at the change, 03:00 EDT.
    assert body["next_runs"][5] == "2026-03-08T03:00:00-04:00"
    assert body["next_runs_utc"][5] == "2026-03-08T07:00:00+00:00"
    assert body["next_runs"][6] == "2026-03-09T02:30:00-04:00"


def test_validate_lists_up_to_fifty(api: Api, personas: Personas) -> None:
    body = api.post(
        f"{BASE}/validate",
        personas.client,
        json={"cron_expression": "@hourly", "count": 50, "start_at": "2026-01-01T00:00:00Z"},
    ).get_json()
    assert len(body["next_runs"]) == 50
    assert body["next_runs"][-1] == "2026-01-03T02:00:00+00:00"


def test_validate_an_interval(api: Api, personas: Personas) -> None:
    body = api.post(
        f"{BASE}/validate",
        personas.client,
        json={
            "interval_seconds": 5400,
            "timezone": "Asia/Kolkata",
            "count": 2,
            "start_at": "2026-01-01T00:00:00Z",
        },
    ).get_json()
    assert body["next_runs"] == ["2026-01-01T07:00:00+05:30", "2026-01-01T08:30:00+05:30"]
    assert body["description"] == "every 5400 s"


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"cron_expression": "* * * * *", "count": 51}, "count", "less than or equal to 50"),
        ({"cron_expression": "* * * * *", "count": 0}, "count", "greater than or equal to 1"),
        ({"cron_expression": "* * * * *", "count": "5"}, "count", "valid integer"),
        ({"cron_expression": "0 25 * * *"}, "cron_expression", "hour field"),
        ({"cron_expression": "every day"}, "cron_expression", "expected 5 fields"),
        ({"cron_expression": "* * * * MON-XYZ"}, "cron_expression", "day-of-week"),
        ({"cron_expression": "* * * * *", "timezone": "Europe/Lndon"}, "timezone", "unknown"),
        ({"cron_expression": "* * * * *", "timezone": ""}, "timezone", "at least 1"),
        ({"cron_expression": "* * * * *", "timezone": None}, "timezone", "string"),
        ({}, "cron_expression", "give cron_expression or interval_seconds"),
        ({"cron_expression": "* * * * *", "interval_seconds": 5}, "interval_seconds", "only one"),
        ({"cron_expression": "* * * * *", "start_at": "2026-01-01T00:00:00"}, "start_at", ""),
        ({"cron_expression": "* * * * *", "start_at": "0001-01-01T00:00:00Z"}, "start_at", "1970"),
        ({"interval_seconds": 60, "start_at": "9999-12-30T00:00:00Z"}, "start_at", "100 years"),
        ({"cron_expression": "* * * * *", "extra": 1}, "extra", "Extra inputs"),
    ],
)
def test_validate_refuses_bad_input_naming_the_field_and_reason(
    api: Api, personas: Personas, fields: dict[str, Any], field: str, reason: str
) -> None:
    error = assert_error(
        api.post(f"{BASE}/validate", personas.client, json=fields),
        422,
        "validation_error",
        field,
    )
    messages = " ".join(d["message"] for d in error["details"] if d["field"] == field)
    assert reason in messages, error


def test_a_stored_expression_that_no_longer_parses_does_not_break_reading(
    app: Flask, api: Api, personas: Personas
) -> None:
    schedule_id = create(api, personas.client, cron_expression="0 9 * * *")["schedule_id"]
    with app.app_context():
        db.session.execute(
            db.update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(cron_expression="61 * * * *")
        )
        db.session.commit()
    listed = api.get(BASE, personas.client)
    assert listed.status_code == 200, listed.get_json()
    one = api.get(f"{BASE}/{schedule_id}", personas.client).get_json()
    assert one["schedule_description"] == "cron: 61 * * * * (invalid)"
