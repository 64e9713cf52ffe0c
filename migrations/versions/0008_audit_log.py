"""audit log: one append-only row per state-changing request or action

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:00:00.000000

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=400), nullable=False),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=40), nullable=True),
        sa.Column("target_id", sa.String(length=200), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("summary", JSON, nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=10), nullable=True),
        sa.Column("path", sa.String(length=500), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_audit_events_actor", ["actor", "created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_audit_events_action", ["action", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_audit_events_target",
            ["target_type", "target_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_audit_events_outcome", ["outcome", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_audit_events_address", ["address", "created_at", "id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_address")
        batch_op.drop_index("ix_audit_events_outcome")
        batch_op.drop_index("ix_audit_events_target")
        batch_op.drop_index("ix_audit_events_action")
        batch_op.drop_index("ix_audit_events_actor")
        batch_op.drop_index("ix_audit_events_created")

    op.drop_table("audit_events")
