"""a batch job's deadline cancel recorded, so whoever settles it knows the cancel was ours

``batch_jobs.deadline_cancel_at``: when a tick asked the API to cancel the submitted job to
meet its pipeline's deadline (``flows.channels._deadline``), written before
``batches.cancel`` is called. A job that then ends CANCELLED fails its unanswered rows as
``retryable:deadline`` (sent directly, never parked for it) whoever settles it: the tick,
the ``reconcile`` flow a webhook starts, or the next tick after a crash; also when the
deadline was only a tick's parameter, which the reconcile flow never sees.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_cancel_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.drop_column("deadline_cancel_at")
