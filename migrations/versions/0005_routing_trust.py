"""routing and trust: assignments, trust records, per-capability routing settings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 17:45:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "trust_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("trust_delta", sa.Float(), nullable=False),
        sa.Column("trust_score_before", sa.Float(), nullable=False),
        sa.Column("trust_score_after", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_trust_records_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_records")),
    )
    with op.batch_alter_table("trust_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trust_records_agent_created", ["agent_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_trust_records_task", ["task_id"], unique=False)

    op.create_table(
        "capability_routing",
        sa.Column("capability", sa.String(length=200), nullable=False),
        sa.Column("default_strategy", sa.String(length=40), nullable=True),
        sa.Column("round_robin_after", sa.String(length=40), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("capability", name=op.f("pk_capability_routing")),
    )

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True)))
        batch_op.add_column(
            sa.Column("poison", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index("ix_tasks_status_assigned", ["status", "assigned_at"], unique=False)


def downgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_assigned")
        batch_op.drop_column("poison")
        batch_op.drop_column("assigned_at")

    op.drop_table("capability_routing")
    with op.batch_alter_table("trust_records", schema=None) as batch_op:
        batch_op.drop_index("ix_trust_records_task")
        batch_op.drop_index("ix_trust_records_agent_created")
    op.drop_table("trust_records")
