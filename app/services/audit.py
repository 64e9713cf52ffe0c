"""The audit trail: record actions, let domain code note what changed, read, export, prune.

The request hook (app/auditing.py) opens a *scope* for each state-changing request; a
service that changes something worth showing calls ``note(...)`` with a small before and
after, knowing nothing of Flask. When the request has finished and its transaction is
over, the hook writes one row with whatever was noted. Outside a scope (jobs, the CLI)
``note`` does nothing: those paths record their effects in task events already.

Rows are appended and never changed; ``prune`` is the only delete, for retention.
"""

from __future__ import annotations

import contextvars
import copy
import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import ColumnElement, and_, delete, inspect, or_
from sqlalchemy.orm.exc import ObjectDeletedError

from app.extensions import db
from app.lib.clock import as_utc, isoformat, utcnow
from app.lib.cursors import BadCursor, decode_cursor, encode_cursor
from app.models import AuditEvent, AuditOutcome
from app.models.base import plain_insert
from app.services.errors import InvalidInput

# A summary is a glance, not a copy: anything larger is cut down to this.
MAX_SUMMARY_CHARS = 4000
MAX_NOTES = 50
MAX_STRING = 300
# Values under keys like these never reach the log, whatever a caller passes.
SECRET_KEY = re.compile(r"secret|password|passwd|token|api_key|key_hash|authorization|cookie", re.I)
REDACTED = "[redacted]"
HIDDEN, CHANGED = "[hidden]", "[changed]"
MARKERS = (HIDDEN, CHANGED)
# Columns shown only as changed: payloads (never copied into the log) and secrets.
OMITTED_FIELD = re.compile(
    r"secret|password|token|hash|sealed|input|result|data|body|payload|schema|metadata|headers",
    re.I,
)
PRUNE_BATCH = 5000
EXPORT_BATCH = 1000


@dataclass
class AuditSettings:
    """Filled from the app config at start-up."""

    retention_days: int = 365
    agent_work: bool = False

    def configure(self, config: Mapping[str, Any]) -> None:
        self.retention_days = config["AUDIT_RETENTION_DAYS"]
        self.agent_work = config["AUDIT_AGENT_WORK"]


audit_settings = AuditSettings()


@dataclass
class Note:
    """What a service said about the action in progress."""

    target_type: str | None = None
    target_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    action: str | None = None
    # track(): a model object whose fields are compared with ``before`` when the row is
    # written, after the request's transaction, so "after" is what was committed.
    tracked: Any = None
    fields: tuple[str, ...] = ()


@dataclass
class Scope:
    """The notes of one request (or other unit of work) being audited."""

    notes: list[Note] = field(default_factory=list)


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("audit_scope", default=None)


def open_scope() -> contextvars.Token[Scope | None]:
    """Start collecting notes for the current unit of work; pass the token to close_scope."""
    return _current.set(Scope())


def close_scope(token: contextvars.Token[Scope | None]) -> None:
    _current.reset(token)


def current_scope() -> Scope | None:
    return _current.get()


def note(
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    action: str | None = None,
) -> None:
    """Attach a before/after summary (and the target, or a better action name) to the action
    being audited. Pass small dicts of the fields that matter, never secrets or bodies."""
    scope = _current.get()
    if scope is None or len(scope.notes) >= MAX_NOTES:
        return
    scope.notes.append(
        Note(
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else None,
            before=before,
            after=after,
            action=action,
        )
    )


def track(obj: Any, target_type: str, *, fields: Sequence[str] | None = None) -> None:
    """Note a model object the action is about to change (or has just made), before it
    changes: the audit row shows the fields that differ once the request is over.

    Payload and secret columns (input, result, schema, secret, hash...) appear only as
    changed or not, never with their values.
    """
    scope = _current.get()
    if scope is None or len(scope.notes) >= MAX_NOTES:
        return
    names = tuple(fields) if fields else default_fields(obj)
    state = inspect(obj)
    before = None
    if state.persistent:
        before = {name: copy.deepcopy(getattr(obj, name)) for name in names}
    object_id = getattr(obj, "id", None)
    scope.notes.append(
        Note(
            target_type=target_type,
            target_id=str(object_id) if object_id is not None else None,
            before=before,
            tracked=obj,
            fields=names,
        )
    )


def default_fields(obj: Any) -> tuple[str, ...]:
    """Every column but the bookkeeping ones."""
    return tuple(
        attr.key for attr in inspect(type(obj)).column_attrs if attr.key not in ("updated_at",)
    )


def elide(name: str, value: Any, *, side: str) -> Any:
    """What a summary shows of a field: payloads and secrets only as hidden or changed."""
    if OMITTED_FIELD.search(name):
        return HIDDEN if side == "before" else CHANGED
    if name == "url" and isinstance(value, str):
        return without_credentials(value)
    return value


def without_credentials(url: str) -> str:
    """scheme://host/path: user info and the query often carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def resolve(note: Note) -> Note | None:
    """A tracked note turned into its before/after; None when nothing was made after all."""
    obj = note.tracked
    if obj is None:
        return note
    state = inspect(obj)
    if state.was_deleted or state.deleted:
        after = None
    elif not state.persistent:
        return None  # created, then rolled back
    else:
        try:
            after = {name: getattr(obj, name) for name in note.fields}
        except ObjectDeletedError:
            after = None
    target_id = note.target_id or (str(obj.id) if getattr(obj, "id", None) is not None else None)
    before = note.before
    if before is not None and after is not None:
        changed = [name for name in note.fields if before.get(name) != after.get(name)]
        if not changed:
            return None
        before = {name: before.get(name) for name in changed}
        after = {name: after.get(name) for name in changed}
    elif after is not None:  # created: what it was made with
        after = {name: value for name, value in after.items() if value is not None}
    return Note(
        target_type=note.target_type,
        target_id=target_id,
        before={k: elide(k, v, side="before") for k, v in before.items()} if before else None,
        after={k: elide(k, v, side="after") for k, v in after.items()} if after else None,
        action=note.action,
    )


def clean_text(value: Any, limit: int) -> str | None:
    """Text PostgreSQL can store (no NUL, no lone surrogate), at most ``limit`` characters."""
    if value is None:
        return None
    text = str(value).encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text[:limit]


def scrub(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy with secret-looking keys redacted and long strings cut."""
    if depth > 6:
        return "…"
    if isinstance(value, dict):
        return {
            clean_text(k, 100): REDACTED
            if SECRET_KEY.search(str(k)) and v not in MARKERS
            else scrub(v, depth + 1)
            for k, v in list(value.items())[:50]
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, depth + 1) for v in list(value)[:50]]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, datetime):
        return isoformat(value)
    return clean_text(value, MAX_STRING)


def bounded(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary scrubbed, and replaced by a marker when it is still too large."""
    if not summary:
        return None
    safe = scrub(summary)
    if len(json.dumps(safe, default=str)) > MAX_SUMMARY_CHARS:
        return {"truncated": True, "keys": sorted(safe)[:20]}
    return safe


def summary_of(notes: list[Note]) -> dict[str, Any] | None:
    """One note becomes {before, after}; several become a list of {target, before, after}."""
    resolved = [resolve(n) for n in notes]
    changes = [n for n in resolved if n is not None and (n.before or n.after)]
    if not changes:
        return None
    if len(changes) == 1:
        only = changes[0]
        return {"before": only.before, "after": only.after}
    return {
        "changes": [
            {
                "target": f"{n.target_type}:{n.target_id}" if n.target_type else None,
                "before": n.before,
                "after": n.after,
            }
            for n in changes
        ]
    }


def record(
    *,
    actor: str,
    action: str,
    outcome: str = AuditOutcome.OK,
    actor_role: str | None = None,
    key_id: str | None = None,
    user_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    status_code: int | None = None,
    summary: dict[str, Any] | None = None,
    address: str | None = None,
    method: str | None = None,
    path: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
    commit: bool = True,
) -> AuditEvent:
    """Append one audit row. Every text is made storable and cut to its column."""
    if outcome not in AuditOutcome.ALL:
        raise ValueError(f"outcome must be one of {', '.join(AuditOutcome.ALL)}, got {outcome!r}")
    event = AuditEvent(
        created_at=now or utcnow(),
        actor=clean_text(actor, 400) or "anonymous",
        actor_role=clean_text(actor_role, 16),
        key_id=clean_text(key_id, 40),
        user_id=user_id,
        action=clean_text(action, 100) or "unknown",
        target_type=clean_text(target_type, 40),
        target_id=clean_text(target_id, 200),
        status_code=status_code,
        outcome=outcome,
        summary=bounded(summary),
        address=clean_text(address, 64),
        method=clean_text(method, 10),
        path=clean_text(path, 500),
        request_id=clean_text(request_id, 100),
    )
    if commit:
        # One row, nothing to read back: a plain INSERT, without the unit of work.
        event.id = db.session.execute(INSERT_EVENT, row_of(event)).scalar_one()
        db.session.commit()
    else:
        db.session.add(event)
    return event


INSERT_EVENT = plain_insert(AuditEvent)
_COLUMNS = [c.key for c in AuditEvent.__table__.columns if c.key != "id"]


def row_of(event: AuditEvent) -> dict[str, Any]:
    """The row's values, as the INSERT takes them."""
    return {key: getattr(event, key) for key in _COLUMNS}


def outcome_of(status_code: int) -> str:
    """ok below 400, refused for 4xx (auth, access, input, conflict, rate), failed for 5xx."""
    if status_code >= 500:
        return AuditOutcome.FAILED
    if status_code >= 400:
        return AuditOutcome.REFUSED
    return AuditOutcome.OK


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """What the audit log may be narrowed by; a text ending in ``*`` matches as a prefix."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    address: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filters that are set, as query-string values."""
        values: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            values[f.name] = isoformat(value) if isinstance(value, datetime) else str(value)
        return values


@dataclass
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None


def matches(column: Any, value: str) -> ColumnElement[bool]:
    """Equality, or a prefix match for ``value*`` (still an index range on the column)."""
    if value.endswith("*"):
        prefix = value[:-1]
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # >= prefix bounds the range for the index; LIKE checks the rest.
        return and_(column >= prefix, column.like(f"{escaped}%", escape="\\"))
    return column == value


def filter_conditions(filters: AuditFilters) -> list[ColumnElement[bool]]:
    if filters.outcome and filters.outcome not in AuditOutcome.ALL:
        raise InvalidInput(
            f"outcome must be one of {', '.join(AuditOutcome.ALL)}, got {filters.outcome!r}",
            [{"field": "outcome", "message": "ok, refused or failed"}],
        )
    conditions: list[ColumnElement[bool]] = []
    for name in ("actor", "action", "target_type", "target_id", "address"):
        value = getattr(filters, name)
        if value:
            conditions.append(matches(getattr(AuditEvent, name), value))
    if filters.outcome:
        conditions.append(AuditEvent.outcome == filters.outcome)
    if filters.since:
        conditions.append(AuditEvent.created_at >= as_utc(filters.since))
    if filters.until:
        conditions.append(AuditEvent.created_at < as_utc(filters.until))
    return conditions


def after_cursor(cursor: str) -> ColumnElement[bool]:
    """The rows after ``cursor`` in newest-first order."""
    try:
        created_at, raw_id = decode_cursor(cursor)
        row_id = int(raw_id)
        created_at = as_utc(created_at)
        if not 0 < row_id < 2**63:
            raise ValueError(row_id)
    except (BadCursor, ValueError, OverflowError):
        raise InvalidInput(
            f"cursor is not valid: {cursor[:40]!r}",
            [{"field": "cursor", "message": "not a valid cursor"}],
        ) from None
    return or_(
        AuditEvent.created_at < created_at,
        and_(AuditEvent.created_at == created_at, AuditEvent.id < row_id),
    )


def query(filters: AuditFilters, *, limit: int = 50, cursor: str | None = None) -> AuditPage:
    """Newest first, ``limit`` at a time, continuing after ``cursor``."""
    conditions = filter_conditions(filters)
    if cursor:
        conditions.append(after_cursor(cursor))
    rows = list(
        db.session.scalars(
            db.select(AuditEvent)
            .where(*conditions)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(limit + 1)
        )
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, str(rows[-1].id))
    return AuditPage(events=rows, next_cursor=next_cursor)


CSV_COLUMNS = (
    "created_at",
    "actor",
    "actor_role",
    "key_id",
    "user_id",
    "action",
    "target_type",
    "target_id",
    "status_code",
    "outcome",
    "address",
    "method",
    "path",
    "request_id",
    "summary",
)
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A value as a CSV cell that a spreadsheet shows as text, never runs."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return isoformat(value) or ""
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def export_csv(filters: AuditFilters) -> Iterator[str]:
    """The filtered rows as CSV text, header first, newest first, read in batches.

    A generator: the response streams it while it walks the table by keyset, one short
    read per batch, so an export of a million rows holds one batch in memory and never
    keeps writers waiting.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    cursor = None
    while True:
        page = query(filters, limit=EXPORT_BATCH, cursor=cursor)
        for event in page.events:
            writer.writerow([csv_cell(getattr(event, column)) for column in CSV_COLUMNS])
        # End the read before sending, however slowly the client takes it (a SQLite
        # transaction holds the write lock), and let the written batch go.
        db.session.rollback()
        db.session.expunge_all()
        yield flush()
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def prune(
    older_than: timedelta | None = None, now: datetime | None = None, *, limit: int = PRUNE_BATCH
) -> int:
    """Delete up to ``limit`` rows older than ``older_than`` (default: the retention period).

    One batch per call keeps each sweep short; the sweep runs often enough to catch up.
    """
    age = older_than if older_than is not None else timedelta(days=audit_settings.retention_days)
    cutoff = (now or utcnow()) - age
    old = list(
        db.session.scalars(
            db.select(AuditEvent.id)
            .where(AuditEvent.created_at < cutoff)
            .order_by(AuditEvent.created_at)
            .limit(limit)
        )
    )
    if not old:
        db.session.rollback()
        return 0
    db.session.execute(delete(AuditEvent).where(AuditEvent.id.in_(old)))
    db.session.commit()
    return len(old)
