"""a batch job's failed reads counted, so "lost" is decided on evidence that holds

``batch_jobs.misses`` / ``batch_jobs.missed_since``: how many polls of a submitted job were
answered 404 in a row (``batches.get``) and since when; a successful poll clears them.
``batch_jobs.output_misses`` / ``batch_jobs.output_missed_since``: the same for its
responses file that could not be downloaded. A job is declared lost, or its output lost, only
once the failures repeat over the bounds (``GEMINI_LEDGER_BATCH_LOST_POLLS``,
``GEMINI_LEDGER_BATCH_LOST_AFTER_S``), never on one transient answer.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("misses", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("missed_since", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("output_misses", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("output_missed_since", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.drop_column("output_missed_since")
        batch_op.drop_column("output_misses")
        batch_op.drop_column("missed_since")
        batch_op.drop_column("misses")
