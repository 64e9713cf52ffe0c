"""workflows: task dependencies, templates and chains

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 14:51:08.347950

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "task_chains",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "step_results",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancellation_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_chains")),
    )
    with op.batch_alter_table("task_chains", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_chains_client_created", ["client_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_task_chains_status_created", ["status", "created_at", "id"], unique=False
        )

    op.create_table(
        "task_templates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("task_type", sa.String(length=200), nullable=False),
        sa.Column("capability_required", sa.String(length=200), nullable=False),
        sa.Column(
            "default_input_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("default_priority", sa.Integer(), nullable=False),
        sa.Column("default_max_retries", sa.Integer(), nullable=False),
        sa.Column("default_retry_policy", sa.String(length=16), nullable=False),
        sa.Column("default_timeout_seconds", sa.Integer(), nullable=False),
        # JSON, not JSONB: the order of a schema's properties must survive.
        sa.Column("input_schema", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("times_used", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_templates")),
        sa.UniqueConstraint("client_id", "name", name="uq_task_templates_client_name"),
    )
    with op.batch_alter_table("task_templates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_templates_client_created", ["client_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "task_dependencies",
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("depends_on_id", sa.String(length=40), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_depends_on_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "depends_on_id", name=op.f("pk_task_dependencies")),
    )
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_dependencies_depends_on", ["depends_on_id", "task_id"], unique=False
        )

    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template_id", sa.String(length=40), nullable=True))

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pending_dependencies", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column(
                "on_dependency_failure",
                sa.String(length=8),
                nullable=False,
                server_default="cancel",
            )
        )
        batch_op.add_column(sa.Column("template_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("template_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("chain_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("chain_step", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_tasks_chain_id"), ["chain_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_template_id"), ["template_id"], unique=False)


def downgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_template_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_chain_id"))
        batch_op.drop_column("chain_step")
        batch_op.drop_column("chain_id")
        batch_op.drop_column("template_version")
        batch_op.drop_column("template_id")
        batch_op.drop_column("on_dependency_failure")
        batch_op.drop_column("pending_dependencies")

    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_column("template_id")

    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.drop_index("ix_task_dependencies_depends_on")

    op.drop_table("task_dependencies")
    with op.batch_alter_table("task_templates", schema=None) as batch_op:
        batch_op.drop_index("ix_task_templates_client_created")

    op.drop_table("task_templates")
    with op.batch_alter_table("task_chains", schema=None) as batch_op:
        batch_op.drop_index("ix_task_chains_status_created")
        batch_op.drop_index("ix_task_chains_client_created")

    op.drop_table("task_chains")
