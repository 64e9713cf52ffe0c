"""Column types shared by the models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Insert,
    Integer,
    TypeDecorator,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from app.lib.clock import as_utc

JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def plain_insert(model: Any) -> Insert:
    """An INSERT of ``model``'s rows that bypasses the unit of work (for rows nothing reads
    back in their transaction), RETURNING id whether or not it is read: given a list of
    rows, SQLAlchemy then sends multi-row INSERTs (insertmanyvalues), where psycopg's
    executemany would run one INSERT per row on the server."""
    table = model.__table__
    return insert(table).returning(table.c.id)


def not_null_index(name: str, *columns: str, unique: bool = False) -> Index:
    """An index of only the rows whose last column is set, the same partial index on
    PostgreSQL and SQLite (tests/test_migrations.py checks the migrations wrote it so)."""
    where = text(f"{columns[-1]} IS NOT NULL")
    return Index(name, *columns, unique=unique, postgresql_where=where, sqlite_where=where)


class UTCDateTime(TypeDecorator):
    """Stores aware UTC; returns aware UTC even from SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; the domain uses aware UTC")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return as_utc(value)


def configure_sqlite(engine: Any) -> None:
    """SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so writers queue up front.

    A deferred transaction that reads and then writes can fail with 'database is locked'
    when another writer got in between; taking the write lock at BEGIN makes SQLite the
    single writer the claim path relies on.
    """
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
