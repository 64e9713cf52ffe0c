"""task lifecycle: attempts, timeouts, expiry, cancel requests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:57:08.777233

Each claim gets an attempt row; tasks gain an execution deadline separate from the
lease, an optional expiry, a cancel-requested mark and retry_on_timeout.

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "task_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ended_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_attempts_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_attempts")),
        sa.UniqueConstraint("task_id", "number", name="uq_task_attempts_task_number"),
    )
    with op.batch_alter_table("task_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_attempts_agent_ended", ["agent_id", "ended_at"], unique=False
        )

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retry_on_timeout", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("timeout_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_tasks_cancel_requested", ["status", "cancel_requested_at"], unique=False
        )
        batch_op.create_index("ix_tasks_status_expires", ["status", "expires_at"], unique=False)
        batch_op.create_index("ix_tasks_status_timeout", ["status", "timeout_at"], unique=False)

    # Until now the lease was the execution deadline: running tasks keep it as their timeout.
    op.execute("UPDATE tasks SET timeout_at = lease_expires_at WHERE status = 'ACTIVE'")


def downgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_timeout")
        batch_op.drop_index("ix_tasks_status_expires")
        batch_op.drop_index("ix_tasks_cancel_requested")
        batch_op.drop_column("cancel_requested_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("timeout_at")
        batch_op.drop_column("retry_on_timeout")

    with op.batch_alter_table("task_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_task_attempts_agent_ended")

    op.drop_table("task_attempts")
