"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "batch_jobs",
        sa.Column("reservation", sa.String(length=128), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("leased_at", sa.Float(), nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("reconciled_at", sa.Float(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("reservation"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_batch_jobs_pipeline_state", ["pipeline", "state"], unique=False)

    op.create_table(
        "batch_members",
        sa.Column("reservation", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("reservation", "key"),
    )
    with op.batch_alter_table("batch_members", schema=None) as batch_op:
        batch_op.create_index("ix_batch_members_key", ["key"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("handle", sa.String(length=256), nullable=True),
        sa.Column("reservation", sa.String(length=128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempts_base", sa.Integer(), nullable=False),
        sa.Column("unknown_failures", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("candidates_tokens", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_class", sa.String(length=96), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("first_failure_at", sa.Float(), nullable=True),
        sa.Column("last_failure_at", sa.Float(), nullable=True),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("possible_duplicates", sa.Integer(), nullable=False),
        sa.Column("replayed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("reserved_at", sa.Float(), nullable=True),
        sa.Column("submitted_at", sa.Float(), nullable=True),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.Column("consumed_at", sa.Float(), nullable=True),
        sa.Column("parked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_claim", ["pipeline", "status", "due_at"], unique=False)
        batch_op.create_index(
            "ix_jobs_handle",
            ["handle", "status"],
            unique=False,
            sqlite_where=sa.text("handle IS NOT NULL"),
            postgresql_where=sa.text("handle IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_jobs_parked",
            ["error_class", "first_failure_at"],
            unique=False,
            sqlite_where=sa.text("status = 'parked'"),
            postgresql_where=sa.text("status = 'parked'"),
        )
        batch_op.create_index(
            "ix_jobs_parked_fingerprint",
            ["fingerprint"],
            unique=False,
            sqlite_where=sa.text("status = 'parked'"),
            postgresql_where=sa.text("status = 'parked'"),
        )
        batch_op.create_index(
            "ix_jobs_reservation",
            ["reservation"],
            unique=False,
            sqlite_where=sa.text("reservation IS NOT NULL"),
            postgresql_where=sa.text("reservation IS NOT NULL"),
        )

    op.create_table(
        "parked_snapshots",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("error_class", sa.String(length=96), nullable=False),
        sa.Column("parked", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("day", "error_class"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.String(length=256), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("processed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("webhook_id"),
    )


def downgrade() -> None:

    op.drop_table("webhook_deliveries")
    op.drop_table("parked_snapshots")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_reservation",
            sqlite_where=sa.text("reservation IS NOT NULL"),
            postgresql_where=sa.text("reservation IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_jobs_parked_fingerprint",
            sqlite_where=sa.text("status = 'parked'"),
            postgresql_where=sa.text("status = 'parked'"),
        )
        batch_op.drop_index(
            "ix_jobs_parked",
            sqlite_where=sa.text("status = 'parked'"),
            postgresql_where=sa.text("status = 'parked'"),
        )
        batch_op.drop_index(
            "ix_jobs_handle",
            sqlite_where=sa.text("handle IS NOT NULL"),
            postgresql_where=sa.text("handle IS NOT NULL"),
        )
        batch_op.drop_index("ix_jobs_claim")

    op.drop_table("jobs")
    with op.batch_alter_table("batch_members", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_members_key")

    op.drop_table("batch_members")
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_jobs_pipeline_state")

    op.drop_table("batch_jobs")
