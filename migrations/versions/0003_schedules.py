"""schedules and their executions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 14:11:42.165751

A schedule (cron, interval or one-time, in an IANA zone) stores its next due time in UTC,
indexed with its status for the firing query; an execution row per fired due time is
unique on (schedule_id, scheduled_for), which is what makes each due time fire once.

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("cron_expression", sa.String(length=200), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("task_type", sa.String(length=200), nullable=False),
        sa.Column("capability_required", sa.String(length=200), nullable=False),
        sa.Column(
            "input_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retry_policy", sa.String(length=20), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("retry_on_timeout", sa.Boolean(), nullable=False),
        sa.Column("expires_in_seconds", sa.Integer(), nullable=True),
        sa.Column("misfire_policy", sa.String(length=20), nullable=False),
        sa.Column("overlap_policy", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedules_client_created", ["client_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_schedules_due", ["status", "next_run_at"], unique=False)

    op.create_table(
        "schedule_executions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("schedule_id", sa.String(length=40), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_executions_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_schedule_executions_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_executions")),
        sa.UniqueConstraint("schedule_id", "scheduled_for", name="uq_schedule_executions_due"),
    )
    with op.batch_alter_table("schedule_executions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedule_executions_schedule_fired", ["schedule_id", "fired_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_schedule_executions_task_id"), ["task_id"], unique=False
        )
        batch_op.create_index(
            "ix_schedule_executions_schedule_ran",
            ["schedule_id", "fired_at"],
            unique=False,
            postgresql_where=sa.text("task_id IS NOT NULL"),
            sqlite_where=sa.text("task_id IS NOT NULL"),
        )


def downgrade():
    with op.batch_alter_table("schedule_executions", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_executions_schedule_ran")
        batch_op.drop_index(batch_op.f("ix_schedule_executions_task_id"))
        batch_op.drop_index("ix_schedule_executions_schedule_fired")

    op.drop_table("schedule_executions")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_due")
        batch_op.drop_index("ix_schedules_client_created")

    op.drop_table("schedules")
