"""index jobs by handle alone, so a status change leaves that index untouched

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = {
    "sqlite_where": sa.text("handle IS NOT NULL"),
    "postgresql_where": sa.text("handle IS NOT NULL"),
}


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_handle", **_WHERE)
        batch_op.create_index("ix_jobs_handle", ["handle"], unique=False, **_WHERE)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_handle", **_WHERE)
        batch_op.create_index("ix_jobs_handle", ["handle", "status"], unique=False, **_WHERE)
