"""The audit service: appending rows safely, notes and tracked changes, reading by filter
and cursor, the CSV export, and retention."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from app.extensions import db
from app.models import AuditEvent, Schedule
from app.services import audit
from app.services.audit import AuditFilters, audit_settings
from app.services.errors import InvalidInput
from app.services.lifecycle import sweep
from tests.services.conftest import Actors

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def add(now: datetime, **fields: object) -> AuditEvent:
    values = {"actor": "client:acme", "action": "task.submit", **fields}
    return audit.record(**values, now=now)  # type: ignore[arg-type]


def test_it_appends_rows_with_text_made_storable_and_cut_to_size(app_ctx: Flask) -> None:
    event = add(
        T0,
        actor="operator:" + "x" * 1000,
        path="/ains/tasks/\x00\ud800",
        target_id="t" * 500,
        summary={"after": {"note": "a\x00b", "api_key": "ains_abc_secret", "n": float("nan")}},
    )
    event_id = event.id
    db.session.remove()
    stored = db.session.get(AuditEvent, event_id)
    assert stored is not None
    assert len(stored.actor) == 400 and len(stored.target_id or "") == 200
    assert stored.path == "/ains/tasks/\ufffd?"
    assert stored.summary == {"after": {"note": "a\ufffdb", "api_key": "[redacted]", "n": "nan"}}
    assert stored.outcome == "ok" and stored.created_at == T0
    with pytest.raises(ValueError, match="outcome must be one of"):
        add(T0, outcome="maybe")


def test_it_cuts_a_summary_too_large_to_glance_at(app_ctx: Flask) -> None:
    event = add(
        T0, summary={"before": {"text": "y" * 250}, **{f"k{i}": "z" * 250 for i in range(30)}}
    )
    assert event.summary is not None and event.summary["truncated"] is True
    assert len(json.dumps(event.summary)) < 1000


def test_notes_outside_an_audited_request_are_ignored(actors: Actors) -> None:
    assert audit.current_scope() is None
    audit.note(target_type="task", target_id="t1", before={"a": 1}, after={"a": 2})
    token = audit.open_scope()
    try:
        audit.note(target_type="task", target_id="t1", before={"a": 1}, after={"a": 2})
        scope = audit.current_scope()
        assert scope is not None and len(scope.notes) == 1
        assert audit.summary_of(scope.notes) == {"before": {"a": 1}, "after": {"a": 2}}
    finally:
        audit.close_scope(token)
    assert audit.current_scope() is None


def test_tracked_objects_show_only_what_changed_and_hide_payloads(actors: Actors) -> None:
    from app.services import scheduling

    token = audit.open_scope()
    try:
        schedule = scheduling.create_schedule(
            actors.client,
            {
                "task_type": "report",
                "capability_required": "report-v1",
                "cron_expression": "0 * * * *",
                "input_data": {"private": "words"},
            },
            now=T0,
        )
        scheduling.pause_schedule(actors.client, schedule.id, True, now=T0)
        scope = audit.current_scope()
        assert scope is not None
        created, paused = (audit.resolve(n) for n in scope.notes)
    finally:
        audit.close_scope(token)
    assert created is not None and created.before is None
    assert created.after is not None and created.after["input_data"] == "[changed]"
    assert created.after["cron_expression"] == "0 * * * *"
    assert paused is not None
    assert paused.before == {"status": "ACTIVE"} and paused.after == {"status": "PAUSED"}
    assert (paused.target_type, paused.target_id) == ("schedule", schedule.id)
    assert "words" not in json.dumps(audit.bounded(audit.summary_of(scope.notes)))
    assert db.session.get(Schedule, schedule.id) is not None


def test_it_pages_newest_first_by_cursor_and_filters_on_every_column(app_ctx: Flask) -> None:
    for i in range(5):
        add(T0 + timedelta(seconds=i), target_type="task", target_id=f"t{i}")
    same_time = [add(T0 + timedelta(seconds=10), action="schedule.update") for _ in range(3)]
    add(T0 + timedelta(seconds=20), actor="operator:a@x.io", action="user.login_failed",
        outcome="refused", status_code=401, address="10.1.2.3")  # fmt: skip

    page = audit.query(AuditFilters(), limit=3)
    assert [e.action for e in page.events] == [
        "user.login_failed",
        "schedule.update",
        "schedule.update",
    ]
    seen = [e.id for e in page.events]
    while page.next_cursor:
        page = audit.query(AuditFilters(), limit=3, cursor=page.next_cursor)
        seen += [e.id for e in page.events]
    assert len(seen) == len(set(seen)) == 9
    assert seen[1:4] == sorted((e.id for e in same_time), reverse=True)

    def ids(**filters: object) -> list[str | None]:
        return [e.target_id for e in audit.query(AuditFilters(**filters)).events]  # type: ignore[arg-type]

    assert ids(target_type="task", target_id="t3") == ["t3"]
    assert len(ids(action="schedule.*")) == 3
    assert len(ids(actor="operator:*")) == 1
    assert len(ids(outcome="refused")) == 1
    assert len(ids(address="10.1.2.3")) == 1
    assert ids(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3)) == ["t2", "t1"]
    assert ids(actor="client:acme_") == []  # _ and % are literal in a prefix
    assert len(ids(actor="client:acm*")) == 8
    with pytest.raises(InvalidInput):
        audit.query(AuditFilters(outcome="maybe"))
    with pytest.raises(InvalidInput):
        audit.query(AuditFilters(), cursor="bad")


def test_the_export_streams_a_header_and_every_matching_row(
    app_ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "EXPORT_BATCH", 2)  # several batches
    for i in range(5):
        add(T0 + timedelta(seconds=i), target_id=f"t{i}", summary={"after": {"n": i}})
    add(T0, actor="=cmd|' /C calc'!A0", action="task.cancel", target_id="@SUM(1)")
    chunks = list(audit.export_csv(AuditFilters(action="task.submit")))
    assert len(chunks) >= 4  # header, then a chunk per batch
    header, *rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert header == list(audit.CSV_COLUMNS)
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert [r["target_id"] for r in records] == ["t4", "t3", "t2", "t1", "t0"]
    assert json.loads(records[0]["summary"]) == {"after": {"n": 4}}
    assert records[0]["created_at"] == (T0 + timedelta(seconds=4)).isoformat()

    hostile = list(
        csv.reader(io.StringIO("".join(audit.export_csv(AuditFilters(action="task.cancel")))))
    )
    assert hostile[1][header.index("actor")] == "'=cmd|' /C calc'!A0"
    assert hostile[1][header.index("target_id")] == "'@SUM(1)"
    assert audit.csv_cell("-1") == "'-1" and audit.csv_cell("+1") == "'+1"
    assert audit.csv_cell("\t=1") == "'\t=1" and audit.csv_cell("ok") == "ok"


def test_rows_past_the_retention_period_are_pruned_by_the_sweep(
    app_ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_settings, "retention_days", 30)
    old = [add(T0 - timedelta(days=31, seconds=i)).id for i in range(3)]
    kept = add(T0 - timedelta(days=29)).id
    assert audit.prune(timedelta(days=30), T0, limit=2) == 2  # a batch at a time
    assert sweep(T0)["audit_events_pruned"] == 1
    assert sweep(T0)["audit_events_pruned"] == 0
    remaining = list(db.session.scalars(db.select(AuditEvent.id)))
    assert remaining == [kept] and not set(old) & set(remaining)
    # The default retention is a year.
    add(T0 - timedelta(days=364))
    monkeypatch.setattr(audit_settings, "retention_days", 365)
    assert audit.prune(now=T0) == 0
