"""the files a batch job put in the Files API, kept until they are deleted

``batch_files``: each batch input file uploaded and each responses file reconciled, with its
reservation, so it is deleted once its job is terminal (the Files API holds 20 GB per project
for 48 h and deletes nothing for you). A failed delete is counted in ``delete_failures`` and
retried on a later tick; ``deleted_at`` ends the row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_files",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("reservation", sa.String(length=128), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.Column("delete_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index(
        "ix_batch_files_pipeline_deleted",
        "batch_files",
        ["pipeline", "deleted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_batch_files_pipeline_deleted", table_name="batch_files")
    op.drop_table("batch_files")
