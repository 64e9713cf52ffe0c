"""console indexes: task lists by agent, capability and priority and in queue order, the
dead-letter view, schedules' run counts, the dashboard's day of work, deliveries per
webhook (measured with bench/console.py at 1M tasks)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 03:15:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FAILED = sa.text("status = 'FAILED'")
SCHEDULE_RUN = sa.text("created_by LIKE 'schedule:%'")


def upgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        # Newest first for one agent (agent filter, agent page), one capability or one type.
        batch_op.create_index(
            "ix_tasks_agent_created", ["assigned_agent_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_tasks_capability_created",
            ["capability_required", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_tasks_type_created", ["task_type", "created_at", "id"], unique=False
        )
        # The tasks list's other keyset orders (highest priority first, which also serves
        # the priority filter, and claim order), declared with the sort in models/task.py.
        batch_op.create_index(
            "ix_tasks_priority_created", ["priority", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_tasks_queue", ["queue_key", "id"], unique=False)
        # A schedule's run counts by status, over only the tasks schedules made.
        batch_op.create_index(
            "ix_tasks_schedule_runs",
            ["created_by", "status"],
            unique=False,
            postgresql_where=SCHEDULE_RUN,
            sqlite_where=SCHEDULE_RUN,
        )
        # The dead-letter view: FAILED tasks newest first, with the columns its filters
        # test, so its page and its "N matching" count read the index alone.
        batch_op.create_index(
            "ix_tasks_failed",
            ["created_at", "id"],
            unique=False,
            postgresql_include=[
                "client_id",
                "capability_required",
                "assigned_agent_id",
                "priority",
            ],
            postgresql_where=FAILED,
            sqlite_where=FAILED,
        )
    with op.batch_alter_table("task_events", schema=None) as batch_op:
        # The dashboard's ends per hour / per five minutes, from the index alone.
        batch_op.create_index("ix_task_events_status_at", ["to_status", "at"], unique=False)
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        # Deliveries by status per webhook (the webhooks list), from the index alone.
        batch_op.create_index(
            "ix_webhook_deliveries_webhook_status", ["webhook_id", "status"], unique=False
        )


def downgrade():
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_webhook_status")
    with op.batch_alter_table("task_events", schema=None) as batch_op:
        batch_op.drop_index("ix_task_events_status_at")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_failed")
        batch_op.drop_index("ix_tasks_schedule_runs")
        batch_op.drop_index("ix_tasks_queue")
        batch_op.drop_index("ix_tasks_priority_created")
        batch_op.drop_index("ix_tasks_type_created")
        batch_op.drop_index("ix_tasks_capability_created")
        batch_op.drop_index("ix_tasks_agent_created")
