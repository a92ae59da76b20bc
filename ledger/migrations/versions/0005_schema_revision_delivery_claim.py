"""a job's schema revision, and the delivery claim in its own columns

``jobs.schema_revision``: the pipeline's revision the job was last reserved under, so a result
produced for an earlier output schema is told from a row's own fault.

``jobs.delivery_claim`` / ``jobs.claimed_at``: the token and time of a done row's delivery
claim, which until now lived in ``reservation`` (and ``updated_at``). Claims held when the
ledger is upgraded are moved over, so a tick that dies across the upgrade still has its claim
taken over once it is stale.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schema_revision", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("delivery_claim", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.Float(), nullable=True))
    # A partial index, as for reservation: only rows being delivered are in it.
    op.create_index(
        "ix_jobs_delivery_claim",
        "jobs",
        ["delivery_claim"],
        unique=False,
        sqlite_where=sa.text("delivery_claim IS NOT NULL"),
        postgresql_where=sa.text("delivery_claim IS NOT NULL"),
    )
    op.execute(
        "UPDATE jobs SET delivery_claim = reservation, claimed_at = updated_at,"
        " reservation = NULL WHERE status = 'done' AND reservation IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE jobs SET reservation = delivery_claim WHERE status = 'done'"
        " AND delivery_claim IS NOT NULL"
    )
    op.drop_index(
        "ix_jobs_delivery_claim",
        table_name="jobs",
        sqlite_where=sa.text("delivery_claim IS NOT NULL"),
        postgresql_where=sa.text("delivery_claim IS NOT NULL"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("delivery_claim")
        batch_op.drop_column("schema_revision")
