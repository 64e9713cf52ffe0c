"""partial task indexes: the sweeps' deadline indexes, the template and chain links and
the idempotency keys hold only the tasks that have the value (issue 11: a task's row is
written four times, and every write added an entry to each of these indexes)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 01:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# name, columns; each holds only the rows whose last column is not NULL.
INDEXES = (
    ("ix_tasks_status_lease", ["status", "lease_expires_at"]),
    ("ix_tasks_next_retry", ["next_retry_at"]),
    ("ix_tasks_status_timeout", ["status", "timeout_at"]),
    ("ix_tasks_status_expires", ["status", "expires_at"]),
    ("ix_tasks_cancel_requested", ["status", "cancel_requested_at"]),
    ("ix_tasks_template_id", ["template_id"]),
    ("ix_tasks_chain_id", ["chain_id"]),
)
IDEMPOTENCY = ("uq_tasks_client_idempotency", ["client_id", "idempotency_key"])


def not_null(column):
    return sa.text(f"{column} IS NOT NULL")


def upgrade():
    # The unique constraint becomes a partial unique index: the same rule (NULL keys never
    # clashed), without an entry for every keyless task. On SQLite, dropping a constraint
    # rebuilds the table, which batch mode does.
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_constraint(IDEMPOTENCY[0], type_="unique")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for name, columns in INDEXES:
            batch_op.drop_index(name)
            where = not_null(columns[-1])
            batch_op.create_index(
                name, columns, unique=False, postgresql_where=where, sqlite_where=where
            )
        name, columns = IDEMPOTENCY
        where = not_null(columns[-1])
        batch_op.create_index(
            name, columns, unique=True, postgresql_where=where, sqlite_where=where
        )


def downgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(IDEMPOTENCY[0])
        for name, columns in INDEXES:
            batch_op.drop_index(name)
            batch_op.create_index(name, columns, unique=False)
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_unique_constraint(IDEMPOTENCY[0], IDEMPOTENCY[1])
