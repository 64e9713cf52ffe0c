"""key rotation with a grace period, operator session versions

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 23:50:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_prefix", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_keys_previous_prefix"), ["previous_prefix"]
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_version")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_api_keys_previous_prefix"), type_="unique")
        batch_op.drop_column("created_by")
        batch_op.drop_column("rotated_at")
        batch_op.drop_column("previous_expires_at")
        batch_op.drop_column("previous_key_hash")
        batch_op.drop_column("previous_prefix")
