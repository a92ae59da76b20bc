"""caches: context caches of pipelines' shared prefixes as ledger rows

``caches``: one row per pipeline and prefix digest (sha256 of the model, system instruction
and parts): its state (reserving, active, expired, deleted), the reservation token, the
cache's name, expiry and token count once bound, how many creates made it, and its deletion.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "caches",
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("prefix_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("reserved_at", sa.Float(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("bound_at", sa.Float(), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("creates", sa.Integer(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.Column("delete_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pipeline", "prefix_hash"),
    )
    op.create_index("ix_caches_pipeline_state", "caches", ["pipeline", "state"])


def downgrade() -> None:
    op.drop_index("ix_caches_pipeline_state", table_name="caches")
    op.drop_table("caches")
