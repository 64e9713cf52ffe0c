"""The Alembic migrations: every revision goes up and down, and the models match the head.

They run on the suite's kind of database (SQLite, or PostgreSQL when TEST_DATABASE_URL is
set) but in a database of their own, so the schema conftest built for the other tests is left
alone: a temporary SQLite file, or a PostgreSQL schema made for each test that the
connections' search_path points at (it needs no more rights than the suite's own reset of
the public schema). The migrations are driven as `flask db upgrade` drives them: through
migrations/env.py, with the app's Flask-Migrate options and SQLite connection settings.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from flask import Flask
from flask_migrate import Migrate

from app.extensions import db
from app.models.base import JSONType, UTCDateTime, configure_sqlite
from tests.conftest import IS_POSTGRES

SCHEMA = "ains_migrations_test"  # PostgreSQL only


@dataclass
class MigrationsDb:
    """A scratch database with the app's migrations pointed at it."""

    app: Flask  # a bare Flask app: db and Flask-Migrate only, as env.py needs
    config: Config
    script: ScriptDirectory

    def upgrade(self, revision: str) -> None:
        with self.app.app_context():
            command.upgrade(self.config, revision)

    def downgrade(self, revision: str) -> None:
        with self.app.app_context():
            command.downgrade(self.config, revision)

    def connect(self) -> Any:
        with self.app.app_context():
            return db.engine.connect()

    def begin(self) -> Any:
        with self.app.app_context():
            return db.engine.begin()

    def current_revision(self) -> str | None:
        with self.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def schema(self) -> dict[str, dict[str, list[str]]]:
        """Each table's columns, indexes, unique constraints and foreign keys, by name."""
        with self.connect() as conn:
            inspector = sa.inspect(conn)
            return {
                table: {
                    "columns": sorted(c["name"] for c in inspector.get_columns(table)),
                    "indexes": sorted(str(i["name"]) for i in inspector.get_indexes(table)),
                    "uniques": sorted(
                        str(u["name"]) for u in inspector.get_unique_constraints(table)
                    ),
                    "foreign_keys": sorted(
                        str(f["name"]) for f in inspector.get_foreign_keys(table)
                    ),
                }
                for table in inspector.get_table_names()
                if table != "alembic_version"
            }

    def leftovers(self) -> list[str]:
        """Application tables and (PostgreSQL) sequences still in the database."""
        with self.connect() as conn:
            inspector = sa.inspect(conn)
            names = [t for t in inspector.get_table_names() if t != "alembic_version"]
            if conn.dialect.name == "postgresql":
                names += [f"sequence {s}" for s in inspector.get_sequence_names()]
            return names


def history(script: ScriptDirectory) -> list[Script]:
    """The revisions from base to head; the history must be one straight line."""
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"
    revisions = list(reversed(list(script.walk_revisions())))
    assert revisions and revisions[0].down_revision is None
    for before, after in pairwise(revisions):
        assert after.down_revision == before.revision, f"{after.revision} branches"
    return revisions


@pytest.fixture
def migrations_db(app: Flask) -> Iterator[MigrationsDb]:
    source = app.extensions["migrate"]
    scratch = Flask(__name__)
    folder = tempfile.TemporaryDirectory(prefix="ains-migrations-")
    if IS_POSTGRES:
        scratch.config["SQLALCHEMY_DATABASE_URI"] = app.config["SQLALCHEMY_DATABASE_URI"]
        scratch.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "connect_args": {"options": f"-csearch_path={SCHEMA}"}
        }
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    else:
        scratch.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(folder.name) / 'm.db'}"
    db.init_app(scratch)
    # The app's own options (render_as_batch, compare_type) and migrations directory.
    migrate = Migrate(scratch, db, directory=source.directory, **source.configure_args)
    with scratch.app_context():
        configure_sqlite(db.engine)  # as create_app() does: foreign keys on, WAL, ...
        config = migrate.get_config()
    yield MigrationsDb(scratch, config, ScriptDirectory.from_config(config))
    with scratch.app_context():
        for engine in db.engines.values():
            engine.dispose()
    if IS_POSTGRES:
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    folder.cleanup()


def test_every_revision_upgrades_and_downgrades_one_step_at_a_time(
    migrations_db: MigrationsDb,
) -> None:
    revisions = history(migrations_db.script)
    assert migrations_db.current_revision() is None

    schemas: dict[str | None, dict] = {None: migrations_db.schema()}
    assert schemas[None] == {}
    for revision in revisions:
        migrations_db.upgrade(revision.revision)
        assert migrations_db.current_revision() == revision.revision
        schemas[revision.revision] = migrations_db.schema()
        assert schemas[revision.revision] != schemas[revision.down_revision], (
            f"{revision.revision} changed nothing"
        )

    for revision in reversed(revisions):
        migrations_db.downgrade(revision.down_revision or "base")
        assert migrations_db.current_revision() == revision.down_revision
        # A downgrade undoes exactly its upgrade: no column, index or constraint left over.
        assert migrations_db.schema() == schemas[revision.down_revision], (
            f"downgrading {revision.revision} did not restore {revision.down_revision}"
        )
    assert migrations_db.leftovers() == []

    migrations_db.upgrade("head")
    assert migrations_db.current_revision() == revisions[-1].revision
    assert migrations_db.schema() == schemas[revisions[-1].revision]


def ignore_database_only_defaults(
    context: Any,
    inspected_column: Any,
    metadata_column: sa.Column,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Compare server defaults the models declare; skip those only the database has.

    Migrations give a NOT NULL column added to a filled table a server default so existing
    rows get a value (tasks.poison, tasks.retry_on_timeout, ...); the models set those values
    themselves, so a default in the database alone is no drift. None: Alembic compares.
    """
    if metadata_column.server_default is None:
        return False
    return None


def test_the_models_match_the_head_revision(migrations_db: MigrationsDb) -> None:
    """No missing migration: autogenerate against the head schema finds nothing to do."""
    migrations_db.upgrade("head")
    with migrations_db.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": ignore_database_only_defaults,
            },
        )
        differences = compare_metadata(context, db.metadata)
    assert differences == [], "models and migrations differ (write a migration):\n" + "\n".join(
        map(repr, differences)
    )


def predicate_words(sql: str) -> str:
    """A partial index's WHERE as words, the same however the database prints it back
    (PostgreSQL adds parentheses and casts, and writes LIKE as ~~)."""
    sql = re.sub(r"::\w+( \w+)*", "", sql.replace("~~", " LIKE "))
    return " ".join(re.findall(r"[\w%:']+", sql.lower()))


def head_predicates(migrations_db: MigrationsDb) -> dict[str, str]:
    """Each partial index of the migrated head, by name: its WHERE."""
    with migrations_db.connect() as conn:
        if IS_POSTGRES:
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :schema AND i.indpred IS NOT NULL"
                ),
                {"schema": SCHEMA},
            )
            return {name: predicate_words(where) for name, where in rows}
        rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        return {
            name: predicate_words(sql.split(" WHERE ", 1)[1])
            for name, sql in rows
            if sql and " WHERE " in sql
        }


def test_the_head_partial_indexes_have_the_models_conditions(
    migrations_db: MigrationsDb,
) -> None:
    """Autogenerate compares an index's columns, not its WHERE: this compares those."""
    migrations_db.upgrade("head")
    dialect = "postgresql" if IS_POSTGRES else "sqlite"
    wheres = {
        str(index.name): index.dialect_options[dialect]["where"]
        for table in db.metadata.tables.values()
        for index in table.indexes
    }
    expected = {name: predicate_words(str(w)) for name, w in wheres.items() if w is not None}
    assert "uq_tasks_client_idempotency" in expected and "ix_tasks_status_lease" in expected
    assert head_predicates(migrations_db) == expected


def tasks_table() -> sa.TableClause:
    """The tasks columns of the first revision, typed as the app types them."""
    return sa.table(
        "tasks",
        *(sa.column(name, sa.String) for name in ("id", "client_id", "task_type", "status")),
        *(sa.column(name, sa.String) for name in ("capability_required", "retry_policy")),
        *(sa.column(name, sa.Integer) for name in ("priority", "max_retries", "retry_count")),
        *(sa.column(name, sa.Integer) for name in ("timeout_seconds", "attempt", "queue_key")),
        *(sa.column(name, UTCDateTime) for name in ("enqueued_at", "created_at", "updated_at")),
        sa.column("lease_expires_at", UTCDateTime),
        sa.column("input_data", JSONType),
    )


def test_task_history_survives_migrations_that_rebuild_the_tasks_table(
    migrations_db: MigrationsDb,
) -> None:
    """Data written at the first revision outlives every later revision, up and back down.

    On SQLite, batch mode rebuilds the tasks table (copy, drop, rename) in several revisions;
    with foreign keys on, dropping the old table must not cascade to the rows that point at
    it (events, attempts). 0002 also copies the lease of running tasks to their timeout.
    """
    revisions = history(migrations_db.script)
    first = revisions[0].revision
    migrations_db.upgrade(first)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    lease = now + timedelta(minutes=5)
    with migrations_db.begin() as conn:
        conn.execute(
            sa.insert(tasks_table()).values(
                id="task-1",
                client_id="acme",
                task_type="summarise",
                status="ACTIVE",
                capability_required="text",
                retry_policy="exponential",
                priority=5,
                max_retries=3,
                retry_count=0,
                timeout_seconds=300,
                attempt=1,
                queue_key=1,
                enqueued_at=now,
                created_at=now,
                updated_at=now,
                lease_expires_at=lease,
                input_data={"text": "hello"},
            )
        )
        events = sa.table(
            "task_events",
            sa.column("task_id", sa.String),
            sa.column("at", UTCDateTime),
            sa.column("to_status", sa.String),
            sa.column("actor", sa.String),
        )
        conn.execute(
            sa.insert(events).values(task_id="task-1", at=now, to_status="ACTIVE", actor="t")
        )

    migrations_db.upgrade("head")
    tasks = sa.table(
        "tasks",
        *(sa.column(name) for name in ("id", "retry_on_timeout", "poison")),
        *(sa.column(name) for name in ("pending_dependencies", "on_dependency_failure")),
        sa.column("timeout_at", UTCDateTime),
        sa.column("input_data", JSONType),
    )
    with migrations_db.connect() as conn:
        row = conn.execute(sa.select(tasks)).one()
        assert row.id == "task-1" and row.input_data == {"text": "hello"}
        assert row.timeout_at == lease  # 0002: the lease was the running task's deadline
        assert not row.retry_on_timeout and not row.poison
        assert (row.pending_dependencies, row.on_dependency_failure) == (0, "cancel")
        assert conn.execute(sa.text("SELECT task_id FROM task_events")).scalars().all() == [
            "task-1"
        ]

    migrations_db.downgrade(first)
    with migrations_db.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM tasks")).scalars().all() == ["task-1"]
        assert conn.execute(sa.text("SELECT task_id FROM task_events")).scalars().all() == [
            "task-1"
        ]
        if conn.dialect.name == "sqlite":
            # Whatever the migrations did with them, foreign keys are enforced again after.
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
